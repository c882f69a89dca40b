//! Method benchmarks: calls per second (each call in a fresh store, end to end through `send`),
//! and compiling one method with the forge against `cargo build` of the same method as a crate.
//! `scripts/bench/compare` prints them in the README's table.

use std::hint::black_box;
use std::path::Path;
use std::process::Command;

use batos::forge::default_cache_dir;
use batos::image::{Durability, Image, Origin};
use batos::method::Runtime;
use batos::sandbox::Limits;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

const TRIVIAL: &str = "use batos_sdk::prelude::*;\n\
pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {\n    Ok(json!(1))\n}\n";

const THREE_HOST_CALLS: &str = "use batos_sdk::prelude::*;\n\
pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {\n    \
    let a = me.get(\"count\").and_then(|v| v.as_i64()).unwrap_or(0);\n    \
    let b = me.get(\"count\").and_then(|v| v.as_i64()).unwrap_or(0);\n    \
    log(\"read twice\");\n    Ok(json!(a + b))\n}\n";

fn calls(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut image = Image::create(&dir.path().join("bench.db"), Durability::Full).expect("image");
    let methods = Runtime::new(default_cache_dir(), Limits::default());
    let (target, _) = image
        .transact("bench", "target", |tx| {
            let mut slots = serde_json::Map::new();
            slots.insert("count".into(), json!(20));
            tx.create_object(&[], None, slots)
        })
        .expect("object");
    methods
        .install(
            &mut image,
            target,
            "trivial",
            TRIVIAL,
            Origin::Architect,
            "bench",
        )
        .expect("install trivial");
    methods
        .install(
            &mut image,
            target,
            "three",
            THREE_HOST_CALLS,
            Origin::Architect,
            "bench",
        )
        .expect("install three");
    let mut group = c.benchmark_group("call");
    for selector in ["trivial", "three"] {
        group.bench_function(format!("{selector}_fresh_store"), |b| {
            b.iter(|| {
                let sent = methods
                    .send(&mut image, black_box(target), selector, vec![], "bench")
                    .expect("send");
                black_box(sent)
            })
        });
    }
    group.finish();
}

/// A cargo project for one method, depending on the SDK by path, with its dependencies built.
fn cargo_project(root: &Path) -> std::path::PathBuf {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk");
    let project = root.join("method-crate");
    std::fs::create_dir_all(project.join("src")).expect("mkdir");
    std::fs::write(
        project.join("Cargo.toml"),
        format!(
            "[package]\nname = \"method\"\nversion = \"0.0.0\"\nedition = \"2024\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n\
             [dependencies]\nbatos-sdk = {{ path = \"{}\" }}\n\n[workspace]\n\n[profile.release]\nopt-level = 1\ndebug = false\npanic = \"abort\"\n",
            sdk.display()
        ),
    )
    .expect("Cargo.toml");
    let _ = std::fs::copy(sdk.join("Cargo.lock"), project.join("Cargo.lock"));
    project
}

fn cargo_build(project: &Path, source: &str) {
    let glue = include_str!("../../guest-sdk/glue.rs");
    std::fs::write(project.join("src/lib.rs"), format!("{source}\n{glue}")).expect("lib.rs");
    let status = Command::new("cargo")
        .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2"])
        .current_dir(project)
        // A lasting target directory: the SDK's dependencies build once, not per run.
        .env(
            "CARGO_TARGET_DIR",
            default_cache_dir().join("bench-cargo-target"),
        )
        .status()
        .expect("cargo runs");
    assert!(status.success(), "cargo build of the method crate failed");
}

fn compile(c: &mut Criterion) {
    let methods = Runtime::new(default_cache_dir(), Limits::default());
    let forge = methods.forge().expect("forge");
    let root = tempfile::tempdir().expect("tempdir");
    let project = cargo_project(root.path());
    // Build the dependencies once, so both sides compile only the method itself.
    cargo_build(&project, THREE_HOST_CALLS);
    let mut n = 0u64;
    let mut group = c.benchmark_group("compile");
    group.sample_size(10);
    group.bench_function("forge_rustc", |b| {
        b.iter(|| {
            n += 1;
            // A new comment each time: a new source, so the forge's cache never answers.
            let source = format!("{THREE_HOST_CALLS}// variant {n} {}\n", std::process::id());
            black_box(forge.compile(&source).expect("compiles"))
        })
    });
    // Source to an installed, checked method, in-process as the host does it: source gate,
    // rustc, wasmtime's compile and the component gate, the install transaction.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut image = Image::create(&dir.path().join("install.db"), Durability::Full).expect("image");
    let lobby = image
        .resolve(&batos::object::ObjRef::Name("lobby".into()))
        .expect("lobby");
    group.bench_function("install_from_source", |b| {
        b.iter(|| {
            n += 1;
            let source = format!("{THREE_HOST_CALLS}// install {n} {}\n", std::process::id());
            black_box(
                methods
                    .install(
                        &mut image,
                        lobby,
                        "three",
                        &source,
                        Origin::Architect,
                        "bench",
                    )
                    .expect("installs"),
            )
        })
    });
    group.bench_function("cargo_build_crate", |b| {
        b.iter(|| {
            n += 1;
            cargo_build(&project, &format!("{THREE_HOST_CALLS}// variant {n}\n"));
        })
    });
    group.finish();
}

criterion_group!(benches, calls, compile);
criterion_main!(benches);
