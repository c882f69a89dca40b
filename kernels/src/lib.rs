//! The mind's kernels: quantized matrix × vector products over GGUF's own block layouts.
//!
//! Generation on a CPU is bound by how fast the weights stream from memory, so the kernels read
//! the weights exactly as the GGUF stores them (no repacking, no f32 copy) and do the
//! arithmetic on 8-bit integers:
//!
//! - **Weights** stay in ggml's blocks ([`Format`]): Q4_1, Q8_0 and Q5_0 (32 values a block),
//!   and the K-quants Q4_K and Q6_K (256 values a block, with a scale per 32 or 16 values).
//!   [`blocks`] decodes each layout one 32-value sub-block at a time: the definition the
//!   scalar reference and the tests share.
//! - **Activations** are quantized once per product to 8 bits per value, twice over
//!   ([`Q8Vector`]): in blocks of 32 for the 32-value formats (ggml's Q8_1: a scale per block
//!   and the block's scaled sum, which folds every format's minimum or offset into one multiply
//!   per sub-block), and in super-blocks of 256 for the K-quants (ggml's Q8_K: one scale per
//!   256 values, so a K-quant block's sub-block sums add up as integers, weighted by the
//!   sub-blocks' integer scales, before one conversion to float per block; with the sums of
//!   each 16 and 32 values for the minimums and offsets).
//! - **The rest of a Llama or Qwen2 pass** ([`ops`]): RMS norm, the rotary embeddings, attention
//!   over a KV cache, the gated SiLU; plain Rust the compiler vectorizes, here so that it is
//!   compiled optimised even in test builds.
//! - **Levels**, picked at run time from what the CPU has ([`Level::detect`]): AVX-512 VNNI and
//!   AVX-VNNI (one `vpdpbusd` per sub-block), AVX2 (`vpmaddubsw` + `vpmaddwd`), and portable
//!   scalar code that every other level is tested against.
//!
//! # Safety
//!
//! This crate is the project's one home of SIMD intrinsics, which Rust calls `unsafe`: calling
//! a `#[target_feature]` function, and unaligned loads through raw pointers. The invariants:
//!
//! - a SIMD function is only called at a [`Level`] that [`Level::detect`] found on this CPU
//!   (`Level::available` is checked by every public entry point);
//! - every public entry point checks all slice lengths against the shapes before any pointer
//!   is formed, and the SIMD loops read only inside those checked lengths.
#![expect(
    unsafe_code,
    reason = "SIMD intrinsics behind runtime feature detection; see the crate's Safety section"
)]

pub mod blocks;
pub mod ops;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::sync::OnceLock;

/// Values per sub-block, and per block of an activation vector.
pub const SUB_BLOCK: usize = 32;
/// Values per block of the K-quants.
pub const SUPER_BLOCK: usize = 256;

/// How a matrix's rows are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[expect(non_camel_case_types, reason = "ggml's own names for its block types")]
pub enum Format {
    /// ggml's Q4_1: f16 `d`, f16 `m`, 16 bytes of nibbles (value j in the low nibble of byte
    /// j, value j + 16 in its high nibble): `w = d·q + m`.
    Q4_1,
    /// ggml's Q8_0: f16 `d`, 32 signed bytes: `w = d·q`.
    Q8_0,
    /// ggml's Q5_0: f16 `d`, 32 fifth bits (u32), 16 bytes of nibbles laid out as Q4_1's:
    /// `w = d·(q − 16)`.
    Q5_0,
    /// ggml's Q4_K: f16 `d`, f16 `dmin`, eight 6-bit scales and minimums in 12 bytes, 128 bytes
    /// of nibbles: `w = d·scale·q − dmin·min` per 32 values.
    Q4_K,
    /// ggml's Q6_K: 128 bytes of low nibbles, 64 of high 2-bit pairs, 16 signed scales, f16
    /// `d`: `w = d·scale·(q − 32)` per 16 values.
    Q6_K,
}

impl Format {
    /// Values in one block.
    pub const fn block_values(self) -> usize {
        match self {
            Format::Q4_1 | Format::Q8_0 | Format::Q5_0 => SUB_BLOCK,
            Format::Q4_K | Format::Q6_K => SUPER_BLOCK,
        }
    }

    /// Bytes of one block.
    pub const fn block_bytes(self) -> usize {
        match self {
            Format::Q4_1 => 20,
            Format::Q8_0 => 34,
            Format::Q5_0 => 22,
            Format::Q4_K => 144,
            Format::Q6_K => 210,
        }
    }

    /// Bytes of one row of `cols` values (`cols` a multiple of [`Format::block_values`]).
    pub const fn row_bytes(self, cols: usize) -> usize {
        cols / self.block_values() * self.block_bytes()
    }

    /// Whether a row of `cols` values is a whole, non-zero number of blocks.
    pub const fn fits(self, cols: usize) -> bool {
        cols > 0 && cols.is_multiple_of(self.block_values())
    }
}

/// Shapes that do not fit together: a caller's bug or a malformed model file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    #[error("a row of {cols} values is not a whole, non-zero number of {block}-value blocks")]
    Ragged { cols: usize, block: usize },
    #[error("{what}: expected {expected} elements, got {got}")]
    Length {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("this CPU cannot run the {0:?} kernels")]
    Unavailable(Level),
}

fn check(what: &'static str, expected: usize, got: usize) -> Result<(), KernelError> {
    if expected == got {
        Ok(())
    } else {
        Err(KernelError::Length {
            what,
            expected,
            got,
        })
    }
}

/// A vector quantized to 8 bits per value, 32 values per block (ggml's Q8_1), and again per
/// 256-value super-block ([`SuperBlocks`]) when its length is a multiple of 256.
#[derive(Debug, Clone, Default)]
pub struct Q8Vector {
    qs: Vec<i8>,
    /// Per block: the scale `d` (value = d·q).
    d: Vec<f32>,
    /// Per block: `d · Σq`, what a block's minimum or offset multiplies.
    s: Vec<f32>,
    /// What the K-quants read (empty unless the length is a multiple of [`SUPER_BLOCK`]).
    k: SuperBlocks,
}

/// A vector quantized per 256-value super-block (ggml's Q8_K), for the K-quants: their
/// sub-blocks' scales are integers, so with one activation scale per super-block a whole
/// block's products add up exactly in 32 bits before one conversion to float.
#[derive(Debug, Clone, Default)]
struct SuperBlocks {
    qs: Vec<i8>,
    /// Per super-block: the scale `d` (value = d·q).
    d: Vec<f32>,
    /// Per 16 values: `Σq` (at most 16 · 127), what Q6_K's offset of −32 multiplies in the
    /// integer sums.
    sums: Vec<i16>,
    /// Per 32 values: `d · Σq`, what a Q4_K sub-block's minimum multiplies.
    scaled_sums: Vec<f32>,
}

/// `d` and the quants of `values` (at most 127 in magnitude).
fn quantize_block(values: &[f32], qs: &mut [i8]) -> f32 {
    let amax = values.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let inverse = if d > 0.0 { 1.0 / d } else { 0.0 };
    for (q, v) in qs.iter_mut().zip(values) {
        // |v · inverse| <= 127 by construction; `as` saturates anything else (NaN → 0).
        *q = (v * inverse).round() as i8;
    }
    d
}

impl SuperBlocks {
    fn quantize(&mut self, x: &[f32]) {
        if !x.len().is_multiple_of(SUPER_BLOCK) {
            *self = SuperBlocks::default();
            return;
        }
        self.qs.resize(x.len(), 0);
        self.d.resize(x.len() / SUPER_BLOCK, 0.0);
        self.sums.resize(x.len() / 16, 0);
        self.scaled_sums.resize(x.len() / SUB_BLOCK, 0.0);
        for (n, (values, qs)) in x
            .chunks_exact(SUPER_BLOCK)
            .zip(self.qs.chunks_exact_mut(SUPER_BLOCK))
            .enumerate()
        {
            let d = quantize_block(values, qs);
            self.d[n] = d;
            for (j, sixteen) in qs.chunks_exact(16).enumerate() {
                self.sums[n * 16 + j] = sixteen.iter().map(|&q| i16::from(q)).sum();
            }
            for j in 0..SUPER_BLOCK / SUB_BLOCK {
                let at = n * 16 + 2 * j;
                let sum = i32::from(self.sums[at]) + i32::from(self.sums[at + 1]);
                self.scaled_sums[n * 8 + j] = d * sum as f32;
            }
        }
    }
}

impl Q8Vector {
    /// Quantizes `x` (its length a multiple of [`SUB_BLOCK`]) into this vector, reusing its
    /// memory.
    pub fn quantize(&mut self, x: &[f32]) -> Result<(), KernelError> {
        if !x.len().is_multiple_of(SUB_BLOCK) {
            return Err(KernelError::Ragged {
                cols: x.len(),
                block: SUB_BLOCK,
            });
        }
        let blocks = x.len() / SUB_BLOCK;
        self.qs.resize(x.len(), 0);
        self.d.resize(blocks, 0.0);
        self.s.resize(blocks, 0.0);
        for (b, (values, qs)) in x
            .chunks_exact(SUB_BLOCK)
            .zip(self.qs.chunks_exact_mut(SUB_BLOCK))
            .enumerate()
        {
            let d = quantize_block(values, qs);
            let sum: i32 = qs.iter().map(|&q| i32::from(q)).sum();
            self.d[b] = d;
            self.s[b] = d * sum as f32;
        }
        self.k.quantize(x);
        Ok(())
    }

    /// Values held.
    pub fn len(&self) -> usize {
        self.qs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.qs.is_empty()
    }
}

/// An instruction set the products can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Plain Rust: any CPU; the reference the others are tested against.
    Scalar,
    /// AVX2 + FMA + F16C.
    Avx2,
    /// AVX2 + FMA + F16C + AVX-VNNI (`vpdpbusd` on 256-bit registers, VEX-encoded).
    AvxVnni,
    /// AVX2 + FMA + F16C + AVX-512 F, BW, VNNI and VL (the same `vpdpbusd`, EVEX-encoded, and
    /// the K-quants on 512-bit registers: AMD EPYC and Intel server parts that lack AVX-VNNI
    /// have it).
    Avx512Vnni,
}

impl Level {
    /// The best level this CPU runs (detected once).
    pub fn detect() -> Level {
        static LEVEL: OnceLock<Level> = OnceLock::new();
        *LEVEL.get_or_init(|| {
            [Level::Avx512Vnni, Level::AvxVnni, Level::Avx2]
                .into_iter()
                .find(|l| l.supported())
                .unwrap_or(Level::Scalar)
        })
    }

    /// Whether this CPU has the level's instructions (asked of the CPU, not cached).
    fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c");
            match self {
                Level::Scalar => true,
                Level::Avx2 => avx2,
                Level::AvxVnni => avx2 && std::arch::is_x86_feature_detected!("avxvnni"),
                Level::Avx512Vnni => {
                    avx2 && std::arch::is_x86_feature_detected!("avx512f")
                        && std::arch::is_x86_feature_detected!("avx512bw")
                        && std::arch::is_x86_feature_detected!("avx512vnni")
                        && std::arch::is_x86_feature_detected!("avx512vl")
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Level::Scalar
        }
    }

    /// Whether this CPU can run this level.
    pub fn available(self) -> bool {
        static AVAILABLE: OnceLock<[bool; 4]> = OnceLock::new();
        AVAILABLE.get_or_init(|| {
            [
                Level::Scalar,
                Level::Avx2,
                Level::AvxVnni,
                Level::Avx512Vnni,
            ]
            .map(Level::supported)
        })[self as usize]
    }

    /// Every level this CPU can run, from the scalar reference up.
    pub fn all_available() -> Vec<Level> {
        [
            Level::Scalar,
            Level::Avx2,
            Level::AvxVnni,
            Level::Avx512Vnni,
        ]
        .into_iter()
        .filter(|l| l.available())
        .collect()
    }
}

/// `out[r · n + t] = row r of w · xs[t]` for a `rows × cols` matrix `w` in `format` and `n =
/// xs.len()` vectors of `cols` values: each weight row is read once for all the vectors.
pub fn matmul(
    format: Format,
    w: &[u8],
    rows: usize,
    cols: usize,
    xs: &[Q8Vector],
    out: &mut [f32],
) -> Result<(), KernelError> {
    matmul_at(Level::detect(), format, w, rows, cols, xs, out)
}

/// [`matmul`] at a chosen level (tests and benchmarks compare levels).
pub fn matmul_at(
    level: Level,
    format: Format,
    w: &[u8],
    rows: usize,
    cols: usize,
    xs: &[Q8Vector],
    out: &mut [f32],
) -> Result<(), KernelError> {
    if !format.fits(cols) {
        return Err(KernelError::Ragged {
            cols,
            block: format.block_values(),
        });
    }
    let overflow = KernelError::Length {
        what: "rows × row size",
        expected: usize::MAX,
        got: rows,
    };
    let weights = rows
        .checked_mul(format.row_bytes(cols))
        .ok_or_else(|| overflow.clone())?;
    check("weights (bytes)", weights, w.len())?;
    check(
        "outputs",
        rows.checked_mul(xs.len()).ok_or(overflow)?,
        out.len(),
    )?;
    for x in xs {
        check("vector", cols, x.qs.len())?;
        check("vector scales", cols / SUB_BLOCK, x.d.len())?;
        check("vector sums", cols / SUB_BLOCK, x.s.len())?;
        if format.block_values() == SUPER_BLOCK {
            // Whole super-blocks (`fits`), so `quantize` filled them.
            check("vector (super-blocks)", cols, x.k.qs.len())?;
            check(
                "vector scales (super-blocks)",
                cols / SUPER_BLOCK,
                x.k.d.len(),
            )?;
            check("vector sums of 16", cols / 16, x.k.sums.len())?;
            check("vector sums of 32", cols / SUB_BLOCK, x.k.scaled_sums.len())?;
        }
    }
    if !level.available() {
        return Err(KernelError::Unavailable(level));
    }
    if rows == 0 || xs.is_empty() {
        return Ok(());
    }
    match level {
        Level::Scalar => scalar::matmul(format, w, cols, xs, out),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the level is available on this CPU, and every length was checked above.
        Level::Avx2 => unsafe { x86::avx2::matmul(format, w, cols, xs, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Level::AvxVnni => unsafe { x86::avx_vnni::matmul(format, w, cols, xs, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Level::Avx512Vnni => unsafe { x86::avx512_vnni::matmul(format, w, cols, xs, out) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => return Err(KernelError::Unavailable(level)),
    }
    Ok(())
}

/// Dequantizes one row of `out.len()` values.
pub fn dequantize_row(format: Format, row: &[u8], out: &mut [f32]) -> Result<(), KernelError> {
    if !format.fits(out.len()) {
        return Err(KernelError::Ragged {
            cols: out.len(),
            block: format.block_values(),
        });
    }
    check("row (bytes)", format.row_bytes(out.len()), row.len())?;
    let per_block = format.block_values() / SUB_BLOCK;
    for (block, values) in row
        .chunks_exact(format.block_bytes())
        .zip(out.chunks_exact_mut(format.block_values()))
    {
        for (k, values) in values
            .chunks_exact_mut(SUB_BLOCK)
            .enumerate()
            .take(per_block)
        {
            let sub = blocks::sub_block(format, block, k);
            for (l, (v, q)) in values.iter_mut().zip(sub.q).enumerate() {
                *v = sub.scale[l / 16] * q as f32 + sub.offset;
            }
        }
    }
    Ok(())
}

mod scalar {
    //! The reference: each sub-block's integer sums, combined as the SIMD levels combine them.
    //! The K-quants read the vectors' super-blocks (one scale per block), the others their
    //! 32-value blocks.

    use super::{Format, Q8Vector, SUB_BLOCK, SUPER_BLOCK, blocks};

    pub(super) fn matmul(format: Format, w: &[u8], cols: usize, xs: &[Q8Vector], out: &mut [f32]) {
        let row_bytes = format.row_bytes(cols);
        let per_block = format.block_values() / SUB_BLOCK;
        let wide = format.block_values() == SUPER_BLOCK;
        for (row, outs) in w
            .chunks_exact(row_bytes)
            .zip(out.chunks_exact_mut(xs.len()))
        {
            for (x, o) in xs.iter().zip(outs) {
                let mut acc = 0f32;
                for (n, block) in row.chunks_exact(format.block_bytes()).enumerate() {
                    for k in 0..per_block {
                        let b = n * per_block + k;
                        let sub = blocks::sub_block(format, block, k);
                        let (qs, d, s) = if wide {
                            (&x.k.qs, x.k.d[n], x.k.scaled_sums[b])
                        } else {
                            (&x.qs, x.d[b], x.s[b])
                        };
                        let y = &qs[b * SUB_BLOCK..(b + 1) * SUB_BLOCK];
                        let mut sums = [0i32; 2];
                        for (l, (&q, &v)) in sub.q.iter().zip(y).enumerate() {
                            sums[l / 16] += q * i32::from(v);
                        }
                        acc += d * (sub.scale[0] * sums[0] as f32 + sub.scale[1] * sums[1] as f32)
                            + sub.offset * s;
                    }
                }
                *o = acc;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;
    use proptest::prelude::*;

    fn block_q4_1(d: f32, m: f32, quants: &[u8; 32]) -> Vec<u8> {
        let mut b = Vec::with_capacity(20);
        b.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        b.extend_from_slice(&f16::from_f32(m).to_le_bytes());
        b.extend((0..16).map(|j| (quants[j] & 15) | (quants[j + 16] << 4)));
        b
    }

    fn block_q8_0(d: f32, quants: &[i8; 32]) -> Vec<u8> {
        let mut b = Vec::with_capacity(34);
        b.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        b.extend(quants.iter().map(|&q| q as u8));
        b
    }

    const FORMATS: [Format; 5] = [
        Format::Q4_1,
        Format::Q8_0,
        Format::Q5_0,
        Format::Q4_K,
        Format::Q6_K,
    ];

    /// A matrix in `format` from a seed, with its f32 values: random quants and scale bytes,
    /// and f16 scales small enough that every value is finite.
    fn matrix(format: Format, rows: usize, cols: usize, seed: u64) -> (Vec<u8>, Vec<f32>) {
        let mut state = seed | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut bytes = Vec::new();
        for _ in 0..rows * cols / format.block_values() {
            let mut block: Vec<u8> = (0..format.block_bytes()).map(|_| next() as u8).collect();
            let mut scale = |at: usize, sign: f32| {
                let d = f16::from_f32(sign * (next() % 1000) as f32 / 20_000.0);
                block[at..at + 2].copy_from_slice(&d.to_le_bytes());
            };
            match format {
                Format::Q4_1 => {
                    scale(0, 1.0);
                    scale(2, -1.0);
                }
                Format::Q8_0 | Format::Q5_0 => scale(0, 1.0),
                Format::Q4_K => {
                    scale(0, 1.0);
                    scale(2, 1.0);
                }
                Format::Q6_K => scale(208, 1.0),
            }
            bytes.extend(block);
        }
        let mut values = vec![0f32; rows * cols];
        for (row, out) in bytes
            .chunks_exact(format.row_bytes(cols))
            .zip(values.chunks_exact_mut(cols))
        {
            dequantize_row(format, row, out).expect("whole rows");
        }
        (bytes, values)
    }

    /// ggml's packing of Q4_K's eight 6-bit (scale, minimum) pairs into 12 bytes.
    fn pack_q4_k_scales(scales: [u8; 8], mins: [u8; 8]) -> [u8; 12] {
        let mut packed = [0u8; 12];
        for j in 0..8 {
            let (ls, lm) = (scales[j], mins[j]);
            if j < 4 {
                packed[j] = ls;
                packed[j + 4] = lm;
            } else {
                packed[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
                packed[j - 4] |= (ls >> 4) << 6;
                packed[j] |= (lm >> 4) << 6;
            }
        }
        packed
    }

    /// ggml's Q6_K packing of 256 6-bit quants (0..64) with 16 scales and `d`.
    fn block_q6_k(d: f32, scales: [i8; 16], quants: &[u8; 256]) -> Vec<u8> {
        let (mut ql, mut qh) = ([0u8; 128], [0u8; 64]);
        for half in 0..2 {
            let (l0, h0, q) = (64 * half, 32 * half, &quants[128 * half..]);
            for l in 0..32 {
                ql[l0 + l] = (q[l] & 0xF) | ((q[l + 64] & 0xF) << 4);
                ql[l0 + l + 32] = (q[l + 32] & 0xF) | ((q[l + 96] & 0xF) << 4);
                qh[h0 + l] = (q[l] >> 4)
                    | ((q[l + 32] >> 4) << 2)
                    | ((q[l + 64] >> 4) << 4)
                    | ((q[l + 96] >> 4) << 6);
            }
        }
        let mut b = Vec::with_capacity(210);
        b.extend_from_slice(&ql);
        b.extend_from_slice(&qh);
        b.extend(scales.iter().map(|&s| s as u8));
        b.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        b
    }

    #[test]
    fn dequantized_blocks_are_the_formats_definition() {
        let quants: [u8; 32] = std::array::from_fn(|j| (j % 16) as u8);
        let mut out = [0f32; 32];
        dequantize_row(Format::Q4_1, &block_q4_1(0.5, -1.0, &quants), &mut out).expect("row");
        assert_eq!(out[0], -1.0);
        assert_eq!(out[3], 0.5);
        assert_eq!(out[16 + 15], 6.5);
        let quants: [i8; 32] = std::array::from_fn(|j| j as i8 - 16);
        dequantize_row(Format::Q8_0, &block_q8_0(0.25, &quants), &mut out).expect("row");
        assert_eq!(out[0], -4.0);
        assert_eq!(out[31], 3.75);

        // Q5_0: value j's fifth bit is bit j of the u32 after d.
        let mut q5 = f16::from_f32(0.5).to_le_bytes().to_vec();
        q5.extend_from_slice(&(1u32 << 1 | 1 << 17).to_le_bytes());
        q5.extend((0..16).map(|j| (j as u8) | (15 - j as u8) << 4));
        dequantize_row(Format::Q5_0, &q5, &mut out).expect("row");
        assert_eq!(out[0], 0.5 * (0.0 - 16.0));
        assert_eq!(out[1], 0.5 * (1.0 + 16.0 - 16.0));
        assert_eq!(out[16], 0.5 * (15.0 - 16.0));
        assert_eq!(out[17], 0.5 * (14.0 + 16.0 - 16.0));

        // Q4_K: eight (scale, minimum) pairs, sub-blocks 2g and 2g + 1 in the low and high
        // nibbles of the same 32 bytes.
        let scales: [u8; 8] = [1, 2, 3, 4, 63, 17, 40, 33];
        let mins: [u8; 8] = [0, 5, 10, 62, 1, 2, 50, 7];
        let mut q4k = f16::from_f32(0.25).to_le_bytes().to_vec();
        q4k.extend_from_slice(&f16::from_f32(0.5).to_le_bytes());
        q4k.extend_from_slice(&pack_q4_k_scales(scales, mins));
        q4k.extend((0..128).map(|i| (i % 16) as u8 | (((i / 8) % 16) as u8) << 4));
        let mut wide = [0f32; 256];
        dequantize_row(Format::Q4_K, &q4k, &mut wide).expect("row");
        for k in 0..8 {
            for l in 0..32 {
                let byte = (32 * (k / 2) + l) as u8;
                let q = if k % 2 == 0 {
                    byte % 16
                } else {
                    (byte / 8) % 16
                };
                let expected =
                    0.25 * f32::from(scales[k]) * f32::from(q) - 0.5 * f32::from(mins[k]);
                assert_eq!(wide[32 * k + l], expected, "sub-block {k} value {l}");
            }
        }

        // Q6_K: 6-bit quants minus 32, one signed scale per 16 values.
        let quants: [u8; 256] = std::array::from_fn(|i| ((i * 7) % 64) as u8);
        let scales: [i8; 16] = std::array::from_fn(|i| (i as i32 * 9 - 70) as i8);
        dequantize_row(Format::Q6_K, &block_q6_k(0.5, scales, &quants), &mut wide).expect("row");
        for (i, &v) in wide.iter().enumerate() {
            let expected = 0.5 * f32::from(scales[i / 16]) * (f32::from(quants[i]) - 32.0);
            assert_eq!(v, expected, "value {i}");
        }
    }

    #[test]
    fn every_level_agrees_with_the_float_product() {
        let (rows, cols) = (37, 512);
        for format in FORMATS {
            let (w, values) = matrix(format, rows, cols, 7);
            let xs: Vec<Vec<f32>> = (0..6)
                .map(|t| {
                    (0..cols)
                        .map(|i| ((i * 7 + t) as f32 * 0.37).sin())
                        .collect()
                })
                .collect();
            let qs: Vec<Q8Vector> = xs
                .iter()
                .map(|x| {
                    let mut q = Q8Vector::default();
                    q.quantize(x).expect("whole blocks");
                    q
                })
                .collect();
            for level in Level::all_available() {
                let mut out = vec![0f32; rows * xs.len()];
                matmul_at(level, format, &w, rows, cols, &qs, &mut out).expect("shapes fit");
                for r in 0..rows {
                    for (t, x) in xs.iter().enumerate() {
                        let exact: f32 = values[r * cols..(r + 1) * cols]
                            .iter()
                            .zip(x)
                            .map(|(a, b)| a * b)
                            .sum();
                        let scale: f32 = values[r * cols..(r + 1) * cols]
                            .iter()
                            .map(|v| v.abs())
                            .sum();
                        let got = out[r * xs.len() + t];
                        // 8-bit activations: an error of about 1/254 of the row's magnitude.
                        assert!(
                            (got - exact).abs() <= scale / 100.0 + 1e-4,
                            "{level:?} {format:?} row {r} vector {t}: {got} vs {exact}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn attention_weighs_values_by_softmaxed_scores_per_kv_group() {
        use ops::{Heads, attend};
        // Two query heads share one kv head of width 2; two positions.
        let shape = Heads {
            heads: 2,
            kv_heads: 1,
            head_dim: 2,
        };
        let keys = [1.0, 0.0, 0.0, 1.0];
        let values = [10.0, 0.0, 0.0, 20.0];
        let query = [2.0_f32.sqrt() * 3.0, 0.0, 0.0, 0.0];
        let (mut scores, mut out) = (Vec::new(), [0f32; 4]);
        attend(shape, &query, &keys, &values, &mut scores, &mut out);
        // Head 0: scores 3 and 0 → weights e^3/(e^3+1), 1/(e^3+1).
        let w = 3f32.exp() / (3f32.exp() + 1.0);
        assert!((out[0] - 10.0 * w).abs() < 1e-4 && (out[1] - 20.0 * (1.0 - w)).abs() < 1e-4);
        // Head 1: a zero query weighs both positions equally.
        assert!((out[2] - 5.0).abs() < 1e-5 && (out[3] - 10.0).abs() < 1e-5);
        // One position: the value itself.
        attend(
            shape,
            &query,
            &keys[..2],
            &values[..2],
            &mut scores,
            &mut out,
        );
        assert_eq!(out, [10.0, 0.0, 10.0, 0.0]);
    }

    #[test]
    fn rope_turns_its_pairs_and_norms_scale_to_unit_rms() {
        let mut heads = [1.0, 0.0, 0.0, 1.0];
        let quarter = std::f32::consts::FRAC_PI_2;
        ops::rope_interleaved(&mut heads, 4, &[(quarter.cos(), quarter.sin()), (1.0, 0.0)]);
        assert!((heads[0]).abs() < 1e-6 && (heads[1] - 1.0).abs() < 1e-6);
        assert_eq!(&heads[2..], &[0.0, 1.0]);
        // NEOX pairs: (0, 2) turned a quarter, (1, 3) not at all.
        let mut heads = [1.0, 5.0, 0.0, 7.0];
        ops::rope_halves(&mut heads, 4, &[(quarter.cos(), quarter.sin()), (1.0, 0.0)]);
        assert!(heads[0].abs() < 1e-6 && (heads[2] - 1.0).abs() < 1e-6);
        assert_eq!([heads[1], heads[3]], [5.0, 7.0]);
        let mut out = [0f32; 4];
        ops::rms_norm(
            &[2.0, -2.0, 2.0, -2.0],
            &[1.0, 1.0, 0.5, 1.0],
            0.0,
            &mut out,
        );
        assert_eq!(out, [1.0, -1.0, 0.5, -1.0]);
        let mut gate = [0.0, 1.0];
        ops::silu_mul(&mut gate, &[3.0, 2.0]);
        assert_eq!(gate[0], 0.0);
        assert!((gate[1] - 2.0 / (1.0 + (-1f32).exp())).abs() < 1e-6);
    }

    #[test]
    fn bad_shapes_are_refused() {
        let (w, _) = matrix(Format::Q4_1, 2, 64, 1);
        let mut q = Q8Vector::default();
        q.quantize(&[0.5; 64]).expect("whole blocks");
        let mut out = [0f32; 2];
        assert!(matmul(Format::Q4_1, &w, 2, 64, std::slice::from_ref(&q), &mut out).is_ok());
        assert!(matches!(
            matmul(
                Format::Q4_1,
                &w[1..],
                2,
                64,
                std::slice::from_ref(&q),
                &mut out
            ),
            Err(KernelError::Length { .. })
        ));
        assert!(matches!(
            matmul(
                Format::Q4_1,
                &w,
                2,
                64,
                std::slice::from_ref(&q),
                &mut out[1..]
            ),
            Err(KernelError::Length { .. })
        ));
        assert!(matches!(
            matmul(Format::Q8_0, &w, 2, 64, std::slice::from_ref(&q), &mut out),
            Err(KernelError::Length { .. })
        ));
        assert_eq!(
            q.quantize(&[1.0; 33]),
            Err(KernelError::Ragged {
                cols: 33,
                block: 32
            })
        );
        let mut empty = Q8Vector::default();
        empty.quantize(&[]).expect("no blocks");
        assert_eq!(
            matmul(Format::Q8_0, &[], 2, 0, &[empty], &mut out),
            Err(KernelError::Ragged { cols: 0, block: 32 })
        );
        let mut short = Q8Vector::default();
        short.quantize(&[0.5; 32]).expect("one block");
        assert!(matches!(
            matmul(Format::Q4_1, &w, 2, 64, &[short], &mut out),
            Err(KernelError::Length { .. })
        ));
    }

    proptest! {
        /// The SIMD levels compute the scalar reference's integer sums exactly; only the order of
        /// the float additions differs, so the tolerance is relative to the size of the terms
        /// (`Σ|w|·|x|`), not of their sum, which may cancel to near zero (a K-quant's minimums
        /// are subtracted from its scaled sums).
        #[test]
        fn simd_levels_match_the_scalar_reference(
            seed in any::<u64>(),
            rows in 1usize..40,
            blocks in 1usize..7,
            vectors in 1usize..10,
            format in prop::sample::select(FORMATS.to_vec()),
        ) {
            let cols = blocks * format.block_values();
            let (w, values) = matrix(format, rows, cols, seed);
            let xs: Vec<Vec<f32>> = (0..vectors)
                .map(|t| {
                    (0..cols)
                        .map(|i| ((i as u64 ^ seed ^ t as u64) % 97) as f32 - 48.0)
                        .collect()
                })
                .collect();
            let qs: Vec<Q8Vector> = xs
                .iter()
                .map(|x| {
                    let mut q = Q8Vector::default();
                    q.quantize(x).expect("whole blocks");
                    q
                })
                .collect();
            // Per (row, vector): the size of the terms summed.
            let magnitude: Vec<f32> = (0..rows)
                .flat_map(|r| {
                    let row = &values[r * cols..(r + 1) * cols];
                    xs.iter()
                        .map(move |x| row.iter().zip(x).map(|(w, v)| (w * v).abs()).sum::<f32>())
                })
                .collect();
            let mut reference = vec![0f32; rows * vectors];
            matmul_at(Level::Scalar, format, &w, rows, cols, &qs, &mut reference).expect("fit");
            for level in Level::all_available() {
                let mut out = vec![0f32; rows * vectors];
                matmul_at(level, format, &w, rows, cols, &qs, &mut out).expect("fit");
                for ((a, b), m) in out.iter().zip(&reference).zip(&magnitude) {
                    prop_assert!(
                        (a - b).abs() <= 1e-5 * m + 1e-3 * (1.0 + b.abs()),
                        "{level:?}: {a} vs {b} (terms of size {m})"
                    );
                }
            }
        }
    }
}
