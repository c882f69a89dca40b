//! Image benchmarks: lookup through an 8-deep delegation chain, and durable commits of one slot
//! write each. `scripts/bench/compare` runs these beside the seed's design (ZODB) and prints the
//! ratios; see the README's benchmark table.

use std::hint::black_box;

use batos::image::{Durability, Image};
use batos::object::{Oid, Slot};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

/// A chain of 9 objects on a real image file; the slot lives only on the root-most one.
fn chain(image: &mut Image) -> Oid {
    let (leaf, _) = image
        .transact("bench", "chain", |tx| {
            let mut slots = serde_json::Map::new();
            slots.insert("answer".into(), json!(42));
            let mut current = tx.create_object(&[], None, slots)?;
            for _ in 0..8 {
                current = tx.create_object(&[current], None, serde_json::Map::new())?;
            }
            Ok::<_, batos::image::ImageError>(current)
        })
        .expect("chain");
    leaf
}

fn lookup(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut image = Image::create(&dir.path().join("bench.db"), Durability::Full).expect("image");
    let leaf = chain(&mut image);
    c.bench_function("lookup_8_deep", |b| {
        b.iter(|| {
            let found = image
                .lookup(black_box(leaf), black_box("answer"))
                .expect("lookup");
            black_box(found)
        })
    });
}

fn durable_commit(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut image = Image::create(&dir.path().join("bench.db"), Durability::Full).expect("image");
    let (counter, _) = image
        .transact("bench", "counter", |tx| {
            tx.create_object(&[], None, serde_json::Map::new())
        })
        .expect("counter");
    let mut n = 0i64;
    let mut group = c.benchmark_group("commit");
    group.sample_size(30);
    group.bench_function("durable_commit_one_slot", |b| {
        b.iter(|| {
            n += 1;
            image
                .transact("bench", "tick", |tx| {
                    tx.set_slot(counter, "count", Slot::Value(json!(n)))
                })
                .expect("commit")
        })
    });
    group.finish();
}

criterion_group!(benches, lookup, durable_commit);
criterion_main!(benches);
