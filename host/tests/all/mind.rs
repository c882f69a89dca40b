//! The mind: the default model imported into a real image, its tokenizer against llama.cpp's
//! ids, loading straight from the blob, generation from file and from image, damage detection.
//!
//! These tests need the default model that `scripts/setup` puts in the model cache; without it
//! they fail and say so (they never skip).

use std::path::PathBuf;
use std::sync::OnceLock;

use batos::image::{Durability, Image};
use batos::mind::{
    self, Backend, Engine, GenerateRequest, ImportOptions, MindInfo, StopReason, weights,
};
use candle_core::Device;
use candle_core::quantized::gguf_file::{self, Content};

use crate::support::{Scratch, stderr, stdout};

/// The small model the suite uses (see `support::MODEL`).
fn small_model() -> &'static mind::catalog::Known {
    mind::catalog::find(crate::support::MODEL).expect("a known model")
}

fn model_path() -> PathBuf {
    let path = mind::catalog::find(crate::support::MODEL)
        .and_then(|m| m.path())
        .expect("a model cache path");
    assert!(
        path.exists(),
        "the default model is missing at {}: run scripts/setup",
        path.display()
    );
    path
}

/// Imports `file` into `image` as the test actor, without progress.
fn import(
    image: &mut Image,
    file: &std::path::Path,
    options: &ImportOptions,
) -> Result<MindInfo, mind::MindError> {
    weights::import(image, file, options, "test", &mut |_, _| {}).map(|(info, _)| info)
}

/// A new image in a scratch directory with the default model imported: the image (closed),
/// its path and the mind's metadata.
fn imported(options: &ImportOptions) -> (Scratch, PathBuf, MindInfo) {
    let scratch = Scratch::new();
    let path = scratch.image_path();
    let mut image = Image::create(&path, Durability::Normal).expect("image");
    let info = import(&mut image, &model_path(), options).expect("import");
    (scratch, path, info)
}

/// One image with the default model imported, shared by the tests that only read it.
fn shared_image() -> &'static PathBuf {
    static IMAGE: OnceLock<(Scratch, PathBuf)> = OnceLock::new();
    let (_, path) = IMAGE.get_or_init(|| {
        let (scratch, path, _) = imported(&ImportOptions::default());
        (scratch, path)
    });
    path
}

fn engine_from_file() -> Engine {
    Engine::load(
        std::fs::File::open(model_path()).expect("model file"),
        &Device::Cpu,
    )
    .expect("load from file")
}

fn engine_from_image(path: &std::path::Path) -> Engine {
    let image = Image::open_read_only(path).expect("image");
    let info = MindInfo::read(&image).expect("mind info");
    Engine::load(image.blob_reader(info.blob).expect("blob"), &Device::Cpu).expect("load")
}

fn ids(engine: &Engine, text: &str) -> Vec<u32> {
    engine.tokenizer().encode(text).expect("encode")
}

#[test]
fn tokenizer_gives_llama_cpps_ids_for_the_default_model() {
    let engine = engine_from_image(shared_image());
    // Ids from llama.cpp's own tokenizer on the same GGUF (scripts/bench/llamacpp.py).
    assert_eq!(ids(&engine, "Hello world"), vec![19556, 905]);
    assert_eq!(ids(&engine, "<|im_start|>user"), vec![1, 4093]);
    let chat = "<|im_start|>user\nWrite a Rust function that returns the sum of a slice of i64.<|im_end|>\n<|im_start|>assistant\n";
    assert_eq!(
        ids(&engine, chat),
        vec![
            1, 4093, 198, 19161, 253, 36828, 1517, 338, 6765, 260, 2028, 282, 253, 17061, 282,
            2056, 38, 36, 30, 2, 198, 1, 520, 9531, 198
        ]
    );
    // SmolLM splits digits one by one.
    assert_eq!(ids(&engine, "2024").len(), 4);
}

#[test]
fn tokenizer_round_trips_exactly() {
    let engine = engine_from_image(shared_image());
    let tokenizer = engine.tokenizer();
    for text in [
        "Hello world",
        "fn run(ctx: &Ctx, args: &[Value]) -> Result<Value, String> { Ok(json!(1)) }",
        "0123456789 3.14159 -42 1e10",
        "  leading, trailing  \n\n\ttabs   and    runs   ",
        "héllo wörld — 日本語のテキスト 🦀 Ünïcödé",
        "<|im_start|>system\nYou are ROBIN.<|im_end|>\n<|im_start|>user\nhi<|im_end|>",
        "",
    ] {
        let encoded = tokenizer.encode(text).expect("encode");
        let decoded = tokenizer.decode(&encoded, true).expect("decode");
        assert_eq!(decoded, text, "round trip of {text:?} via {encoded:?}");
    }
}

#[test]
fn weights_loaded_from_the_image_equal_the_files() {
    let image = Image::open_read_only(shared_image()).expect("image");
    let info = MindInfo::read(&image).expect("info");
    assert_eq!(info.sha256, small_model().sha256);
    assert_eq!(info.architecture, "llama");
    assert_eq!(info.quantization, "q4_1");
    assert_eq!(info.vocab_size, 49152);
    let mut from_blob = std::io::BufReader::new(image.blob_reader(info.blob).expect("blob"));
    let mut from_file = std::io::BufReader::new(std::fs::File::open(model_path()).expect("file"));
    let a = Content::read(&mut from_blob).expect("gguf from blob");
    let b = Content::read(&mut from_file).expect("gguf from file");
    assert_eq!(a.tensor_infos.len(), b.tensor_infos.len());
    let mut names: Vec<_> = a.tensor_infos.keys().cloned().collect();
    names.sort();
    for name in names {
        let x = a
            .tensor(&mut from_blob, &name, &Device::Cpu)
            .expect("tensor from blob");
        let y = b
            .tensor(&mut from_file, &name, &Device::Cpu)
            .expect("tensor from file");
        assert_eq!(x.dtype(), y.dtype(), "{name}");
        assert_eq!(x.shape(), y.shape(), "{name}");
        assert!(
            x.data().expect("data") == y.data().expect("data"),
            "{name} differs"
        );
    }
}

#[test]
fn greedy_generation_is_deterministic_and_the_same_from_file_and_image() {
    let request = GenerateRequest {
        prompt: "What is a prototype object?".into(),
        max_tokens: 12,
        ..GenerateRequest::default()
    };
    let mut from_image = engine_from_image(shared_image());
    let first = from_image
        .generate(&request, &mut |_| std::ops::ControlFlow::Continue(()))
        .expect("generate");
    let again = from_image
        .generate(&request, &mut |_| std::ops::ControlFlow::Continue(()))
        .expect("generate");
    let from_file = engine_from_file()
        .generate(&request, &mut |_| std::ops::ControlFlow::Continue(()))
        .expect("generate");
    assert_eq!(first.tokens, 12);
    assert_eq!(first.stop, StopReason::MaxTokens);
    assert_eq!(first.ids, again.ids);
    assert_eq!(first.ids, from_file.ids);
    assert_eq!(first.text, from_file.text);
    assert!(!first.text.is_empty());
}

/// `file` loaded on `backend`.
fn load_on(file: &std::path::Path, backend: Backend) -> Engine {
    Engine::load_with(
        std::fs::File::open(file).expect("model file"),
        &Device::Cpu,
        backend,
    )
    .expect("load")
}

/// 24 greedy tokens, to the end whatever the model says: what the backends are compared on.
fn sum_request() -> GenerateRequest {
    GenerateRequest {
        prompt: "Write a Rust function that returns the sum of a slice of i64.".into(),
        max_tokens: 24,
        ignore_eos: true,
        ..GenerateRequest::default()
    }
}

#[test]
fn the_native_pass_and_candles_agree_on_the_default_model() {
    let request = sum_request();
    let mut native = load_on(&model_path(), Backend::Native);
    let mut candle = load_on(&model_path(), Backend::Candle);
    assert_eq!(native.backend(), Backend::Native);
    assert_eq!(candle.backend(), Backend::Candle);
    // The shipped file is Q4_1: what `auto` runs natively.
    assert_eq!(engine_from_file().backend(), Backend::Native);
    let a = native
        .generate(&request, &mut |_| std::ops::ControlFlow::Continue(()))
        .expect("native");
    let b = candle
        .generate(&request, &mut |_| std::ops::ControlFlow::Continue(()))
        .expect("candle");
    // Same weights, same 8-bit activations; only the order of float sums differs, so greedy
    // decoding agrees token for token (measured: the first 63 of 64 here).
    assert_eq!(a.ids, b.ids, "native {:?}\ncandle {:?}", a.text, b.text);
    // A second generation on the same engine starts from a clean cache.
    let again = native
        .generate(&request, &mut |_| std::ops::ControlFlow::Continue(()))
        .expect("native again");
    assert_eq!(again.ids, a.ids);
}

/// The Qwen2.5-Coder 0.5B file, fetched by `scripts/setup` (469 MiB): a qwen2 model with Q5_0,
/// Q8_0, Q4_K and Q6_K matrices, every block format and the architecture the default 1.5B has.
fn qwen_path() -> PathBuf {
    let known = mind::catalog::find("qwen2.5-coder-0.5b").expect("a known model");
    let path = known.path().expect("a model cache path");
    assert!(
        path.exists(),
        "the Qwen2.5-Coder 0.5B model is missing at {}: run scripts/setup",
        path.display()
    );
    path
}

#[test]
fn the_native_pass_and_candles_agree_on_qwen2_with_k_quants() {
    let request = sum_request();
    let mut native = load_on(&qwen_path(), Backend::Native);
    let mut candle = load_on(&qwen_path(), Backend::Candle);
    assert_eq!(native.backend(), Backend::Native);
    // Qwen's own default system message comes from its template.
    let text = native.prompt_text(&request).expect("a template");
    assert!(
        text.starts_with("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud."),
        "{text}"
    );
    let a = native
        .generate(&request, &mut |_| std::ops::ControlFlow::Continue(()))
        .expect("native");
    let b = candle
        .generate(&request, &mut |_| std::ops::ControlFlow::Continue(()))
        .expect("candle");
    assert_eq!(a.ids, b.ids, "native {:?}\ncandle {:?}", a.text, b.text);
    assert!(a.text.contains("Rust"), "{:?}", a.text);
    assert_eq!(a.cached_prompt_tokens, 0);
    // The same prompt again starts from the saved state of all but its last token, and a
    // prompt that shares the system message and part of the request from that of the shared
    // part; the answers are those of a cold start.
    let again = native
        .generate(&request, &mut |_| std::ops::ControlFlow::Continue(()))
        .expect("native again");
    assert_eq!(again.cached_prompt_tokens, a.prompt_tokens - 1);
    assert_eq!(again.ids, a.ids);
    let other = GenerateRequest {
        prompt: "Write a Rust function that returns the product of a slice of i64.".into(),
        ..request.clone()
    };
    let warm = native
        .generate(&other, &mut |_| std::ops::ControlFlow::Continue(()))
        .expect("warm");
    let cold = candle
        .generate(&other, &mut |_| std::ops::ControlFlow::Continue(()))
        .expect("cold");
    assert!(
        warm.cached_prompt_tokens > 20,
        "{}",
        warm.cached_prompt_tokens
    );
    assert!(warm.cached_prompt_tokens < warm.prompt_tokens);
    assert_eq!(warm.ids, cold.ids);
}

#[test]
fn the_native_pass_says_what_it_does_not_cover() {
    use candle_core::quantized::{GgmlDType, QTensor};
    let header = |arch: &str, dtype: GgmlDType| {
        let tensor = candle_core::Tensor::zeros((32, 256), candle_core::DType::F32, &Device::Cpu)
            .expect("tensor");
        let q = QTensor::quantize(&tensor, dtype).expect("quantize");
        let mut bytes = std::io::Cursor::new(Vec::new());
        let arch = gguf_file::Value::String(arch.into());
        gguf_file::write(
            &mut bytes,
            &[("general.architecture", &arch)],
            &[("blk.0.attn_q.weight", &q)],
        )
        .expect("gguf");
        bytes.set_position(0);
        Content::read(&mut bytes).expect("header")
    };
    for dtype in [
        GgmlDType::Q4_1,
        GgmlDType::Q8_0,
        GgmlDType::Q5_0,
        GgmlDType::Q4K,
        GgmlDType::Q6K,
    ] {
        for arch in ["llama", "qwen2"] {
            assert_eq!(mind::llama::Llama::supports(&header(arch, dtype)), None);
        }
    }
    // A block type the native pass lacks is named, with its tensor (candle runs it).
    let why = mind::llama::Llama::supports(&header("llama", GgmlDType::Q5K)).expect("refused");
    assert!(
        why.contains("blk.0.attn_q.weight") && why.contains("Q5K"),
        "{why}"
    );
    let why = mind::llama::Llama::supports(&header("phi3", GgmlDType::Q8_0)).expect("refused");
    assert!(why.contains("phi3"), "{why}");
}

#[test]
fn stop_sequences_and_cancellation_end_a_generation() {
    let mut engine = engine_from_image(shared_image());
    let free = GenerateRequest {
        prompt: "Count from one to twenty in words, separated by commas.".into(),
        max_tokens: 24,
        ..GenerateRequest::default()
    };
    let full = engine
        .generate(&free, &mut |_| std::ops::ControlFlow::Continue(()))
        .expect("generate");
    // Stop at a piece of text from the middle of what the model writes: the text ends right
    // before its first occurrence.
    let mut middle = full.text.len() / 2;
    while !full.text.is_char_boundary(middle) {
        middle += 1;
    }
    let stop: String = full.text[middle..].chars().take(3).collect();
    assert!(
        !stop.is_empty(),
        "the model wrote too little: {:?}",
        full.text
    );
    let at = full.text.find(&stop).expect("the stop text occurs");
    let stopped = engine
        .generate(
            &GenerateRequest {
                stop: vec![stop.clone()],
                ..free.clone()
            },
            &mut |_| std::ops::ControlFlow::Continue(()),
        )
        .expect("generate");
    assert_eq!(stopped.stop, StopReason::StopSequence);
    assert_eq!(stopped.text, full.text[..at], "stop {stop:?}");
    // A caller that breaks after the first piece of text gets a cancelled generation.
    let mut pieces = 0;
    let cancelled = engine
        .generate(&free, &mut |piece| {
            if !piece.is_empty() {
                pieces += 1;
            }
            if pieces > 0 {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        })
        .expect("generate");
    assert_eq!(cancelled.stop, StopReason::Cancelled);
    assert!(cancelled.tokens < full.tokens);
}

#[test]
fn bad_generation_requests_are_refused_clearly() {
    let mut engine = engine_from_image(shared_image());
    let base = GenerateRequest {
        prompt: "hi".into(),
        ..GenerateRequest::default()
    };
    for (request, needle) in [
        (
            GenerateRequest {
                max_tokens: 0,
                ..base.clone()
            },
            "max_tokens",
        ),
        (
            GenerateRequest {
                temperature: -1.0,
                ..base.clone()
            },
            "temperature",
        ),
        (
            GenerateRequest {
                top_p: Some(1.5),
                ..base.clone()
            },
            "top_p",
        ),
        (
            GenerateRequest {
                max_tokens: 1_000_000,
                ..base.clone()
            },
            "context",
        ),
    ] {
        let err = engine
            .generate(&request, &mut |_| std::ops::ControlFlow::Continue(()))
            .expect_err("refused");
        assert!(err.to_string().contains(needle), "{err}");
    }
}

#[test]
fn a_damaged_chunk_is_detected_at_load_never_a_garbage_model() {
    let (_scratch, path, info) = imported(&ImportOptions::default());
    // Damage one byte of one chunk behind the image's back (the triggers forbid it otherwise).
    let conn = rusqlite::Connection::open(&path).expect("sqlite");
    conn.execute_batch(
        "DROP TRIGGER blob_chunks_never_updated;
         UPDATE blob_chunks SET data = CAST(substr(data, 1, 1000) || x'00' || substr(data, 1002) AS BLOB)
          WHERE seq = 3;",
    )
    .expect("damage");
    drop(conn);
    let image = Image::open_read_only(&path).expect("image");
    let err = Engine::load(image.blob_reader(info.blob).expect("blob"), &Device::Cpu)
        .expect_err("a damaged model must not load");
    let text = err.to_string();
    assert!(
        text.contains("damaged") && text.contains("chunk 3"),
        "{text}"
    );
}

#[test]
fn import_refuses_what_is_not_a_llama_gguf_and_writes_nothing() {
    let scratch = Scratch::new();
    let path = scratch.image_path();
    let mut image = Image::create(&path, Durability::Normal).expect("image");
    let before = image.newest_tx().expect("tx");
    let junk = scratch.dir.path().join("junk.gguf");
    std::fs::write(&junk, b"definitely not a gguf file").expect("write");
    let err = import(&mut image, &junk, &ImportOptions::default()).expect_err("refused");
    assert!(err.to_string().contains("not a usable model"), "{err}");
    // Hostile headers: lengths and counts far past the file are refused, not allocated.
    let mut huge_string = b"GGUF".to_vec();
    huge_string.extend(3u32.to_le_bytes());
    huge_string.extend(0u64.to_le_bytes());
    huge_string.extend(1u64.to_le_bytes());
    huge_string.extend(4u64.to_le_bytes());
    huge_string.extend(b"name");
    huge_string.extend(8u32.to_le_bytes());
    huge_string.extend((1u64 << 60).to_le_bytes());
    let mut many_tensors = b"GGUF".to_vec();
    many_tensors.extend(3u32.to_le_bytes());
    many_tensors.extend((1u64 << 29).to_le_bytes());
    many_tensors.extend(0u64.to_le_bytes());
    for (name, bytes) in [("huge.gguf", huge_string), ("many.gguf", many_tensors)] {
        let path = scratch.dir.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        let err = import(&mut image, &path, &ImportOptions::default()).expect_err("refused");
        let text = err.to_string();
        assert!(
            text.contains("not a usable model") && !text.contains('\n'),
            "{text}"
        );
    }
    // A well-formed GGUF of another architecture.
    let other = scratch.dir.path().join("gpt2.gguf");
    {
        use candle_core::quantized::gguf_file::{self, Value};
        let mut file = std::fs::File::create(&other).expect("create");
        let arch = Value::String("gpt2".into());
        gguf_file::write(&mut file, &[("general.architecture", &arch)], &[]).expect("gguf");
    }
    let err = import(&mut image, &other, &ImportOptions::default()).expect_err("refused");
    assert!(err.to_string().contains("architecture `gpt2`"), "{err}");
    let missing = scratch.dir.path().join("missing.gguf");
    let err = import(&mut image, &missing, &ImportOptions::default()).expect_err("refused");
    assert!(err.to_string().contains("missing.gguf"), "{err}");
    // A wrong pinned hash is refused before anything commits.
    let options = ImportOptions {
        expect_sha256: Some("0".repeat(64)),
        ..ImportOptions::default()
    };
    let err = import(&mut image, &model_path(), &options).expect_err("refused");
    assert!(err.to_string().contains("sha256"), "{err}");
    assert_eq!(image.newest_tx().expect("tx"), before);
    assert!(matches!(
        MindInfo::read(&image),
        Err(mind::MindError::NoMind)
    ));
}

#[test]
fn requantized_import_loads_and_generates() {
    let (_scratch, path, info) = imported(&ImportOptions {
        quantize: Some(mind::Quantize::Q8_0),
        ..ImportOptions::default()
    });
    assert_eq!(info.quantization, "q8_0");
    assert_eq!(info.requantized_from.as_deref(), Some("q4_1"));
    assert_eq!(info.source_sha256, small_model().sha256);
    assert_ne!(info.sha256, info.source_sha256);
    let mut engine = engine_from_image(&path);
    let out = engine
        .generate(
            &GenerateRequest {
                prompt: "Say hello.".into(),
                max_tokens: 6,
                ..GenerateRequest::default()
            },
            &mut |_| std::ops::ControlFlow::Continue(()),
        )
        .expect("generate");
    assert!(
        out.tokens >= 1 || out.stop == StopReason::EndOfTurn,
        "{out:?}"
    );
    assert!(out.tokens <= 6);
}

#[test]
fn cli_mind_info_and_generate_stream_from_the_image() {
    let image = shared_image();
    let out = crate::support::batos_at(image, &["mind", "info"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("gpt2/smollm"), "{}", stdout(&out));
    let out = crate::support::batos_at(
        image,
        &[
            "--json",
            "mind",
            "generate",
            "Name a colour.",
            "--max-tokens",
            "5",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let result: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert!(
        result["tokens"]
            .as_u64()
            .is_some_and(|n| (1..=5).contains(&n))
    );
    assert!(stderr(&out).contains("tokens/s"), "{}", stderr(&out));
    // No mind: a clear error.
    let scratch = Scratch::new().with_image();
    let out = scratch.batos(&["mind", "generate", "hi"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no mind"), "{}", stderr(&out));
    let out = scratch.batos(&["mind", "generate", "hi", "--device", "cuda"]);
    assert!(stderr(&out).contains("cuda"), "{}", stderr(&out));
}

#[test]
fn the_host_serves_generate_off_its_event_loop() {
    let scratch = Scratch::new();
    std::fs::copy(shared_image(), scratch.image_path()).expect("copy the image");
    let host = crate::support::Host::start_with(scratch, "normal", "image");
    let dealer = host.dealer();
    let reply = crate::support::ask(&dealer, serde_json::json!({"id": 1, "op": "mind"}));
    assert_eq!(reply["result"]["tokenizer"], "gpt2/smollm", "{reply}");
    // A long generation goes to the mind's thread; pings and writes are answered meanwhile.
    let long = host.dealer();
    long.send(
        serde_json::json!({"id": "long", "op": "generate", "prompt": "Tell me a long story.", "max_tokens": 48})
            .to_string()
            .as_bytes(),
        0,
    )
    .expect("send");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let started = std::time::Instant::now();
    let ping = crate::support::ask(&dealer, serde_json::json!({"id": 2, "op": "ping"}));
    let ping_took = started.elapsed();
    assert_eq!(ping["ok"], true);
    let sent = crate::support::ask(
        &dealer,
        serde_json::json!({"id": 3, "op": "set", "to": "lobby", "slot": "n", "value": 1}),
    );
    assert_eq!(sent["ok"], true, "{sent}");
    let reply: serde_json::Value =
        serde_json::from_slice(&long.recv_bytes(0).expect("reply")).expect("json");
    let generation_took = started.elapsed();
    assert_eq!(reply["id"], "long");
    assert_eq!(reply["ok"], true, "{reply}");
    let result = &reply["result"];
    assert!(
        result["text"].as_str().is_some_and(|t| !t.is_empty()),
        "{result}"
    );
    assert!(result["tokens"].as_u64().is_some_and(|n| n > 0));
    assert!(result["tokens_per_s"].as_f64().is_some());
    // Ordering, not timing: the ping came back while the generation was still running.
    assert!(
        ping_took < generation_took,
        "{ping_took:?} vs {generation_took:?}"
    );
    // A malformed generate is refused by the usual path.
    let bad = crate::support::ask(&dealer, serde_json::json!({"id": 4, "op": "generate"}));
    assert_eq!(bad["error"]["code"], "bad-request", "{bad}");
    let bad = crate::support::ask(
        &dealer,
        serde_json::json!({"id": 5, "op": "generate", "prompt": "x", "max_tokens": 0}),
    );
    assert_eq!(bad["error"]["code"], "bad-request", "{bad}");
    // SIGTERM: the mind's thread ends with the host.
    let mut host = host;
    let status = host.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_host_without_a_mind_says_so() {
    let host = crate::support::Host::start_with(Scratch::new(), "normal", "none");
    let dealer = host.dealer();
    let reply = crate::support::ask(
        &dealer,
        serde_json::json!({"id": 1, "op": "generate", "prompt": "hi"}),
    );
    assert_eq!(reply["error"]["code"], "no-mind", "{reply}");
    let reply = crate::support::ask(&dealer, serde_json::json!({"id": 2, "op": "mind"}));
    assert_eq!(reply["error"]["code"], "no-mind", "{reply}");
}

#[test]
fn init_without_the_default_model_says_how_to_get_it_and_leaves_no_image() {
    let scratch = Scratch::new();
    let init = |model: &std::ffi::OsStr| {
        std::process::Command::new(env!("CARGO_BIN_EXE_batos"))
            .arg("--image")
            .arg(scratch.image_path())
            .args(["init", "--mind", "image"])
            .env("BATOS_MODEL", model)
            // An empty model cache: no known model is fetched there.
            .env("XDG_CACHE_HOME", scratch.dir.path())
            .output()
            .expect("batos")
    };
    let out = init(scratch.dir.path().join("nowhere.gguf").as_os_str());
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no model file at"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("batos mind list"), "{}", stderr(&out));
    assert!(!scratch.image_path().exists());
    let out = init("qwen2.5-coder-0.5b".as_ref());
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("scripts/fetch-model qwen2.5-coder-0.5b"),
        "{}",
        stderr(&out)
    );
    assert!(!scratch.image_path().exists());
}

/// kill -9 in the middle of importing the 0.5B (469 MiB): no half-imported mind is visible, the
/// image is intact, and the next import is clean.
#[test]
fn an_import_killed_halfway_leaves_no_mind_and_the_next_import_is_clean() {
    let scratch = Scratch::new();
    assert!(scratch.batos(&["init", "--mind", "none"]).status.success());
    let wal = scratch.dir.path().join("image.db-wal");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_batos"))
        .arg("--image")
        .arg(scratch.image_path())
        .args(["mind", "import", "qwen2.5-coder-0.5b"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("batos");
    // Kill it once a good part of the file is in the write-ahead log, uncommitted.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let written = std::fs::metadata(&wal).map_or(0, |m| m.len());
        if written > 100 << 20 {
            break;
        }
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the import ended before it could be killed"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the import never got going"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().expect("kill -9");
    child.wait().expect("reaped");
    let out = scratch.batos(&["mind", "info"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no mind"), "{}", stderr(&out));
    crate::support::integrity_ok(&scratch.image_path());
    let out = scratch.batos(&["mind", "import", "qwen2.5-coder-0.5b"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = scratch.batos(&["--json", "mind", "info"]);
    let info: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(info["architecture"], "qwen2");
    assert_eq!(
        info["sha256"],
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    );
    // One blob: the killed import left no chunks behind.
    let conn = rusqlite::Connection::open(scratch.image_path()).expect("sqlite");
    let blobs: i64 = conn
        .query_row("SELECT COUNT(*) FROM blobs", [], |r| r.get(0))
        .expect("blobs");
    assert_eq!(blobs, 1);
}

/// The helper threads share every product's rows (and, for a prompt, turn their shares
/// token-major themselves): two threads give exactly one thread's greedy tokens.
#[test]
fn two_inference_threads_give_one_threads_tokens() {
    let run = |threads: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_batos"))
            .env("BATOS_MIND_THREADS", threads)
            .args([
                "--json",
                "mind",
                "generate",
                "--max-tokens",
                "24",
                "--ignore-eos",
                "--file",
            ])
            .arg(qwen_path())
            .arg("Write a Rust function that returns the sum of a slice of i64.")
            .output()
            .expect("batos runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert!(
            result["prompt_tokens"].as_u64().unwrap_or(0) > 16,
            "{result}"
        );
        result["ids"].clone()
    };
    let one = run("1");
    assert_eq!(one.as_array().map(Vec::len), Some(24), "{one}");
    assert_eq!(run("2"), one);
}
