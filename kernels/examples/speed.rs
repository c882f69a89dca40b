//! The kernels' speed (`cargo run --release -p batos-kernels --example speed [SECTION]`, the
//! sections `prompt`, `pass` and `stream`, all three when none is named):
//!
//! - `prompt`: products of one model matrix with 1, 4, 8, 32 and 128 vectors at once (a
//!   prompt's tokens), per K-quant format and level, in GFLOP/s (two per multiply-add);
//! - `pass`: the 1.5B model's per-token pass over its Q4_K matrices, in GB/s;
//! - `stream`: bytes of weights each level streams per second for one vector (generation),
//!   per format: the kernels' share of the memory bandwidth.

use std::time::Instant;

use batos_kernels::{Format, Level, Q8Vector, matmul_at};

fn main() {
    let section = std::env::args().nth(1);
    let wanted = |name: &str| section.as_deref().is_none_or(|s| s == name);
    if wanted("prompt") {
        prompt_table();
    }
    if wanted("pass") {
        model_pass();
    }
    if !wanted("stream") {
        return;
    }
    // The 1.5B model's output matrix: far larger than any cache, as every product of a token is.
    let (rows, cols) = (151_936, 1536);
    let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut q = Q8Vector::default();
    q.quantize(&x).expect("whole blocks");
    let xs = [q];
    for format in [
        Format::Q4_1,
        Format::Q8_0,
        Format::Q5_0,
        Format::Q4_K,
        Format::Q6_K,
    ] {
        // Any bytes are a valid matrix once the f16 scales are finite: 0x1111 is (0.00077).
        // Not zeros: a zeroed allocation maps one shared page, which never leaves the cache.
        let w = vec![0x11u8; rows * format.row_bytes(cols)];
        let mut out = vec![0f32; rows];
        for level in Level::all_available() {
            let runs = 3;
            let started = Instant::now();
            for _ in 0..runs {
                matmul_at(level, format, &w, rows, cols, &xs, &mut out).expect("shapes fit");
            }
            let s = started.elapsed().as_secs_f64() / runs as f64;
            println!(
                "{format:?} {level:?}: {:.1} GB/s ({:.2} ms a product)",
                w.len() as f64 / s / 1e9,
                s * 1e3
            );
        }
    }
}

/// The 1.5B model's per-token pass over its matrices, all Q4_K (about 0.9 GB): one product per
/// matrix, in the model's order, as generation streams them.
pub fn model_pass() {
    let shapes = [
        (1536, 1536),
        (256, 1536),
        (256, 1536),
        (1536, 1536),
        (8960, 1536),
        (8960, 1536),
        (1536, 8960),
    ];
    let format = Format::Q4_K;
    let mats: Vec<(Vec<u8>, usize, usize)> = (0..28)
        .flat_map(|_| {
            shapes
                .iter()
                .map(|&(r, c)| (vec![0x11u8; r * format.row_bytes(c)], r, c))
        })
        .collect();
    let bytes: usize = mats.iter().map(|m| m.0.len()).sum();
    let mut xs = std::collections::HashMap::new();
    for c in [1536usize, 8960] {
        let x: Vec<f32> = (0..c).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut q = Q8Vector::default();
        q.quantize(&x).expect("whole blocks");
        xs.insert(c, [q]);
    }
    let mut out = vec![0f32; 8960];
    let started = Instant::now();
    let runs = 5;
    for _ in 0..runs {
        for (w, r, c) in &mats {
            batos_kernels::matmul(format, w, *r, *c, &xs[c], &mut out[..*r]).expect("fit");
        }
    }
    let s = started.elapsed().as_secs_f64() / runs as f64;
    println!(
        "model pass: {:.0} MB in {:.1} ms: {:.1} GB/s",
        bytes as f64 / 1e6,
        s * 1e3,
        bytes as f64 / s / 1e9
    );
}

/// Quantized copies of `n` vectors of `cols` values.
fn vectors(n: usize, cols: usize) -> Vec<Q8Vector> {
    (0..n)
        .map(|t| {
            let x: Vec<f32> = (0..cols)
                .map(|i| ((i + 3 * t) as f32 * 0.37).sin())
                .collect();
            let mut q = Q8Vector::default();
            q.quantize(&x).expect("whole blocks");
            q
        })
        .collect()
}

/// A prompt's products: the feed-forward gate matrix (8960 × 1536, which the L3 cache holds, as
/// a prompt's reuse of each row makes it compute-bound rather than memory-bound) times `n`
/// vectors, per format and SIMD level (the scalar reference is too slow to be worth timing).
/// The best of several runs of at least 0.2 s each, since the machine is shared.
pub fn prompt_table() {
    let (rows, cols) = (8960, 1536);
    let counts = [1usize, 4, 8, 32, 128];
    print!("{:<22}", "prompt GFLOP/s");
    for n in counts {
        print!("{:>9}", format!("n={n}"));
    }
    println!();
    for format in [Format::Q4_K, Format::Q6_K] {
        // Any bytes are a valid matrix once the f16 scales are finite (see `main`).
        let w = vec![0x11u8; rows * format.row_bytes(cols)];
        for level in Level::all_available() {
            if level == Level::Scalar {
                continue;
            }
            print!("{:<22}", format!("{format:?} {level:?}"));
            for n in counts {
                let xs = vectors(n, cols);
                let mut out = vec![0f32; rows * n];
                let mut best = f64::INFINITY;
                for _ in 0..5 {
                    let (started, mut runs) = (Instant::now(), 0);
                    while runs == 0 || started.elapsed().as_secs_f64() < 0.2 {
                        matmul_at(level, format, &w, rows, cols, &xs, &mut out).expect("fit");
                        runs += 1;
                    }
                    best = best.min(started.elapsed().as_secs_f64() / f64::from(runs));
                }
                print!("{:>9.1}", 2.0 * (rows * cols * n) as f64 / best / 1e9);
            }
            println!();
        }
    }
}
