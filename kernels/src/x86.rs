//! The SIMD levels. Each format's loop is written once, in a macro instantiated per level: the
//! levels differ only in how 32 unsigned × signed byte products become eight 32-bit sums (each
//! sum covers four adjacent bytes, so sums 0..4 are a sub-block's first 16 values and sums
//! 4..8 its last 16).
//!
//! The K-quants (Q4_K, Q6_K) read the vectors' super-blocks and are written twice: on 256-bit
//! registers (`k_quants_256`, for AVX2 and AVX-VNNI) and on 512-bit ones (`k512`, for AVX-512
//! VNNI). Both unpack each weight block once for a tile of vectors (a prompt's tokens) and keep
//! each vector's sums in integers across the whole block: `vpmaddubsw` makes 16-bit sums of
//! quant pairs and one `vpmaddwd` or `vpdpwssd` weighs them by their sub-block's integer scale,
//! so a block costs one conversion to float per vector, not one per sub-block. Q4_K on 512-bit
//! registers instead takes `vpdpbusd`'s sums of four products (they fit 16 bits) and packs two
//! registers of them into one before weighing: fewer multiplies, which bound these loops.
//! Rows are taken in groups per tile (`ROW_GROUP`) so that a tile's quants stay in L1.

use std::arch::x86_64::*;

use super::Q8Vector;

/// How far ahead of the block being read its row's bytes are prefetched. Generation streams
/// every weight once per token, and one core's hardware prefetcher alone leaves the loads
/// waiting on memory (measured: about 15% more products per second with it here).
const PREFETCH: usize = 4096;

/// Eight i32 sums of adjacent groups of four u8 × i8 products (AVX2: two instructions; the
/// i16 pairs cannot saturate for the quants here: at most 2 · 128 · 127).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_avx2(u: __m256i, s: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
}

/// The same in one `vpdpbusd` (VEX).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
fn dot_avx_vnni(u: __m256i, s: __m256i) -> __m256i {
    _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s)
}

/// The same in one `vpdpbusd` (EVEX, on 256-bit registers).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
fn dot_avx512_vnni(u: __m256i, s: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
}

/// The sum of eight floats.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum(acc: __m256) -> f32 {
    let h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    let h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    _mm_cvtss_f32(h)
}

/// The f16 at `p`.
///
/// # Safety
///
/// Two bytes at `p` are readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16(p: *const u8) -> f32 {
    // SAFETY: the caller's.
    let bits = unsafe { p.cast::<u16>().read_unaligned() };
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
}

/// 16 bytes of nibbles at `p` as 32 bytes: the low nibbles, then the high ones.
///
/// # Safety
///
/// 16 bytes at `p` are readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles(p: *const u8) -> __m256i {
    // SAFETY: the caller's.
    let q = unsafe { _mm_loadu_si128(p.cast()) };
    _mm256_and_si256(
        _mm256_set_m128i(_mm_srli_epi16(q, 4), q),
        _mm256_set1_epi8(15),
    )
}

/// Byte j is 0xFF where bit j of `bits` is set (ggml's `bytes_from_bits_32`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn bit_bytes(bits: u32) -> __m256i {
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(bits as i32),
        _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        ),
    );
    let marked = _mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe));
    _mm256_cmpeq_epi8(marked, _mm256_set1_epi64x(-1))
}

/// Q4_K's eight 6-bit scales or minimums (`q4_k_scales`'s bytes) as floats.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn widen(bytes: &[u8; 8]) -> __m256 {
    // SAFETY: eight bytes are read from an eight-byte array.
    let packed = unsafe { _mm_loadl_epi64(bytes.as_ptr().cast()) };
    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(packed))
}

/// The quants (0..64, not yet less 32) of sub-block `m` of a Q6_K half block, from its two
/// 32-byte runs of low nibbles and its 32 bytes of high bit pairs.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q6_k_quants(lows: &[__m256i; 2], high: __m256i, m: usize) -> __m256i {
    let low = _mm256_set1_epi8(15);
    let nibble = if m < 2 {
        _mm256_and_si256(lows[m % 2], low)
    } else {
        _mm256_and_si256(_mm256_srli_epi16(lows[m % 2], 4), low)
    };
    let top = _mm256_and_si256(
        _mm256_srl_epi16(high, _mm_cvtsi32_si128(2 * m as i32)),
        _mm256_set1_epi8(3),
    );
    _mm256_or_si256(nibble, _mm256_slli_epi16(top, 4))
}

/// `acc` plus the sums of adjacent pairs of i16 products (AVX2: two instructions).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn words_avx2(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
    _mm256_add_epi32(acc, _mm256_madd_epi16(a, b))
}

/// The same in one `vpdpwssd` (VEX).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
fn words_avx_vnni(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
    _mm256_dpwssd_avx_epi32(acc, a, b)
}

/// Pointers to what the K-quant kernels read of each vector of a tile: its quants, its
/// super-blocks' scales, its sums of 16 and its scaled sums of 32.
struct Tile<const T: usize> {
    qs: [*const i8; T],
    d: [*const f32; T],
    sums: [*const i16; T],
    scaled_sums: [*const f32; T],
}

impl<const T: usize> Tile<T> {
    fn new(xs: &[Q8Vector; T]) -> Tile<T> {
        Tile {
            qs: std::array::from_fn(|t| xs[t].k.qs.as_ptr()),
            d: std::array::from_fn(|t| xs[t].k.d.as_ptr()),
            sums: std::array::from_fn(|t| xs[t].k.sums.as_ptr()),
            scaled_sums: std::array::from_fn(|t| xs[t].k.scaled_sums.as_ptr()),
        }
    }
}

/// Rows whose products with one tile of vectors are taken before the next tile's: the tile's
/// quants (8 · 1536 bytes for most of the 1.5B model's matrices) then stay in the L1 cache
/// across the group, while the group's rows (16 · 864 bytes) wait in L2. Row by row instead,
/// a long prompt's quants stream from L2 for every row (measured: the 32-vector products ran
/// slower than the 8-vector ones).
const ROW_GROUP: usize = 16;

/// `out[r · n + t] = row r of w · xs[t]`: `$tile::<N>` on each row and each tile of at most
/// `$most` of `xs`, in groups of [`ROW_GROUP`] rows.
macro_rules! tiles {
    ($most:expr, $w:expr, $row_bytes:expr, $xs:expr, $out:expr,
     |$row:ident, $x:ident| $tile:ident($($arg:expr),*)) => {
        let n = $xs.len();
        for (g, group) in $out.chunks_mut(super::ROW_GROUP * n).enumerate() {
            for (i, xs) in $xs.chunks($most).enumerate() {
                for (r, outs) in group.chunks_exact_mut(n).enumerate() {
                    let $row = $w.add((g * super::ROW_GROUP + r) * $row_bytes);
                    let outs = &mut outs[i * $most..i * $most + xs.len()];
                    macro_rules! run {
                        ($n:literal) => {{
                            let Ok($x) = <&[Q8Vector; $n]>::try_from(xs) else {
                                continue;
                            };
                            outs.copy_from_slice(&$tile::<$n>($($arg),*));
                        }};
                    }
                    match xs.len() {
                        1 => run!(1),
                        2 => run!(2),
                        3 => run!(3),
                        4 => run!(4),
                        5 => run!(5),
                        6 => run!(6),
                        7 => run!(7),
                        _ => run!(8),
                    }
                }
            }
        }
    };
}

/// The K-quant kernels on 256-bit registers; `$words` weighs 16-bit sums by 16-bit scales
/// into 32-bit sums.
macro_rules! k_quants_256 {
    ($module:ident, $features:literal, $words:ident) => {
        pub(super) mod $module {
            use std::arch::x86_64::*;

            use super::super::{Format, Q8Vector, SUPER_BLOCK, blocks};
            use super::{PREFETCH, Tile, f16, hsum, q6_k_quants, widen, $words};

            /// Vectors a tile holds: four vectors' sums and totals in 16 registers.
            const TILE: usize = 4;

            /// `out[r · n + t] = row r of w · xs[t]` for a Q4_K or Q6_K matrix `w` of
            /// `blocks` blocks a row.
            ///
            /// # Safety
            ///
            /// The CPU has `$features`; `w` holds whole rows of `blocks` blocks of `format`,
            /// every vector `blocks` super-blocks; `out` holds rows × `xs.len()` values.
            #[inline]
            #[target_feature(enable = $features)]
            pub(crate) unsafe fn matmul(
                format: Format,
                w: *const u8,
                blocks: usize,
                xs: &[Q8Vector],
                out: &mut [f32],
            ) {
                let row_bytes = blocks * format.block_bytes();
                // SAFETY: the caller's, for each row and tile.
                unsafe {
                    if format == Format::Q4_K {
                        tiles!(TILE, w, row_bytes, xs, out, |row, x| q4_k(row, blocks, x));
                    } else {
                        tiles!(TILE, w, row_bytes, xs, out, |row, x| q6_k(row, blocks, x));
                    }
                }
            }

            /// # Safety (for both kernels)
            ///
            /// As for [`matmul`].
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn q4_k<const T: usize>(
                row: *const u8,
                blocks: usize,
                xs: &[Q8Vector; T],
            ) -> [f32; T] {
                let x = Tile::new(xs);
                let mut acc = [_mm256_setzero_ps(); T];
                let low = _mm256_set1_epi8(15);
                for n in 0..blocks {
                    // SAFETY: block n (144 bytes: d, dmin, 12 bytes of scales, 128 of
                    // nibbles) is inside `row`, and super-block n inside each vector.
                    unsafe {
                        let block = row.add(n * 144);
                        for ahead in [0, 64, 128] {
                            _mm_prefetch::<_MM_HINT_T0>(
                                block.wrapping_add(PREFETCH + ahead).cast(),
                            );
                        }
                        let (scales, mins) = blocks::q4_k_scales(&*block.add(4).cast::<[u8; 12]>());
                        let scale_bytes = _mm256_set1_epi64x(i64::from_le_bytes(scales));
                        let d = _mm256_set1_ps(f16(block));
                        // The eight sub-blocks' `dmin · min`.
                        let minimums =
                            _mm256_mul_ps(_mm256_set1_ps(f16(block.add(2))), widen(&mins));
                        let mut sums = [_mm256_setzero_si256(); T];
                        for g in 0..4 {
                            let bytes = _mm256_loadu_si256(block.add(16 + 32 * g).cast());
                            for half in 0..2 {
                                // Sub-block 2g + half: the low nibbles, then the high ones.
                                let k = 2 * g + half;
                                let q = _mm256_and_si256(
                                    if half == 0 {
                                        bytes
                                    } else {
                                        _mm256_srli_epi16(bytes, 4)
                                    },
                                    low,
                                );
                                // Its scale as sixteen i16 (byte k, then a zero byte).
                                let scale = _mm256_shuffle_epi8(
                                    scale_bytes,
                                    _mm256_set1_epi16(0x8000u16.cast_signed() | k as i16),
                                );
                                for t in 0..T {
                                    let y = _mm256_loadu_si256(
                                        x.qs[t].add(n * SUPER_BLOCK + 32 * k).cast(),
                                    );
                                    sums[t] = $words(sums[t], _mm256_maddubs_epi16(q, y), scale);
                                }
                            }
                        }
                        for t in 0..T {
                            let dd = _mm256_mul_ps(d, _mm256_set1_ps(*x.d[t].add(n)));
                            acc[t] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(sums[t]), acc[t]);
                            acc[t] = _mm256_fnmadd_ps(
                                minimums,
                                _mm256_loadu_ps(x.scaled_sums[t].add(8 * n)),
                                acc[t],
                            );
                        }
                    }
                }
                std::array::from_fn(|t| hsum(acc[t]))
            }

            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn q6_k<const T: usize>(
                row: *const u8,
                blocks: usize,
                xs: &[Q8Vector; T],
            ) -> [f32; T] {
                let x = Tile::new(xs);
                let mut acc = [_mm256_setzero_ps(); T];
                for n in 0..blocks {
                    // SAFETY: block n (210 bytes: 128 of low nibbles, 64 of high pairs, 16
                    // scales, d) is inside `row`, and super-block n inside each vector.
                    unsafe {
                        let block = row.add(n * 210);
                        for ahead in [0, 64, 128, 192] {
                            _mm_prefetch::<_MM_HINT_T0>(
                                block.wrapping_add(PREFETCH + ahead).cast(),
                            );
                        }
                        let d = _mm256_set1_ps(f16(block.add(208)));
                        // The sixteen scales as i16, and the offset −32 times each.
                        let scales = _mm256_cvtepi8_epi16(_mm_loadu_si128(block.add(192).cast()));
                        let offsets =
                            _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16(scales, 5));
                        let mut sums = [_mm256_setzero_si256(); T];
                        for t in 0..T {
                            let sixteens = _mm256_loadu_si256(x.sums[t].add(16 * n).cast());
                            sums[t] = $words(sums[t], sixteens, offsets);
                        }
                        for half in 0..2 {
                            let high = _mm256_loadu_si256(block.add(128 + 32 * half).cast());
                            let lows = [
                                _mm256_loadu_si256(block.add(64 * half).cast()),
                                _mm256_loadu_si256(block.add(64 * half + 32).cast()),
                            ];
                            for m in 0..4 {
                                let k = 4 * half + m;
                                let q = q6_k_quants(&lows, high, m);
                                // Scales 2k (i16 lanes 0..8) and 2k + 1 (lanes 8..16): the
                                // pair as each 32-bit lane, then each half of it per 128 bits.
                                let pair = _mm256_permutevar8x32_epi32(
                                    scales,
                                    _mm256_set1_epi32(k as i32),
                                );
                                let scale = _mm256_shuffle_epi8(
                                    pair,
                                    _mm256_setr_epi64x(
                                        0x0100_0100_0100_0100,
                                        0x0100_0100_0100_0100,
                                        0x0302_0302_0302_0302,
                                        0x0302_0302_0302_0302,
                                    ),
                                );
                                for t in 0..T {
                                    let y = _mm256_loadu_si256(
                                        x.qs[t].add(n * SUPER_BLOCK + 32 * k).cast(),
                                    );
                                    sums[t] = $words(sums[t], _mm256_maddubs_epi16(q, y), scale);
                                }
                            }
                        }
                        for t in 0..T {
                            let dd = _mm256_mul_ps(d, _mm256_set1_ps(*x.d[t].add(n)));
                            acc[t] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(sums[t]), acc[t]);
                        }
                    }
                }
                std::array::from_fn(|t| hsum(acc[t]))
            }
        }
    };
}

k_quants_256!(k_avx2, "avx2,fma,f16c", words_avx2);
k_quants_256!(k_avx_vnni, "avx2,fma,f16c,avxvnni", words_avx_vnni);

/// The K-quant kernels on 512-bit registers: each register holds 64 values, two Q4_K
/// sub-blocks (one run of 32 bytes, low nibbles then high) or four Q6_K scale groups.
#[expect(
    clippy::needless_range_loop,
    reason = "a tile's loops index several per-vector arrays in step"
)]
mod k512 {
    use std::arch::x86_64::*;

    use super::super::{Format, Q8Vector, SUPER_BLOCK, blocks};
    use super::{PREFETCH, Tile, f16, widen};

    /// Vectors a tile holds: eight vectors' sums and totals take 16 of the 32 registers.
    const TILE: usize = 8;

    /// `out[r · n + t] = row r of w · xs[t]` for a Q4_K or Q6_K matrix `w` of `blocks` blocks
    /// a row.
    ///
    /// # Safety
    ///
    /// The CPU has the level's features; `w` holds whole rows of `blocks` blocks of `format`,
    /// every vector `blocks` super-blocks; `out` holds rows × `xs.len()` values.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni,avx512vl")]
    pub(crate) unsafe fn matmul(
        format: Format,
        w: *const u8,
        blocks: usize,
        xs: &[Q8Vector],
        out: &mut [f32],
    ) {
        let row_bytes = blocks * format.block_bytes();
        // SAFETY: the caller's, for each row and tile.
        unsafe {
            if format == Format::Q4_K {
                tiles!(TILE, w, row_bytes, xs, out, |row, x| q4_k(row, blocks, x));
            } else {
                tiles!(TILE, w, row_bytes, xs, out, |row, x| q6_k(row, blocks, x));
            }
        }
    }

    /// Sixteen i16 lanes of `low` then sixteen of `high`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni,avx512vl")]
    fn halves(low: i16, high: i16) -> __m512i {
        _mm512_inserti64x4::<1>(
            _mm512_castsi256_si512(_mm256_set1_epi16(low)),
            _mm256_set1_epi16(high),
        )
    }

    /// # Safety (for both kernels)
    ///
    /// As for [`matmul`].
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni,avx512vl")]
    unsafe fn q4_k<const T: usize>(row: *const u8, blocks: usize, xs: &[Q8Vector; T]) -> [f32; T] {
        let x = Tile::new(xs);
        let mut acc = [_mm512_setzero_ps(); T];
        let low = _mm512_set1_epi8(15);
        // The low nibbles in the lower 256 bits, the high ones in the upper.
        let shifts = halves(0, 4);
        // Sums of four products (at most 4 · 15 · 127) fit in 16 bits: two groups' sums packed
        // (per 128 bits, four of group 2p then four of group 2p + 1) are weighed by their
        // scales in one instruction. Lane l of 128-bit lane `lane` is sub-block 4p + lane / 2,
        // or 4p + 2 + lane / 2: the i16 of byte b of `scale_bytes` and a zero byte.
        let select: [__m512i; 2] = std::array::from_fn(|p| {
            let lanes: [i16; 32] = std::array::from_fn(|e| {
                let (lane, l) = (e / 8, e % 8);
                let b = 4 * p + lane / 2 + if l < 4 { 0 } else { 2 };
                0x8000u16.cast_signed() | b as i16
            });
            // SAFETY: 64 bytes read from a 64-byte array.
            unsafe { _mm512_loadu_si512(lanes.as_ptr().cast()) }
        });
        for n in 0..blocks {
            // SAFETY: block n (144 bytes: d, dmin, 12 bytes of scales, 128 of nibbles) is
            // inside `row`, and super-block n inside each vector.
            unsafe {
                let block = row.add(n * 144);
                for ahead in [0, 64, 128] {
                    _mm_prefetch::<_MM_HINT_T0>(block.wrapping_add(PREFETCH + ahead).cast());
                }
                let (scales, mins) = blocks::q4_k_scales(&*block.add(4).cast::<[u8; 12]>());
                let scale_bytes = _mm512_set1_epi64(i64::from_le_bytes(scales));
                let d = _mm512_set1_ps(f16(block));
                // The eight sub-blocks' `dmin · min`, in the lower 256 bits.
                let minimums = _mm512_zextps256_ps512(_mm256_mul_ps(
                    _mm256_set1_ps(f16(block.add(2))),
                    widen(&mins),
                ));
                let mut sums = [_mm512_setzero_si512(); T];
                for p in 0..2 {
                    // Groups 2p and 2p + 1, each two sub-blocks: the same 32 bytes, low and
                    // high nibbles.
                    let quants: [__m512i; 2] = std::array::from_fn(|i| {
                        let at = block.add(16 + 32 * (2 * p + i));
                        let bytes = _mm512_broadcast_i64x4(_mm256_loadu_si256(at.cast()));
                        _mm512_and_si512(_mm512_srlv_epi16(bytes, shifts), low)
                    });
                    let scale = _mm512_shuffle_epi8(scale_bytes, select[p]);
                    for t in 0..T {
                        let y = x.qs[t].add(n * SUPER_BLOCK + 128 * p);
                        let fours = [0, 1].map(|i| {
                            let ys = _mm512_loadu_si512(y.add(64 * i).cast());
                            _mm512_dpbusd_epi32(_mm512_setzero_si512(), quants[i], ys)
                        });
                        let packed = _mm512_packs_epi32(fours[0], fours[1]);
                        sums[t] = _mm512_dpwssd_epi32(sums[t], packed, scale);
                    }
                }
                for t in 0..T {
                    let dd = _mm512_mul_ps(d, _mm512_set1_ps(*x.d[t].add(n)));
                    acc[t] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(sums[t]), acc[t]);
                    let scaled_sums =
                        _mm512_zextps256_ps512(_mm256_loadu_ps(x.scaled_sums[t].add(8 * n)));
                    acc[t] = _mm512_fnmadd_ps(minimums, scaled_sums, acc[t]);
                }
            }
        }
        std::array::from_fn(|t| _mm512_reduce_add_ps(acc[t]))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni,avx512vl")]
    unsafe fn q6_k<const T: usize>(row: *const u8, blocks: usize, xs: &[Q8Vector; T]) -> [f32; T] {
        let x = Tile::new(xs);
        let mut acc = [_mm512_setzero_ps(); T];
        let (low, top) = (_mm512_set1_epi8(15), _mm512_set1_epi8(0x30));
        // A half block's first 64 values take their high pairs from bits 0..2 (values 0..32)
        // and 2..4 (32..64), moved up to bits 4..6; its last 64 from bits 4..6 and 6..8.
        let (up, down) = (halves(4, 2), halves(0, 2));
        // Which of the sixteen scales each i16 lane of group j of half h takes: one per 16
        // values, so one per 128 bits.
        let select: [[__m512i; 2]; 2] = std::array::from_fn(|h| {
            std::array::from_fn(|j| {
                let first = (8 * h + 4 * j) as i16;
                let lanes: [i16; 32] = std::array::from_fn(|l| first + l as i16 / 8);
                // SAFETY: 64 bytes read from a 64-byte array.
                unsafe { _mm512_loadu_si512(lanes.as_ptr().cast()) }
            })
        });
        for n in 0..blocks {
            // SAFETY: block n (210 bytes: 128 of low nibbles, 64 of high pairs, 16 scales, d)
            // is inside `row`, and super-block n inside each vector.
            unsafe {
                let block = row.add(n * 210);
                for ahead in [0, 64, 128, 192] {
                    _mm_prefetch::<_MM_HINT_T0>(block.wrapping_add(PREFETCH + ahead).cast());
                }
                let d = _mm512_set1_ps(f16(block.add(208)));
                // The sixteen scales as i16, and the offset −32 times each (upper half zero).
                let scales = _mm256_cvtepi8_epi16(_mm_loadu_si128(block.add(192).cast()));
                let offsets = _mm512_zextsi256_si512(_mm256_sub_epi16(
                    _mm256_setzero_si256(),
                    _mm256_slli_epi16(scales, 5),
                ));
                let scales = _mm512_castsi256_si512(scales);
                let mut sums = [_mm512_setzero_si512(); T];
                for t in 0..T {
                    let sixteens =
                        _mm512_zextsi256_si512(_mm256_loadu_si256(x.sums[t].add(16 * n).cast()));
                    sums[t] = _mm512_dpwssd_epi32(sums[t], sixteens, offsets);
                }
                for h in 0..2 {
                    let lows = _mm512_loadu_si512(block.add(64 * h).cast());
                    let high =
                        _mm512_broadcast_i64x4(_mm256_loadu_si256(block.add(128 + 32 * h).cast()));
                    let quants = [
                        _mm512_or_si512(
                            _mm512_and_si512(lows, low),
                            _mm512_and_si512(_mm512_sllv_epi16(high, up), top),
                        ),
                        _mm512_or_si512(
                            _mm512_and_si512(_mm512_srli_epi16::<4>(lows), low),
                            _mm512_and_si512(_mm512_srlv_epi16(high, down), top),
                        ),
                    ];
                    for (j, q) in quants.into_iter().enumerate() {
                        let scale = _mm512_permutexvar_epi16(select[h][j], scales);
                        for t in 0..T {
                            let y = _mm512_loadu_si512(
                                x.qs[t].add(n * SUPER_BLOCK + 128 * h + 64 * j).cast(),
                            );
                            sums[t] =
                                _mm512_dpwssd_epi32(sums[t], _mm512_maddubs_epi16(q, y), scale);
                        }
                    }
                }
                for t in 0..T {
                    let dd = _mm512_mul_ps(d, _mm512_set1_ps(*x.d[t].add(n)));
                    acc[t] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(sums[t]), acc[t]);
                }
            }
        }
        std::array::from_fn(|t| _mm512_reduce_add_ps(acc[t]))
    }
}

macro_rules! level {
    ($module:ident, $features:literal, $dot:ident, $k_quants:ident) => {
        pub(super) mod $module {
            use std::arch::x86_64::*;

            use super::super::{Format, Q8Vector, SUB_BLOCK};
            use super::{PREFETCH, bit_bytes, f16, hsum, nibbles, $dot};

            /// # Safety
            ///
            /// The CPU has `$features`; `w` holds whole rows of `cols` values in `format`,
            /// every vector holds `cols` values, `out` holds rows × `xs.len()` values.
            #[inline]
            #[target_feature(enable = $features)]
            pub(crate) unsafe fn matmul(
                format: Format,
                w: &[u8],
                cols: usize,
                xs: &[Q8Vector],
                out: &mut [f32],
            ) {
                let blocks = cols / format.block_values();
                if let Format::Q4_K | Format::Q6_K = format {
                    // SAFETY: `w` holds whole rows of `blocks` blocks of `format`, and every
                    // vector the matching super-blocks (the caller's contract).
                    unsafe { super::$k_quants::matmul(format, w.as_ptr(), blocks, xs, out) };
                    return;
                }
                for (row, outs) in w
                    .chunks_exact(format.row_bytes(cols))
                    .zip(out.chunks_exact_mut(xs.len()))
                {
                    let row = row.as_ptr();
                    // SAFETY (every arm): `row` holds `blocks` whole blocks of `format`, and
                    // every vector the matching values (the caller's contract).
                    match format {
                        Format::Q4_K | Format::Q6_K => unreachable!("taken above"),
                        Format::Q4_1 => {
                            for (x, o) in xs.iter().zip(outs) {
                                *o = unsafe { q4_1(row, blocks, x) };
                            }
                        }
                        Format::Q8_0 => {
                            for (x, o) in xs.iter().zip(outs) {
                                *o = unsafe { q8_0(row, blocks, x) };
                            }
                        }
                        Format::Q5_0 => {
                            for (x, o) in xs.iter().zip(outs) {
                                *o = unsafe { q5_0(row, blocks, x) };
                            }
                        }
                    }
                }
            }

            /// `d · x.d[b]` times the eight sums, added to `acc`.
            #[inline]
            #[target_feature(enable = $features)]
            fn add(acc: __m256, scale: f32, sums: __m256i) -> __m256 {
                _mm256_fmadd_ps(_mm256_set1_ps(scale), _mm256_cvtepi32_ps(sums), acc)
            }

            /// # Safety (for the five loops below)
            ///
            /// `row` holds `blocks` blocks of the loop's format; `x` holds their values.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn q4_1(row: *const u8, blocks: usize, x: &Q8Vector) -> f32 {
                let (mut acc, mut minimums) = (_mm256_setzero_ps(), 0f32);
                for b in 0..blocks {
                    // SAFETY: block b (20 bytes: d, m, 16 bytes of nibbles) is inside `row`,
                    // and its 32 values inside `x.qs`; a prefetch never faults.
                    unsafe {
                        let block = row.add(b * 20);
                        _mm_prefetch::<_MM_HINT_T0>(block.wrapping_add(PREFETCH).cast());
                        let ys = _mm256_loadu_si256(x.qs.as_ptr().add(b * SUB_BLOCK).cast());
                        let sums = $dot(nibbles(block.add(4)), ys);
                        acc = add(acc, f16(block) * *x.d.as_ptr().add(b), sums);
                        minimums += f16(block.add(2)) * *x.s.as_ptr().add(b);
                    }
                }
                hsum(acc) + minimums
            }

            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn q8_0(row: *const u8, blocks: usize, x: &Q8Vector) -> f32 {
                let mut acc = _mm256_setzero_ps();
                for b in 0..blocks {
                    // SAFETY: block b (34 bytes: d, 32 quants) is inside `row`.
                    unsafe {
                        let block = row.add(b * 34);
                        _mm_prefetch::<_MM_HINT_T0>(block.wrapping_add(PREFETCH).cast());
                        let ys = _mm256_loadu_si256(x.qs.as_ptr().add(b * SUB_BLOCK).cast());
                        let q = _mm256_loadu_si256(block.add(2).cast());
                        // |q| as unsigned times y with q's sign: the same products.
                        // AVX2's two instructions: measured faster here than `vpdpbusd` for this loop.
                        let sums = super::dot_avx2(_mm256_sign_epi8(q, q), _mm256_sign_epi8(ys, q));
                        acc = add(acc, f16(block) * *x.d.as_ptr().add(b), sums);
                    }
                }
                hsum(acc)
            }

            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn q5_0(row: *const u8, blocks: usize, x: &Q8Vector) -> f32 {
                let (mut acc, mut offsets) = (_mm256_setzero_ps(), 0f32);
                let fifth = _mm256_set1_epi8(0x10);
                for b in 0..blocks {
                    // SAFETY: block b (22 bytes: d, 4 bytes of fifth bits, 16 of nibbles).
                    unsafe {
                        let block = row.add(b * 22);
                        _mm_prefetch::<_MM_HINT_T0>(block.wrapping_add(PREFETCH).cast());
                        let ys = _mm256_loadu_si256(x.qs.as_ptr().add(b * SUB_BLOCK).cast());
                        let high = block.add(2).cast::<u32>().read_unaligned();
                        let q = _mm256_or_si256(
                            nibbles(block.add(6)),
                            _mm256_and_si256(bit_bytes(high), fifth),
                        );
                        let d = f16(block);
                        acc = add(acc, d * *x.d.as_ptr().add(b), $dot(q, ys));
                        offsets += 16.0 * d * *x.s.as_ptr().add(b);
                    }
                }
                hsum(acc) - offsets
            }
        }
    };
}

level!(avx2, "avx2,fma,f16c", dot_avx2, k_avx2);
level!(avx_vnni, "avx2,fma,f16c,avxvnni", dot_avx_vnni, k_avx_vnni);
level!(
    avx512_vnni,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vnni,avx512vl",
    dot_avx512_vnni,
    k512
);
