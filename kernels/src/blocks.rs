//! The GGUF block layouts, decoded one 32-value sub-block at a time: the definition the scalar
//! reference, dequantization and the tests share (the SIMD kernels read the same bytes their
//! own way and are tested against this).
//!
//! Every format here reads as 32-value sub-blocks of integer quants `q` with a scale per
//! 16-value half and one offset: `value = scale[half] · q + offset`.

use half::f16;

use super::{Format, SUB_BLOCK};

/// One 32-value sub-block, decoded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SubBlock {
    pub q: [i32; SUB_BLOCK],
    /// The scale of values 0..16 and of values 16..32.
    pub scale: [f32; 2],
    pub offset: f32,
}

pub(crate) fn f16_at(block: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([block[at], block[at + 1]]).to_f32()
}

/// Q4_K's eight 6-bit (scale, minimum) pairs, packed in 12 bytes (ggml's `get_scale_min_k4`):
/// the scales, then the minimums, as 16 bytes. Branch-free, on three little-endian words.
#[inline]
pub(crate) fn q4_k_scales(packed: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const LOW2: u32 = 0x0303_0303;
    let word = |i: usize| {
        u32::from_le_bytes([
            packed[4 * i],
            packed[4 * i + 1],
            packed[4 * i + 2],
            packed[4 * i + 3],
        ])
    };
    let (w0, w1, w2) = (word(0), word(1), word(2));
    let scales = (u64::from((w2 & LOW4) | (((w0 >> 6) & LOW2) << 4)) << 32) | u64::from(w0 & LOW6);
    let mins =
        (u64::from(((w2 >> 4) & LOW4) | (((w1 >> 6) & LOW2) << 4)) << 32) | u64::from(w1 & LOW6);
    (scales.to_le_bytes(), mins.to_le_bytes())
}

/// Sub-block `k` of one block of `format` (`block` is exactly `format.block_bytes()` long).
pub fn sub_block(format: Format, block: &[u8], k: usize) -> SubBlock {
    let mut q = [0i32; SUB_BLOCK];
    match format {
        Format::Q4_1 => {
            for (j, &byte) in block[4..20].iter().enumerate() {
                q[j] = i32::from(byte & 15);
                q[j + 16] = i32::from(byte >> 4);
            }
            let d = f16_at(block, 0);
            SubBlock {
                q,
                scale: [d; 2],
                offset: f16_at(block, 2),
            }
        }
        Format::Q8_0 => {
            for (v, &byte) in q.iter_mut().zip(&block[2..34]) {
                *v = i32::from(byte as i8);
            }
            let d = f16_at(block, 0);
            SubBlock {
                q,
                scale: [d; 2],
                offset: 0.0,
            }
        }
        Format::Q5_0 => {
            let d = f16_at(block, 0);
            let high = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
            for (j, &byte) in block[6..22].iter().enumerate() {
                q[j] = i32::from(byte & 15) | (((high >> j) & 1) << 4) as i32;
                q[j + 16] = i32::from(byte >> 4) | (((high >> (j + 16)) & 1) << 4) as i32;
            }
            SubBlock {
                q,
                scale: [d; 2],
                offset: -16.0 * d,
            }
        }
        Format::Q4_K => {
            let (d, dmin) = (f16_at(block, 0), f16_at(block, 2));
            let packed: [u8; 12] = std::array::from_fn(|i| block[4 + i]);
            let (scales, mins) = q4_k_scales(&packed);
            // Group g of 64 values: 32 bytes, low nibbles first, then high nibbles.
            let bytes = &block[16 + 32 * (k / 2)..16 + 32 * (k / 2) + 32];
            for (v, &byte) in q.iter_mut().zip(bytes) {
                *v = i32::from(if k.is_multiple_of(2) {
                    byte & 15
                } else {
                    byte >> 4
                });
            }
            SubBlock {
                q,
                scale: [d * f32::from(scales[k]); 2],
                offset: -dmin * f32::from(mins[k]),
            }
        }
        Format::Q6_K => {
            // ql[128], qh[64], 16 signed scales (one per 16 values, in order), d.
            let (half, m) = (k / 4, k % 4);
            let low = &block[64 * half + 32 * (m % 2)..];
            let high = &block[128 + 32 * half..];
            for (l, v) in q.iter_mut().enumerate() {
                let nibble = if m < 2 { low[l] & 15 } else { low[l] >> 4 };
                let top = (high[l] >> (2 * m)) & 3;
                *v = i32::from(nibble | (top << 4)) - 32;
            }
            let d = f16_at(block, 208);
            SubBlock {
                q,
                scale: [
                    d * f32::from(block[192 + 2 * k] as i8),
                    d * f32::from(block[192 + 2 * k + 1] as i8),
                ],
                offset: 0.0,
            }
        }
    }
}
