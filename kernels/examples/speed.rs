//! Bytes of weights each level streams per second, per format (`cargo run --release -p
//! batos-kernels --example speed`): the kernels' share of the memory bandwidth.

use std::time::Instant;

use batos_kernels::{Format, Level, Q8Vector, matmul_at};

fn main() {
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
