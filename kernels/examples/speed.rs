//! Bytes of weights each level streams per second, per format (`cargo run --release -p
//! batos-kernels --example speed`): the kernels' share of the memory bandwidth.

use std::time::Instant;

use batos_kernels::{Format, Level, Q8Vector, matmul_at};

fn main() {
    prompt_products();
    model_pass();
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
#[allow(dead_code)]
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

/// A prompt's product: 32 vectors through one gate matrix, per format; vector-bytes per second.
#[allow(dead_code)]
pub fn prompt_products() {
    let (rows, cols, n) = (8960, 1536, 32);
    let xs: Vec<Q8Vector> = (0..n)
        .map(|t| {
            let x: Vec<f32> = (0..cols).map(|i| ((i + t) as f32 * 0.37).sin()).collect();
            let mut q = Q8Vector::default();
            q.quantize(&x).expect("whole blocks");
            q
        })
        .collect();
    for format in [Format::Q4_K, Format::Q6_K, Format::Q5_0] {
        let w = vec![0x11u8; rows * format.row_bytes(cols)];
        let mut out = vec![0f32; rows * n];
        let started = Instant::now();
        batos_kernels::matmul(format, &w, rows, cols, &xs, &mut out).expect("fit");
        let s = started.elapsed().as_secs_f64();
        println!(
            "prompt {format:?}: {n} vectors in {:.1} ms: {:.0} vector-rows/ms",
            s * 1e3,
            (rows * n) as f64 / s / 1e3
        );
    }
}
