//! The SIMD levels. Each format's loop is written once, in a macro instantiated per level: the
//! levels differ only in how 32 unsigned × signed byte products become eight 32-bit sums (each
//! sum covers four adjacent bytes, so sums 0..4 are a sub-block's first 16 values and sums
//! 4..8 its last 16).

use std::arch::x86_64::*;

/// How far ahead of the block being read its row's bytes are prefetched. Generation streams
/// every weight once per token, and one core's hardware prefetcher alone leaves the loads
/// waiting on memory (measured: about 15% more products per second with it here).
const PREFETCH: usize = 4096;

/// Vectors a prompt's products take at once (see `q4_k_tile`).
const TILE: usize = 4;

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

/// A Q6_K block's sixteen scales times its `d`: scales 0..8 and 8..16.
///
/// # Safety
///
/// `block` points at a whole 210-byte Q6_K block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k_scales(block: *const u8) -> [__m256; 2] {
    // SAFETY: the scales are bytes 192..208 and d bytes 208..210 of the block.
    let (d, packed) = unsafe {
        (
            _mm256_set1_ps(f16(block.add(208))),
            _mm_loadu_si128(block.add(192).cast()),
        )
    };
    [
        _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(packed))),
        _mm256_mul_ps(
            d,
            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(packed, 8))),
        ),
    ]
}

/// The signed quants (`q - 32`) of sub-block `m` of a Q6_K half block, from its two 32-byte runs
/// of low nibbles and its 32 bytes of high bit pairs.
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
    _mm256_sub_epi8(
        _mm256_or_si256(nibble, _mm256_slli_epi16(top, 4)),
        _mm256_set1_epi8(32),
    )
}

/// Sub-block `m`'s two scales of a half block, each over its four sums: lanes 0..4 take scale
/// `2m` of `scales`, lanes 4..8 scale `2m + 1`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q6_k_halves(scales: __m256, m: usize) -> __m256 {
    let at = 2 * m as i32;
    _mm256_permutevar8x32_ps(
        scales,
        _mm256_setr_epi32(at, at, at, at, at + 1, at + 1, at + 1, at + 1),
    )
}

macro_rules! level {
    ($module:ident, $features:literal, $dot:ident) => {
        pub(super) mod $module {
            use std::arch::x86_64::*;

            use super::super::{Format, Q8Vector, SUB_BLOCK, blocks};
            use super::{
                PREFETCH, TILE, bit_bytes, f16, hsum, nibbles, q6_k_halves, q6_k_quants,
                q6_k_scales, widen, $dot,
            };

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
                for (row, outs) in w
                    .chunks_exact(format.row_bytes(cols))
                    .zip(out.chunks_exact_mut(xs.len()))
                {
                    let row = row.as_ptr();
                    // Prompts: four vectors at a time share each block's unpacking.
                    let tiled = match format {
                        Format::Q4_K | Format::Q6_K => xs.len() / TILE * TILE,
                        _ => 0,
                    };
                    for (x4, o4) in xs[..tiled]
                        .chunks_exact(TILE)
                        .zip(outs[..tiled].chunks_exact_mut(TILE))
                    {
                        let Ok(x4) = <&[Q8Vector; TILE]>::try_from(x4) else {
                            continue;
                        };
                        // SAFETY: as below, for each of the four.
                        let sums = unsafe {
                            if format == Format::Q4_K {
                                q4_k_tile(row, blocks, x4)
                            } else {
                                q6_k_tile(row, blocks, x4)
                            }
                        };
                        o4.copy_from_slice(&sums);
                    }
                    for (x, o) in xs[tiled..].iter().zip(&mut outs[tiled..]) {
                        // SAFETY: `row` holds `blocks` whole blocks of `format`, and `x` the
                        // matching values (the caller's contract).
                        *o = unsafe {
                            match format {
                                Format::Q4_1 => q4_1(row, blocks, x),
                                Format::Q8_0 => q8_0(row, blocks, x),
                                Format::Q5_0 => q5_0(row, blocks, x),
                                Format::Q4_K => q4_k(row, blocks, x),
                                Format::Q6_K => q6_k(row, blocks, x),
                            }
                        };
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

            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn q4_k(row: *const u8, blocks: usize, x: &Q8Vector) -> f32 {
                // One accumulator per 64-value group: four independent chains of additions.
                let mut acc = [_mm256_setzero_ps(); 4];
                let mut minimums = _mm256_setzero_ps();
                let low = _mm256_set1_epi8(15);
                for n in 0..blocks {
                    // SAFETY: block n (144 bytes: d, dmin, 12 bytes of scales, 128 of
                    // nibbles) is inside `row`, and its 256 values (8 sub-blocks) inside `x`.
                    unsafe {
                        let block = row.add(n * 144);
                        _mm_prefetch::<_MM_HINT_T0>(block.wrapping_add(PREFETCH).cast());
                        _mm_prefetch::<_MM_HINT_T0>(block.wrapping_add(PREFETCH + 64).cast());
                        _mm_prefetch::<_MM_HINT_T0>(block.wrapping_add(PREFETCH + 128).cast());
                        let (scales, mins) = blocks::q4_k_scales(&*block.add(4).cast::<[u8; 12]>());
                        // The eight sub-blocks' multipliers `d · scale · x.d`, and their
                        // minimums' share `dmin · min · x.s`, eight at a time.
                        let multipliers = _mm256_mul_ps(
                            _mm256_mul_ps(_mm256_set1_ps(f16(block)), widen(&scales)),
                            _mm256_loadu_ps(x.d.as_ptr().add(n * 8)),
                        );
                        minimums = _mm256_fmadd_ps(
                            _mm256_mul_ps(_mm256_set1_ps(f16(block.add(2))), widen(&mins)),
                            _mm256_loadu_ps(x.s.as_ptr().add(n * 8)),
                            minimums,
                        );
                        let y = x.qs.as_ptr().add(n * 8 * SUB_BLOCK);
                        for g in 0..4 {
                            let bytes = _mm256_loadu_si256(block.add(16 + 32 * g).cast());
                            let lo = $dot(
                                _mm256_and_si256(bytes, low),
                                _mm256_loadu_si256(y.add(2 * g * SUB_BLOCK).cast()),
                            );
                            let hi = $dot(
                                _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low),
                                _mm256_loadu_si256(y.add((2 * g + 1) * SUB_BLOCK).cast()),
                            );
                            let at = 2 * g as i32;
                            acc[g] = _mm256_fmadd_ps(
                                _mm256_permutevar8x32_ps(multipliers, _mm256_set1_epi32(at)),
                                _mm256_cvtepi32_ps(lo),
                                acc[g],
                            );
                            acc[g] = _mm256_fmadd_ps(
                                _mm256_permutevar8x32_ps(multipliers, _mm256_set1_epi32(at + 1)),
                                _mm256_cvtepi32_ps(hi),
                                acc[g],
                            );
                        }
                    }
                }
                hsum(_mm256_add_ps(
                    _mm256_add_ps(acc[0], acc[1]),
                    _mm256_add_ps(acc[2], acc[3]),
                )) - hsum(minimums)
            }

            /// [`q4_k`] for four vectors at once: each block's scales and nibbles are
            /// unpacked once for all four.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn q4_k_tile(
                row: *const u8,
                blocks: usize,
                xs: &[Q8Vector; TILE],
            ) -> [f32; TILE] {
                let mut acc = [_mm256_setzero_ps(); TILE];
                let mut minimums = [_mm256_setzero_ps(); TILE];
                let low = _mm256_set1_epi8(15);
                for n in 0..blocks {
                    // SAFETY: as in `q4_k`, for each vector.
                    unsafe {
                        let block = row.add(n * 144);
                        let (scales, mins) = blocks::q4_k_scales(&*block.add(4).cast::<[u8; 12]>());
                        let scaled = _mm256_mul_ps(_mm256_set1_ps(f16(block)), widen(&scales));
                        let lowest = _mm256_mul_ps(_mm256_set1_ps(f16(block.add(2))), widen(&mins));
                        let mut multipliers = [_mm256_setzero_ps(); TILE];
                        for t in 0..TILE {
                            multipliers[t] =
                                _mm256_mul_ps(scaled, _mm256_loadu_ps(xs[t].d.as_ptr().add(n * 8)));
                            minimums[t] = _mm256_fmadd_ps(
                                lowest,
                                _mm256_loadu_ps(xs[t].s.as_ptr().add(n * 8)),
                                minimums[t],
                            );
                        }
                        for g in 0..4 {
                            let bytes = _mm256_loadu_si256(block.add(16 + 32 * g).cast());
                            let lo_q = _mm256_and_si256(bytes, low);
                            let hi_q = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low);
                            let at = 2 * g as i32;
                            for t in 0..TILE {
                                let y = xs[t].qs.as_ptr().add((n * 8 + 2 * g) * SUB_BLOCK);
                                let lo = $dot(lo_q, _mm256_loadu_si256(y.cast()));
                                let hi = $dot(hi_q, _mm256_loadu_si256(y.add(SUB_BLOCK).cast()));
                                acc[t] = _mm256_fmadd_ps(
                                    _mm256_permutevar8x32_ps(multipliers[t], _mm256_set1_epi32(at)),
                                    _mm256_cvtepi32_ps(lo),
                                    acc[t],
                                );
                                acc[t] = _mm256_fmadd_ps(
                                    _mm256_permutevar8x32_ps(
                                        multipliers[t],
                                        _mm256_set1_epi32(at + 1),
                                    ),
                                    _mm256_cvtepi32_ps(hi),
                                    acc[t],
                                );
                            }
                        }
                    }
                }
                let mut sums = [0f32; TILE];
                for t in 0..TILE {
                    sums[t] = hsum(acc[t]) - hsum(minimums[t]);
                }
                sums
            }

            /// [`q6_k`] for four vectors at once.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn q6_k_tile(
                row: *const u8,
                blocks: usize,
                xs: &[Q8Vector; TILE],
            ) -> [f32; TILE] {
                let mut acc = [_mm256_setzero_ps(); TILE];
                for n in 0..blocks {
                    // SAFETY: as in `q6_k`, for each vector.
                    unsafe {
                        let block = row.add(n * 210);
                        let scales = q6_k_scales(block);
                        for half in 0..2 {
                            let high = _mm256_loadu_si256(block.add(128 + 32 * half).cast());
                            let lows = [
                                _mm256_loadu_si256(block.add(64 * half).cast()),
                                _mm256_loadu_si256(block.add(64 * half + 32).cast()),
                            ];
                            for m in 0..4 {
                                let b = n * 8 + 4 * half + m;
                                let q = q6_k_quants(&lows, high, m);
                                let magnitude = _mm256_sign_epi8(q, q);
                                let halves = q6_k_halves(scales[half], m);
                                for t in 0..TILE {
                                    let ys = _mm256_loadu_si256(
                                        xs[t].qs.as_ptr().add(b * SUB_BLOCK).cast(),
                                    );
                                    let sums = $dot(magnitude, _mm256_sign_epi8(ys, q));
                                    acc[t] = _mm256_fmadd_ps(
                                        _mm256_mul_ps(
                                            halves,
                                            _mm256_set1_ps(*xs[t].d.as_ptr().add(b)),
                                        ),
                                        _mm256_cvtepi32_ps(sums),
                                        acc[t],
                                    );
                                }
                            }
                        }
                    }
                }
                let mut sums = [0f32; TILE];
                for t in 0..TILE {
                    sums[t] = hsum(acc[t]);
                }
                sums
            }

            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn q6_k(row: *const u8, blocks: usize, x: &Q8Vector) -> f32 {
                // One accumulator per 32-value quarter of a half block: four independent chains.
                let mut acc = [_mm256_setzero_ps(); 4];
                for n in 0..blocks {
                    // SAFETY: block n (210 bytes: 128 of low nibbles, 64 of high pairs, 16
                    // scales, d) is inside `row`, and its 256 values inside `x`.
                    unsafe {
                        let block = row.add(n * 210);
                        for ahead in [0, 64, 128, 192] {
                            _mm_prefetch::<_MM_HINT_T0>(
                                block.wrapping_add(PREFETCH + ahead).cast(),
                            );
                        }
                        // The 16 scales times d: scales 0..8 and 8..16.
                        let scales = q6_k_scales(block);
                        for half in 0..2 {
                            let high = _mm256_loadu_si256(block.add(128 + 32 * half).cast());
                            let lows = [
                                _mm256_loadu_si256(block.add(64 * half).cast()),
                                _mm256_loadu_si256(block.add(64 * half + 32).cast()),
                            ];
                            for m in 0..4 {
                                let b = n * 8 + 4 * half + m;
                                let q = q6_k_quants(&lows, high, m);
                                let ys =
                                    _mm256_loadu_si256(x.qs.as_ptr().add(b * SUB_BLOCK).cast());
                                let sums = $dot(_mm256_sign_epi8(q, q), _mm256_sign_epi8(ys, q));
                                // Sub-block 4·half + m has scales 2m, 2m + 1 of `scales[half]`.
                                let halves = q6_k_halves(scales[half], m);
                                acc[m] = _mm256_fmadd_ps(
                                    _mm256_mul_ps(halves, _mm256_set1_ps(*x.d.as_ptr().add(b))),
                                    _mm256_cvtepi32_ps(sums),
                                    acc[m],
                                );
                            }
                        }
                    }
                }
                hsum(_mm256_add_ps(
                    _mm256_add_ps(acc[0], acc[1]),
                    _mm256_add_ps(acc[2], acc[3]),
                ))
            }
        }
    };
}

level!(avx2, "avx2,fma,f16c", dot_avx2);
level!(avx_vnni, "avx2,fma,f16c,avxvnni", dot_avx_vnni);
level!(
    avx512_vnni,
    "avx2,fma,f16c,avx512vnni,avx512vl",
    dot_avx512_vnni
);
