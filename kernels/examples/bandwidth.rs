//! One core's memory read bandwidth (`cargo run --release -p batos-kernels --example
//! bandwidth`): 1 GiB summed as u64 lanes, the best of five passes, in GB/s. The mind's
//! benchmark prints generation speed as a share of this limit.

use std::time::Instant;

fn main() {
    let words = (1usize << 30) / 8;
    // Not zeros: a zeroed allocation maps one shared page, which never leaves the cache.
    let data: Vec<u64> = (0..words as u64).collect();
    let mut best = f64::INFINITY;
    let mut check = 0u64;
    for _ in 0..5 {
        let started = Instant::now();
        let mut lanes = [0u64; 8];
        for chunk in data.chunks_exact(8) {
            for (lane, &v) in lanes.iter_mut().zip(chunk) {
                *lane = lane.wrapping_add(v);
            }
        }
        check = check.wrapping_add(lanes.iter().fold(0, |a, &b| a.wrapping_add(b)));
        best = best.min(started.elapsed().as_secs_f64());
    }
    // The checksum keeps the sums from being optimised away.
    eprintln!("checksum {check}");
    println!("{:.1}", (words * 8) as f64 / best / 1e9);
}
