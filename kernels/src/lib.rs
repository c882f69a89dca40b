//! The mind's kernels: quantized matrix × vector products over GGUF's own block layouts.
//!
//! Generation on a CPU is bound by how fast the weights stream from memory, so the kernels read
//! the weights exactly as the GGUF stores them (no repacking, no f32 copy) and do the
//! arithmetic on 8-bit integers:
//!
//! - **Weights** stay in ggml's blocks of 32 values: [`Format::Q4_1`] (an f16 scale `d`, an f16
//!   minimum `m` and 32 4-bit quants: `w = d·q + m`, 20 bytes) and [`Format::Q8_0`] (an f16
//!   scale and 32 signed bytes: `w = d·q`, 34 bytes).
//! - **Activations** are quantized once per product to 8 bits per value in blocks of 32
//!   ([`Q8Vector`], ggml's Q8_1: a scale per block and the block's scaled sum, which folds Q4_1's
//!   minimum into one multiply per block).
//! - **The rest of a Llama pass** ([`ops`]): RMS norm, the rotary embedding, attention over a
//!   KV cache, the gated SiLU; plain Rust the compiler vectorizes, here so that it is compiled
//!   optimised even in test builds.
//! - **Levels**, picked at run time from what the CPU has ([`Level::detect`]): AVX-VNNI (one
//!   `vpdpbusd` per block), AVX2 (`vpmaddubsw` + `vpmaddwd`), and portable scalar code that every
//!   other level is tested against.
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

use std::sync::OnceLock;

use half::f16;

/// Values per quantization block, in every format here.
pub const BLOCK: usize = 32;

/// How a matrix's rows are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// ggml's Q4_1: f16 `d`, f16 `m`, 16 bytes of nibbles (value j in the low nibble of byte
    /// j, value j + 16 in its high nibble).
    Q4_1,
    /// ggml's Q8_0: f16 `d`, 32 signed bytes.
    Q8_0,
}

impl Format {
    /// Bytes of one block of 32 values.
    pub const fn block_bytes(self) -> usize {
        match self {
            Format::Q4_1 => 20,
            Format::Q8_0 => 34,
        }
    }

    /// Bytes of one row of `cols` values (`cols` a multiple of [`BLOCK`]).
    pub const fn row_bytes(self, cols: usize) -> usize {
        cols / BLOCK * self.block_bytes()
    }
}

/// Shapes that do not fit together: a caller's bug or a malformed model file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    #[error("a row of {0} values is not a whole, non-zero number of {BLOCK}-value blocks")]
    Ragged(usize),
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

/// A vector quantized to 8 bits per value, 32 values per block (ggml's Q8_1).
#[derive(Debug, Clone, Default)]
pub struct Q8Vector {
    qs: Vec<i8>,
    /// Per block: the scale `d` (value = d·q).
    d: Vec<f32>,
    /// Per block: `d · Σq`, what a Q4_1 block's minimum multiplies.
    s: Vec<f32>,
}

impl Q8Vector {
    /// Quantizes `x` (its length a multiple of [`BLOCK`]) into this vector, reusing its memory.
    pub fn quantize(&mut self, x: &[f32]) -> Result<(), KernelError> {
        if !x.len().is_multiple_of(BLOCK) {
            return Err(KernelError::Ragged(x.len()));
        }
        let blocks = x.len() / BLOCK;
        self.qs.resize(x.len(), 0);
        self.d.resize(blocks, 0.0);
        self.s.resize(blocks, 0.0);
        for (b, values) in x.chunks_exact(BLOCK).enumerate() {
            let amax = values.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let inverse = if d > 0.0 { 1.0 / d } else { 0.0 };
            let mut sum = 0i32;
            for (q, v) in self.qs[b * BLOCK..(b + 1) * BLOCK].iter_mut().zip(values) {
                // |v · inverse| <= 127 by construction; `as` saturates anything else (NaN → 0).
                *q = (v * inverse).round() as i8;
                sum += i32::from(*q);
            }
            self.d[b] = d;
            self.s[b] = d * sum as f32;
        }
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
    /// AVX2 + FMA + F16C + AVX-VNNI (`vpdpbusd` on 256-bit registers).
    AvxVnni,
}

impl Level {
    /// The best level this CPU runs (detected once).
    pub fn detect() -> Level {
        static LEVEL: OnceLock<Level> = OnceLock::new();
        *LEVEL.get_or_init(|| {
            let mut level = Level::Scalar;
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("f16c")
                {
                    level = Level::Avx2;
                    if std::arch::is_x86_feature_detected!("avxvnni") {
                        level = Level::AvxVnni;
                    }
                }
            }
            level
        })
    }

    /// Whether this CPU can run this level.
    pub fn available(self) -> bool {
        self <= Level::detect()
    }

    /// Every level this CPU can run, from the scalar reference up.
    pub fn all_available() -> Vec<Level> {
        [Level::Scalar, Level::Avx2, Level::AvxVnni]
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
    if cols == 0 || !cols.is_multiple_of(BLOCK) {
        return Err(KernelError::Ragged(cols));
    }
    check("weights (bytes)", rows * format.row_bytes(cols), w.len())?;
    check("outputs", rows * xs.len(), out.len())?;
    for x in xs {
        check("vector", cols, x.qs.len())?;
        check("vector scales", cols / BLOCK, x.d.len())?;
        check("vector sums", cols / BLOCK, x.s.len())?;
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
        Level::Avx2 => unsafe { x86::matmul_avx2(format, w, cols, xs, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Level::AvxVnni => unsafe { x86::matmul_vnni(format, w, cols, xs, out) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => return Err(KernelError::Unavailable(level)),
    }
    Ok(())
}

/// Dequantizes one row of `out.len()` values.
pub fn dequantize_row(format: Format, row: &[u8], out: &mut [f32]) -> Result<(), KernelError> {
    if !out.len().is_multiple_of(BLOCK) {
        return Err(KernelError::Ragged(out.len()));
    }
    check("row (bytes)", format.row_bytes(out.len()), row.len())?;
    let bb = format.block_bytes();
    for (block, values) in row.chunks_exact(bb).zip(out.chunks_exact_mut(BLOCK)) {
        let d = f16_at(block, 0);
        match format {
            Format::Q4_1 => {
                let m = f16_at(block, 2);
                for (j, &byte) in block[4..20].iter().enumerate() {
                    values[j] = d * f32::from(byte & 15) + m;
                    values[j + 16] = d * f32::from(byte >> 4) + m;
                }
            }
            Format::Q8_0 => {
                for (v, &q) in values.iter_mut().zip(&block[2..34]) {
                    *v = d * f32::from(q as i8);
                }
            }
        }
    }
    Ok(())
}

pub mod ops {
    //! The element-wise and attention steps of a Llama pass, on f32 slices (safe Rust).

    /// `out = x / rms(x) · weight`.
    pub fn rms_norm(x: &[f32], weight: &[f32], epsilon: f32, out: &mut [f32]) {
        let mean = dot(x, x) / x.len() as f32;
        let scale = 1.0 / (mean + epsilon).sqrt();
        for ((o, v), w) in out.iter_mut().zip(x).zip(weight) {
            *o = v * scale * w;
        }
    }

    /// ggml's rotary embedding for Llama: pairs `(2i, 2i + 1)` of each `head_dim`-wide head
    /// turned by `angles[i]` (cos, sin).
    pub fn rope_interleaved(heads: &mut [f32], head_dim: usize, angles: &[(f32, f32)]) {
        for head in heads.chunks_exact_mut(head_dim) {
            for (pair, &(cos, sin)) in head.chunks_exact_mut(2).zip(angles) {
                let (a, b) = (pair[0], pair[1]);
                pair[0] = a * cos - b * sin;
                pair[1] = a * sin + b * cos;
            }
        }
    }

    /// `gate = silu(gate) · up`.
    pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
        for (g, u) in gate.iter_mut().zip(up) {
            *g = *g / (1.0 + (-*g).exp()) * u;
        }
    }

    /// `x += y`.
    pub fn add(x: &mut [f32], y: &[f32]) {
        for (a, b) in x.iter_mut().zip(y) {
            *a += b;
        }
    }

    /// A dot product in eight independent sums (so it vectorizes).
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut lanes = [0f32; 8];
        let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
        let tail: f32 = a8
            .remainder()
            .iter()
            .zip(b8.remainder())
            .map(|(x, y)| x * y)
            .sum();
        for (x, y) in a8.zip(b8) {
            for i in 0..8 {
                lanes[i] += x[i] * y[i];
            }
        }
        lanes.iter().sum::<f32>() + tail
    }

    /// The shape of grouped-query attention.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Heads {
        pub heads: usize,
        pub kv_heads: usize,
        pub head_dim: usize,
    }

    /// One token's attention: `query` (`heads · head_dim`) over the `keys` and `values` of
    /// every position it sees (`[position][kv_heads · head_dim]`), into `out`. Query head `h`
    /// reads key/value head `h / (heads / kv_heads)`.
    pub fn attend(
        shape: Heads,
        query: &[f32],
        keys: &[f32],
        values: &[f32],
        scores: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        let Heads {
            heads,
            kv_heads,
            head_dim: hd,
        } = shape;
        let kv = kv_heads * hd;
        let seen = keys.len() / kv;
        let group = heads / kv_heads;
        let scale = 1.0 / (hd as f32).sqrt();
        scores.resize(seen, 0.0);
        out.fill(0.0);
        for head in 0..heads {
            let at = head / group * hd;
            let q = &query[head * hd..(head + 1) * hd];
            let mut max = f32::NEG_INFINITY;
            for (score, key) in scores.iter_mut().zip(keys.chunks_exact(kv)) {
                *score = dot(q, &key[at..at + hd]) * scale;
                max = max.max(*score);
            }
            let mut total = 0.0;
            for score in scores.iter_mut() {
                *score = (*score - max).exp();
                total += *score;
            }
            let o = &mut out[head * hd..(head + 1) * hd];
            for (score, value) in scores.iter().zip(values.chunks_exact(kv)) {
                let weight = score / total;
                for (o, v) in o.iter_mut().zip(&value[at..at + hd]) {
                    *o += weight * v;
                }
            }
        }
    }
}

fn f16_at(block: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([block[at], block[at + 1]]).to_f32()
}

mod scalar {
    use super::{BLOCK, Format, Q8Vector, f16_at};

    pub(super) fn matmul(format: Format, w: &[u8], cols: usize, xs: &[Q8Vector], out: &mut [f32]) {
        let row_bytes = format.row_bytes(cols);
        let bb = format.block_bytes();
        for (row, outs) in w
            .chunks_exact(row_bytes)
            .zip(out.chunks_exact_mut(xs.len()))
        {
            for (x, o) in xs.iter().zip(outs) {
                let mut acc = 0f32;
                for (b, block) in row.chunks_exact(bb).enumerate() {
                    let y = &x.qs[b * BLOCK..(b + 1) * BLOCK];
                    let d = f16_at(block, 0);
                    match format {
                        Format::Q4_1 => {
                            let mut sum = 0i32;
                            for (j, &byte) in block[4..20].iter().enumerate() {
                                sum += i32::from(byte & 15) * i32::from(y[j])
                                    + i32::from(byte >> 4) * i32::from(y[j + 16]);
                            }
                            acc += d * x.d[b] * sum as f32 + f16_at(block, 2) * x.s[b];
                        }
                        Format::Q8_0 => {
                            let sum: i32 = block[2..34]
                                .iter()
                                .zip(y)
                                .map(|(&q, &v)| i32::from(q as i8) * i32::from(v))
                                .sum();
                            acc += d * x.d[b] * sum as f32;
                        }
                    }
                }
                *o = acc;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! One loop, written once as a macro and instantiated per level: the levels differ only in
    //! how 32 unsigned × signed byte products become eight 32-bit sums.

    use std::arch::x86_64::*;

    use super::{BLOCK, Format, Q8Vector};

    /// How far ahead of the block being read its row's bytes are prefetched. Generation streams
    /// every weight once per token, and one core's hardware prefetcher alone leaves the loads
    /// waiting on memory (measured: about 15% more products per second with it here).
    const PREFETCH: usize = 1024;

    /// Eight i32 sums of adjacent groups of four u8 × i8 products (AVX2: two instructions).
    #[target_feature(enable = "avx2,fma,f16c")]
    fn dot_avx2(u: __m256i, s: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
    }

    /// The same in one `vpdpbusd` (no i16 saturation either).
    #[target_feature(enable = "avx2,fma,f16c,avxvnni")]
    fn dot_vnni(u: __m256i, s: __m256i) -> __m256i {
        _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s)
    }

    macro_rules! matmul_level {
        ($name:ident, $features:literal, $dot:ident) => {
            /// # Safety
            ///
            /// The CPU has `$features`; `w` holds whole rows of `cols` values in `format`,
            /// every vector holds `cols` values, `out` holds rows × `xs.len()` values.
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name(
                format: Format,
                w: &[u8],
                cols: usize,
                xs: &[Q8Vector],
                out: &mut [f32],
            ) {
                let blocks = cols / BLOCK;
                let bb = format.block_bytes();
                let row_bytes = format.row_bytes(cols);
                let low = _mm256_set1_epi8(15);
                for (row, outs) in w
                    .chunks_exact(row_bytes)
                    .zip(out.chunks_exact_mut(xs.len()))
                {
                    let row = row.as_ptr();
                    for (x, o) in xs.iter().zip(outs) {
                        let y = x.qs.as_ptr();
                        let mut acc = _mm256_setzero_ps();
                        let mut minimums = 0f32;
                        for b in 0..blocks {
                            // SAFETY: block b of this row lies inside `w` (whole rows were
                            // checked), and 32 quants of block b inside `x.qs`.
                            let (block, ys) = unsafe { (row.add(b * bb), y.add(b * BLOCK)) };
                            // A prefetch never faults; `wrapping_add` forms the address without
                            // claiming it is inside the allocation.
                            _mm_prefetch::<_MM_HINT_T0>(block.wrapping_add(PREFETCH).cast());
                            let ys = unsafe { _mm256_loadu_si256(ys.cast()) };
                            let (dot, d) = match format {
                                Format::Q4_1 => {
                                    // SAFETY: a Q4_1 block is 20 bytes: d, m, then 16 quants.
                                    let (dm, q) = unsafe {
                                        (
                                            _mm_cvtph_ps(_mm_cvtsi32_si128(
                                                block.cast::<i32>().read_unaligned(),
                                            )),
                                            _mm_loadu_si128(block.add(4).cast()),
                                        )
                                    };
                                    let q = _mm256_and_si256(
                                        _mm256_set_m128i(_mm_srli_epi16(q, 4), q),
                                        low,
                                    );
                                    minimums += _mm_cvtss_f32(_mm_shuffle_ps(dm, dm, 1)) * x.s[b];
                                    ($dot(q, ys), _mm_cvtss_f32(dm))
                                }
                                Format::Q8_0 => {
                                    // SAFETY: a Q8_0 block is 34 bytes: d, then 32 quants.
                                    let (d, q) = unsafe {
                                        (
                                            _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(
                                                block.cast::<u16>().read_unaligned(),
                                            ))),
                                            _mm256_loadu_si256(block.add(2).cast()),
                                        )
                                    };
                                    // |q| as unsigned times y with q's sign: the same products.
                                    let dot = $dot(_mm256_sign_epi8(q, q), _mm256_sign_epi8(ys, q));
                                    (dot, _mm_cvtss_f32(d))
                                }
                            };
                            acc = _mm256_fmadd_ps(
                                _mm256_set1_ps(d * x.d[b]),
                                _mm256_cvtepi32_ps(dot),
                                acc,
                            );
                        }
                        let h =
                            _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
                        let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
                        let h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
                        *o = _mm_cvtss_f32(h) + minimums;
                    }
                }
            }
        };
    }

    matmul_level!(matmul_avx2, "avx2,fma,f16c", dot_avx2);
    matmul_level!(matmul_vnni, "avx2,fma,f16c,avxvnni", dot_vnni);
}

#[cfg(test)]
mod tests {
    use super::*;
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

    /// A matrix in `format` from a seed, with its f32 values.
    fn matrix(format: Format, rows: usize, cols: usize, seed: u64) -> (Vec<u8>, Vec<f32>) {
        let mut state = seed | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut bytes = Vec::new();
        for _ in 0..rows * cols / BLOCK {
            let d = (next() % 1000) as f32 / 20_000.0;
            match format {
                Format::Q4_1 => {
                    let quants: [u8; 32] = std::array::from_fn(|_| (next() % 16) as u8);
                    let m = -((next() % 1000) as f32) / 5_000.0;
                    bytes.extend(block_q4_1(d, m, &quants));
                }
                Format::Q8_0 => {
                    let quants: [i8; 32] = std::array::from_fn(|_| (next() % 255) as i8);
                    bytes.extend(block_q8_0(d, &quants));
                }
            }
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
    }

    #[test]
    fn every_level_agrees_with_the_float_product() {
        let (rows, cols) = (37, 192);
        for format in [Format::Q4_1, Format::Q8_0] {
            let (w, values) = matrix(format, rows, cols, 7);
            let xs: Vec<Vec<f32>> = (0..3)
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
    fn rope_turns_interleaved_pairs_and_norms_scale_to_unit_rms() {
        let mut heads = [1.0, 0.0, 0.0, 1.0];
        let quarter = std::f32::consts::FRAC_PI_2;
        ops::rope_interleaved(&mut heads, 4, &[(quarter.cos(), quarter.sin()), (1.0, 0.0)]);
        assert!((heads[0]).abs() < 1e-6 && (heads[1] - 1.0).abs() < 1e-6);
        assert_eq!(&heads[2..], &[0.0, 1.0]);
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
        assert_eq!(q.quantize(&[1.0; 33]), Err(KernelError::Ragged(33)));
        let mut empty = Q8Vector::default();
        empty.quantize(&[]).expect("no blocks");
        assert_eq!(
            matmul(Format::Q8_0, &[], 2, 0, &[empty], &mut out),
            Err(KernelError::Ragged(0))
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
        /// the float additions differs.
        #[test]
        fn simd_levels_match_the_scalar_reference(
            seed in any::<u64>(),
            rows in 1usize..9,
            blocks in 1usize..7,
            vectors in 1usize..4,
            format in prop_oneof![Just(Format::Q4_1), Just(Format::Q8_0)],
        ) {
            let cols = blocks * BLOCK;
            let (w, _) = matrix(format, rows, cols, seed);
            let qs: Vec<Q8Vector> = (0..vectors)
                .map(|t| {
                    let x: Vec<f32> = (0..cols)
                        .map(|i| ((i as u64 ^ seed ^ t as u64) % 97) as f32 - 48.0)
                        .collect();
                    let mut q = Q8Vector::default();
                    q.quantize(&x).expect("whole blocks");
                    q
                })
                .collect();
            let mut reference = vec![0f32; rows * vectors];
            matmul_at(Level::Scalar, format, &w, rows, cols, &qs, &mut reference).expect("fit");
            for level in Level::all_available() {
                let mut out = vec![0f32; rows * vectors];
                matmul_at(level, format, &w, rows, cols, &qs, &mut out).expect("fit");
                for (a, b) in out.iter().zip(&reference) {
                    prop_assert!((a - b).abs() <= 1e-3 * (1.0 + b.abs()), "{level:?}: {a} vs {b}");
                }
            }
        }
    }
}
