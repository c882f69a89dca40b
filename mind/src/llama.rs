//! The native forward pass for the Llama family (Llama and Qwen2): the GGUF's quantized matrices
//! as they are stored, products by `batos-kernels`, and nothing allocated per token.
//!
//! Why it exists: generating one token reads every weight once, so a CPU generates as fast as
//! it streams the weights. candle's quantized models copy the whole KV cache at every token,
//! allocate a tensor per operation and have no SIMD kernel for some formats (Q4_1); this path
//! reads Q4_1, Q8_0, Q5_0, Q4_K and Q6_K straight from the file's blocks with AVX2 / AVX-VNNI /
//! AVX-512 VNNI kernels, keeps the KV cache in place and reuses its buffers. Models it does not
//! cover (other formats, other architectures, a GPU) run on candle; see [`Llama::supports`].
//!
//! The arithmetic is the GGUF Llama's: RMS norms, grouped-query attention with a rotary
//! embedding, a SiLU-gated feed-forward, a tied or separate output matrix. The two families
//! differ in two places ([`Family`]): Qwen2 adds biases to the query, key and value products
//! and turns NEOX pairs (`i, i + head_dim/2`) where Llama turns ggml's interleaved pairs
//! (`2i, 2i + 1`). Activations are quantized to 8 bits per 32-value block before each product,
//! as llama.cpp and candle do.
//!
//! With more than one thread, helper threads each take a share of every product's rows (the
//! weights are shared read-only, the quantized input by reference count; each helper answers
//! its rows). A helper waits for the next product spinning briefly, then asleep, so a busy
//! machine costs it a wake-up, not a stolen core.

use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use batos_kernels::ops::{self, Heads};
use batos_kernels::{Format, KernelError, Q8Vector};
use candle_core::quantized::GgmlDType;
use candle_core::quantized::gguf_file::{Content, TensorInfo};

use super::MindError;

/// The architectures this pass runs, by `general.architecture`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Llama,
    Qwen2,
}

impl Family {
    fn of(content: &Content) -> Result<Family, String> {
        let arch = content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok());
        match arch.map(String::as_str) {
            Some("llama") => Ok(Family::Llama),
            Some("qwen2") => Ok(Family::Qwen2),
            other => Err(format!("architecture {other:?} is neither llama nor qwen2")),
        }
    }

    /// The prefix of the architecture's metadata keys.
    fn key(self, name: &str) -> String {
        match self {
            Family::Llama => format!("llama.{name}"),
            Family::Qwen2 => format!("qwen2.{name}"),
        }
    }
}

/// The model's shape, from the GGUF's metadata.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    pub family: Family,
    pub layers: usize,
    pub embedding: usize,
    pub feed_forward: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocabulary: usize,
    pub context: usize,
    pub rms_epsilon: f32,
    pub rope_base: f32,
}

/// A quantized matrix: `rows` rows of `cols` values, in the file's own blocks.
struct Matrix {
    format: Format,
    rows: usize,
    cols: usize,
    bytes: Vec<u8>,
}

struct Layer {
    attn_norm: Vec<f32>,
    q: Arc<Matrix>,
    k: Arc<Matrix>,
    v: Arc<Matrix>,
    /// Qwen2's biases of the query, key and value products (`None` for Llama).
    qkv_bias: Option<[Vec<f32>; 3]>,
    o: Arc<Matrix>,
    ffn_norm: Vec<f32>,
    gate: Arc<Matrix>,
    up: Arc<Matrix>,
    down: Arc<Matrix>,
}

/// Buffers reused by every forward pass (sized for the longest batch seen so far).
#[derive(Default)]
struct Scratch {
    /// The residual stream, token-major: `[tokens][embedding]`.
    x: Vec<f32>,
    /// Normalized input of the current product, token-major.
    normed: Vec<f32>,
    /// Quantized inputs, one per token (shared with the helpers during a product).
    acts: Arc<Vec<Q8Vector>>,
    /// A product's output as the kernels write it: `[rows][tokens]`.
    product: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attended: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    scores: Vec<f32>,
    logits: Vec<f32>,
}

/// A loaded model with its KV cache.
pub struct Llama {
    shape: Shape,
    embeddings: Arc<Matrix>,
    layers: Vec<Layer>,
    output_norm: Vec<f32>,
    /// `None`: the output matrix is the token embeddings (tied).
    output: Option<Arc<Matrix>>,
    team: Team,
    /// Per layer, keys then values: `[position][kv_heads · head_dim]`.
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    /// Positions held in the cache.
    cached: usize,
    /// Rotary angles per position, `[position][head_dim / 2]` as (cos, sin), grown on demand.
    rope: Vec<(f32, f32)>,
    scratch: Scratch,
}

/// Shape and state only: the weights and the cache are megabytes of numbers.
impl std::fmt::Debug for Llama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llama")
            .field("shape", &self.shape)
            .field("format", &self.embeddings.format)
            .field("helpers", &self.team.helpers.len())
            .field("cached", &self.cached)
            .finish_non_exhaustive()
    }
}

fn metadata_u32(content: &Content, key: &str) -> Result<usize, MindError> {
    content
        .metadata
        .get(key)
        .and_then(|v| v.to_u32().ok())
        .map(|v| v as usize)
        .ok_or_else(|| MindError::BadModel(format!("the GGUF has no `{key}`")))
}

fn format_of(dtype: GgmlDType) -> Option<Format> {
    match dtype {
        GgmlDType::Q4_1 => Some(Format::Q4_1),
        GgmlDType::Q8_0 => Some(Format::Q8_0),
        GgmlDType::Q5_0 => Some(Format::Q5_0),
        GgmlDType::Q4K => Some(Format::Q4_K),
        GgmlDType::Q6K => Some(Format::Q6_K),
        _ => None,
    }
}

fn read_error(name: &str, e: std::io::Error) -> MindError {
    let text = e.to_string();
    if text.contains("is damaged") {
        MindError::Damaged(text)
    } else {
        MindError::BadModel(format!("cannot read tensor {name}: {text}"))
    }
}

struct Loader<'a, R> {
    content: &'a Content,
    reader: &'a mut R,
}

impl<R: Read + Seek> Loader<'_, R> {
    fn info(&self, name: &str) -> Result<&TensorInfo, MindError> {
        self.content
            .tensor_infos
            .get(name)
            .ok_or_else(|| MindError::BadModel(format!("the GGUF has no tensor {name}")))
    }

    fn bytes(&mut self, name: &str, len: usize) -> Result<Vec<u8>, MindError> {
        let info = self.info(name)?;
        let at = self.content.tensor_data_offset + info.offset;
        self.reader
            .seek(SeekFrom::Start(at))
            .map_err(|e| read_error(name, e))?;
        let mut bytes = vec![0u8; len];
        self.reader
            .read_exact(&mut bytes)
            .map_err(|e| read_error(name, e))?;
        Ok(bytes)
    }

    fn matrix(&mut self, name: &str, rows: usize, cols: usize) -> Result<Arc<Matrix>, MindError> {
        let info = self.info(name)?;
        let format = format_of(info.ggml_dtype)
            .ok_or_else(|| MindError::Unsupported(format!("{name} is {:?}", info.ggml_dtype)))?;
        if info.shape.dims() != [rows, cols] {
            return Err(MindError::BadModel(format!(
                "{name} is {:?}, expected [{rows}, {cols}]",
                info.shape.dims()
            )));
        }
        if !format.fits(cols) {
            return Err(MindError::BadModel(format!(
                "{name}'s rows of {cols} values are not whole {format:?} blocks"
            )));
        }
        let len = rows
            .checked_mul(format.row_bytes(cols))
            .ok_or_else(|| MindError::BadModel(format!("{name}'s size overflows")))?;
        let bytes = self.bytes(name, len)?;
        Ok(Arc::new(Matrix {
            format,
            rows,
            cols,
            bytes,
        }))
    }

    fn vector(&mut self, name: &str, len: usize) -> Result<Vec<f32>, MindError> {
        let info = self.info(name)?;
        if info.ggml_dtype != GgmlDType::F32 || info.shape.dims() != [len] {
            return Err(MindError::Unsupported(format!(
                "{name} is {:?} {:?}, expected F32 [{len}]",
                info.ggml_dtype,
                info.shape.dims()
            )));
        }
        let bytes = self.bytes(name, len * 4)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }
}

impl Llama {
    /// Why this path cannot run `content` (then candle runs it), or `None` when it can.
    pub fn supports(content: &Content) -> Option<String> {
        let family = match Family::of(content) {
            Ok(family) => family,
            Err(why) => return Some(why),
        };
        if content.metadata.contains_key(&family.key("expert_count")) {
            return Some("mixture-of-experts models are not covered".into());
        }
        let scaling = family.key("rope.scaling");
        if content.metadata.iter().any(|(k, v)| {
            // A scaling type of `none` (some converters write it) scales nothing.
            k.starts_with(&scaling)
                && !(k.ends_with(".type") && v.to_string().is_ok_and(|t| t == "none"))
        }) {
            return Some("rope scaling is not covered".into());
        }
        for (name, info) in &content.tensor_infos {
            let covered = match info.shape.rank() {
                1 => info.ggml_dtype == GgmlDType::F32,
                2 => format_of(info.ggml_dtype).is_some(),
                _ => false,
            };
            if !covered {
                return Some(format!(
                    "tensor {name} is {:?} {:?}",
                    info.ggml_dtype,
                    info.shape.dims()
                ));
            }
        }
        None
    }

    /// Reads the model's shape and weights, to run on `threads` threads (this one and
    /// `threads - 1` helpers).
    pub fn load(
        content: &Content,
        reader: &mut (impl Read + Seek),
        threads: usize,
    ) -> Result<Llama, MindError> {
        if let Some(why) = Llama::supports(content) {
            return Err(MindError::Unsupported(why));
        }
        let family = Family::of(content).map_err(MindError::Unsupported)?;
        let key = |name: &str| family.key(name);
        let embedding = metadata_u32(content, &key("embedding_length"))?;
        let heads = metadata_u32(content, &key("attention.head_count"))?;
        let kv_heads = metadata_u32(content, &key("attention.head_count_kv"))?;
        if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            return Err(MindError::BadModel(format!(
                "{heads} heads cannot share {kv_heads} key/value heads"
            )));
        }
        let head_dim = embedding / heads;
        let shape = Shape {
            family,
            layers: metadata_u32(content, &key("block_count"))?,
            embedding,
            feed_forward: metadata_u32(content, &key("feed_forward_length"))?,
            heads,
            kv_heads,
            head_dim,
            vocabulary: 0,
            context: metadata_u32(content, &key("context_length"))?,
            rms_epsilon: content
                .metadata
                .get(&key("attention.layer_norm_rms_epsilon"))
                .and_then(|v| v.to_f32().ok())
                .ok_or_else(|| MindError::BadModel("the GGUF has no rms epsilon".into()))?,
            rope_base: content
                .metadata
                .get(&key("rope.freq_base"))
                .and_then(|v| v.to_f32().ok())
                .unwrap_or(10_000.0),
        };
        if head_dim * heads != embedding || head_dim % 2 != 0 {
            return Err(MindError::BadModel(format!(
                "an embedding of {embedding} does not split into {heads} even heads"
            )));
        }
        if let Ok(rope) = metadata_u32(content, &key("rope.dimension_count"))
            && rope != head_dim
        {
            return Err(MindError::Unsupported(format!(
                "a rotary dimension of {rope} for heads of {head_dim}"
            )));
        }
        let vocabulary = content
            .tensor_infos
            .get("token_embd.weight")
            .map(|i| i.shape.dims()[0])
            .ok_or_else(|| MindError::BadModel("the GGUF has no token_embd.weight".into()))?;
        let shape = Shape {
            vocabulary,
            ..shape
        };
        let kv = kv_heads * head_dim;
        let mut load = Loader { content, reader };
        let embeddings = load.matrix("token_embd.weight", vocabulary, embedding)?;
        let mut layers = Vec::with_capacity(shape.layers);
        for i in 0..shape.layers {
            let name = |t: &str| format!("blk.{i}.{t}.weight");
            let bias = |t: &str| format!("blk.{i}.{t}.bias");
            let qkv_bias = match family {
                Family::Llama => None,
                Family::Qwen2 => Some([
                    load.vector(&bias("attn_q"), embedding)?,
                    load.vector(&bias("attn_k"), kv)?,
                    load.vector(&bias("attn_v"), kv)?,
                ]),
            };
            layers.push(Layer {
                attn_norm: load.vector(&name("attn_norm"), embedding)?,
                q: load.matrix(&name("attn_q"), embedding, embedding)?,
                k: load.matrix(&name("attn_k"), kv, embedding)?,
                v: load.matrix(&name("attn_v"), kv, embedding)?,
                qkv_bias,
                o: load.matrix(&name("attn_output"), embedding, embedding)?,
                ffn_norm: load.vector(&name("ffn_norm"), embedding)?,
                gate: load.matrix(&name("ffn_gate"), shape.feed_forward, embedding)?,
                up: load.matrix(&name("ffn_up"), shape.feed_forward, embedding)?,
                down: load.matrix(&name("ffn_down"), embedding, shape.feed_forward)?,
            });
        }
        let output_norm = load.vector("output_norm.weight", embedding)?;
        let output = if content.tensor_infos.contains_key("output.weight") {
            Some(load.matrix("output.weight", vocabulary, embedding)?)
        } else {
            None
        };
        Ok(Llama {
            shape,
            embeddings,
            output_norm,
            output,
            team: Team::start(threads.max(1) - 1)?,
            keys: vec![Vec::new(); shape.layers],
            values: vec![Vec::new(); shape.layers],
            layers,
            cached: 0,
            rope: Vec::new(),
            scratch: Scratch::default(),
        })
    }

    /// Runs `tokens` at positions `position..`, keeping what the cache holds before
    /// `position`, and answers the logits of the last token.
    pub fn forward(&mut self, tokens: &[u32], position: usize) -> Result<&[f32], MindError> {
        let shape = self.shape;
        let n = tokens.len();
        if n == 0 {
            return Err(MindError::BadRequest("no tokens to run".into()));
        }
        if position > self.cached {
            return Err(MindError::Inference(format!(
                "position {position} is past the {} cached",
                self.cached
            )));
        }
        if position + n > shape.context {
            return Err(MindError::Inference(format!(
                "position {} is past the context of {}",
                position + n,
                shape.context
            )));
        }
        let (h, kv) = (shape.embedding, shape.kv_heads * shape.head_dim);
        let heads = Heads {
            heads: shape.heads,
            kv_heads: shape.kv_heads,
            head_dim: shape.head_dim,
        };
        self.grow_rope(position + n);
        for layer in 0..shape.layers {
            self.keys[layer].truncate(position * kv);
            self.values[layer].truncate(position * kv);
        }
        self.cached = position;

        let s = &mut self.scratch;
        s.x.resize(n * h, 0.0);
        for (t, &token) in tokens.iter().enumerate() {
            let token = token as usize;
            if token >= shape.vocabulary {
                return Err(MindError::BadRequest(format!(
                    "token {token} is outside the vocabulary of {}",
                    shape.vocabulary
                )));
            }
            let e = &self.embeddings;
            let row = e.format.row_bytes(e.cols);
            batos_kernels::dequantize_row(
                e.format,
                &e.bytes[token * row..(token + 1) * row],
                &mut s.x[t * h..(t + 1) * h],
            )
            .map_err(kernel_error)?;
        }

        for (l, layer) in self.layers.iter().enumerate() {
            // Attention.
            rms_norm(&s.x, &layer.attn_norm, shape.rms_epsilon, h, &mut s.normed);
            quantize(&s.normed, h, &mut s.acts)?;
            self.team
                .product(&layer.q, &s.acts, n, &mut s.product, &mut s.q)?;
            self.team
                .product(&layer.k, &s.acts, n, &mut s.product, &mut s.k)?;
            self.team
                .product(&layer.v, &s.acts, n, &mut s.product, &mut s.v)?;
            if let Some([qb, kb, vb]) = &layer.qkv_bias {
                for (x, b) in [(&mut s.q, qb), (&mut s.k, kb), (&mut s.v, vb)] {
                    for row in x.chunks_exact_mut(b.len()) {
                        ops::add(row, b);
                    }
                }
            }
            let rope = match shape.family {
                Family::Llama => ops::rope_interleaved,
                Family::Qwen2 => ops::rope_halves,
            };
            for t in 0..n {
                let angles = &self.rope[(position + t) * shape.head_dim / 2..];
                rope(&mut s.q[t * h..(t + 1) * h], shape.head_dim, angles);
                rope(&mut s.k[t * kv..(t + 1) * kv], shape.head_dim, angles);
            }
            self.keys[l].extend_from_slice(&s.k[..n * kv]);
            self.values[l].extend_from_slice(&s.v[..n * kv]);
            // Causal: token t sees the positions up to its own.
            s.attended.resize(n * h, 0.0);
            for t in 0..n {
                let seen = (position + t + 1) * kv;
                ops::attend(
                    heads,
                    &s.q[t * h..(t + 1) * h],
                    &self.keys[l][..seen],
                    &self.values[l][..seen],
                    &mut s.scores,
                    &mut s.attended[t * h..(t + 1) * h],
                );
            }
            quantize(&s.attended, h, &mut s.acts)?;
            self.team
                .product(&layer.o, &s.acts, n, &mut s.product, &mut s.normed)?;
            ops::add(&mut s.x, &s.normed);

            // Feed-forward.
            rms_norm(&s.x, &layer.ffn_norm, shape.rms_epsilon, h, &mut s.normed);
            quantize(&s.normed, h, &mut s.acts)?;
            self.team
                .product(&layer.gate, &s.acts, n, &mut s.product, &mut s.gate)?;
            self.team
                .product(&layer.up, &s.acts, n, &mut s.product, &mut s.up)?;
            ops::silu_mul(&mut s.gate, &s.up);
            quantize(&s.gate, shape.feed_forward, &mut s.acts)?;
            self.team
                .product(&layer.down, &s.acts, n, &mut s.product, &mut s.normed)?;
            ops::add(&mut s.x, &s.normed);
        }
        self.cached = position + n;

        // Only the last token's logits are needed.
        let last = &s.x[(n - 1) * h..n * h];
        rms_norm(last, &self.output_norm, shape.rms_epsilon, h, &mut s.normed);
        quantize(&s.normed, h, &mut s.acts)?;
        let output = self.output.as_ref().unwrap_or(&self.embeddings);
        self.team
            .product(output, &s.acts, 1, &mut s.product, &mut s.logits)?;
        Ok(&s.logits)
    }

    /// Positions the KV cache holds.
    pub fn cached(&self) -> usize {
        self.cached
    }

    /// Bytes of KV cache one position takes (keys and values of every layer).
    pub fn kv_bytes_per_position(&self) -> usize {
        self.shape.layers * 2 * self.shape.kv_heads * self.shape.head_dim * 4
    }

    /// A copy of the KV state of the first `positions` cached positions.
    pub fn save(&self, positions: usize) -> KvState {
        let positions = positions.min(self.cached);
        let kv = self.shape.kv_heads * self.shape.head_dim;
        KvState {
            positions,
            keys: self
                .keys
                .iter()
                .map(|k| k[..positions * kv].to_vec())
                .collect(),
            values: self
                .values
                .iter()
                .map(|v| v[..positions * kv].to_vec())
                .collect(),
        }
    }

    /// Makes the cache hold the first `positions` positions of `state` (and nothing after).
    pub fn restore(&mut self, state: &KvState, positions: usize) {
        let positions = positions.min(state.positions);
        let kv = self.shape.kv_heads * self.shape.head_dim;
        for (mine, saved) in self.keys.iter_mut().zip(&state.keys) {
            mine.clear();
            mine.extend_from_slice(&saved[..positions * kv]);
        }
        for (mine, saved) in self.values.iter_mut().zip(&state.values) {
            mine.clear();
            mine.extend_from_slice(&saved[..positions * kv]);
        }
        self.cached = positions;
    }

    fn grow_rope(&mut self, positions: usize) {
        let half = self.shape.head_dim / 2;
        let have = self.rope.len() / half;
        for p in have..positions {
            for i in 0..half {
                let theta = self
                    .shape
                    .rope_base
                    .powf(-((2 * i) as f32) / self.shape.head_dim as f32);
                let angle = p as f32 * theta;
                self.rope.push((angle.cos(), angle.sin()));
            }
        }
    }
}

/// The keys and values of a run of positions, per layer (see [`Llama::save`]).
#[derive(Clone)]
pub struct KvState {
    positions: usize,
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
}

impl KvState {
    /// Bytes of cache held.
    pub fn bytes(&self) -> usize {
        self.keys
            .iter()
            .chain(&self.values)
            .map(|v| v.len() * 4)
            .sum()
    }
}

impl std::fmt::Debug for KvState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvState")
            .field("positions", &self.positions)
            .field("bytes", &self.bytes())
            .finish()
    }
}

fn kernel_error(e: batos_kernels::KernelError) -> MindError {
    MindError::Inference(format!("kernel: {e}"))
}

/// Normalizes each `width`-wide row of `x` into `out`.
fn rms_norm(x: &[f32], weight: &[f32], epsilon: f32, width: usize, out: &mut Vec<f32>) {
    out.resize(x.len(), 0.0);
    for (row, normed) in x.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
        ops::rms_norm(row, weight, epsilon, normed);
    }
}

/// Quantizes each `width`-wide row of `x` into one [`Q8Vector`] (in place: the helpers have
/// dropped their references by the time a product returns).
fn quantize(x: &[f32], width: usize, acts: &mut Arc<Vec<Q8Vector>>) -> Result<(), MindError> {
    let acts = Arc::make_mut(acts);
    let rows = x.len() / width;
    if acts.len() < rows {
        acts.resize_with(rows, Q8Vector::default);
    }
    for (row, act) in x.chunks_exact(width).zip(acts.iter_mut()) {
        act.quantize(row).map_err(kernel_error)?;
    }
    Ok(())
}

/// `out[(r - rows.start) · n + t] = m.row(r) · acts[t]` for `r` in `rows`, row-major.
fn product_rows(
    m: &Matrix,
    rows: Range<usize>,
    acts: &[Q8Vector],
    out: &mut [f32],
) -> Result<(), KernelError> {
    let row = m.format.row_bytes(m.cols);
    batos_kernels::matmul(
        m.format,
        &m.bytes[rows.start * row..rows.end * row],
        rows.len(),
        m.cols,
        acts,
        out,
    )
}

/// One share of a product, for a helper.
struct Job {
    matrix: Arc<Matrix>,
    rows: Range<usize>,
    acts: Arc<Vec<Q8Vector>>,
    tokens: usize,
    /// The helper's answer goes here (the buffer travels back and forth).
    out: Vec<f32>,
}

type Answer = Result<Vec<f32>, KernelError>;

#[derive(Debug)]
struct Helper {
    /// `None` once stopping: a closed channel ends the helper's loop.
    jobs: Option<mpsc::Sender<Job>>,
    answers: mpsc::Receiver<Answer>,
    /// A spare answer buffer, sent with the next job.
    spare: Vec<f32>,
    thread: Option<JoinHandle<()>>,
}

/// The helper threads that share the products' rows (none on one thread).
#[derive(Debug)]
struct Team {
    helpers: Vec<Helper>,
}

/// Rows below which a product is not worth splitting.
const SPLIT_ROWS: usize = 64;

impl Team {
    fn start(helpers: usize) -> Result<Team, MindError> {
        let mut team = Team {
            helpers: Vec::with_capacity(helpers),
        };
        for i in 0..helpers {
            let (jobs, inbox) = mpsc::channel::<Job>();
            let (outbox, answers) = mpsc::channel::<Answer>();
            let thread = std::thread::Builder::new()
                .name(format!("batos-mind-{}", i + 1))
                .spawn(move || help(&inbox, &outbox))
                .map_err(|e| MindError::Inference(format!("cannot start a helper thread: {e}")))?;
            team.helpers.push(Helper {
                jobs: Some(jobs),
                answers,
                spare: Vec::new(),
                thread: Some(thread),
            });
        }
        Ok(team)
    }

    /// `out[t][r] = m.row(r) · acts[t]` for the first `n` inputs, token-major; `scratch`
    /// holds the row-major product the kernels write for this thread's share. Each thread turns
    /// its own share token-major, so what is left here is copying contiguous runs.
    fn product(
        &mut self,
        m: &Arc<Matrix>,
        acts: &Arc<Vec<Q8Vector>>,
        n: usize,
        scratch: &mut Vec<f32>,
        out: &mut Vec<f32>,
    ) -> Result<(), MindError> {
        let rows = m.rows;
        out.resize(n * rows, 0.0);
        let parts = if rows >= SPLIT_ROWS {
            self.helpers.len() + 1
        } else {
            1
        };
        // Shares in whole groups of 16 rows (the kernels' row groups), the first (this
        // thread's) no larger than the rest.
        let share = rows.div_ceil(parts).div_ceil(16) * 16;
        let mut sent = 0;
        for (i, helper) in self.helpers.iter_mut().enumerate().take(parts - 1) {
            let start = (share * (i + 1)).min(rows);
            let end = (start + share).min(rows);
            if start == end {
                break;
            }
            let job = Job {
                matrix: Arc::clone(m),
                rows: start..end,
                acts: Arc::clone(acts),
                tokens: n,
                out: std::mem::take(&mut helper.spare),
            };
            helper
                .jobs
                .as_ref()
                .ok_or_else(helper_gone)?
                .send(job)
                .map_err(|_| helper_gone())?;
            sent += 1;
        }
        let mine = share.min(rows);
        let mut outcome = if n == 1 {
            product_rows(m, 0..mine, &acts[..1], &mut out[..mine])
        } else {
            scratch.resize(mine * n, 0.0);
            product_rows(m, 0..mine, &acts[..n], &mut scratch[..mine * n]).map(|()| {
                for (r, outs) in scratch[..mine * n].chunks_exact(n).enumerate() {
                    for (t, v) in outs.iter().enumerate() {
                        out[t * rows + r] = *v;
                    }
                }
            })
        }
        .map_err(kernel_error);
        // Every helper that got a share answers before anything returns, error or not: an answer
        // left in a channel would be read as the next product's.
        for (i, helper) in self.helpers.iter_mut().enumerate().take(sent) {
            match receive(&helper.answers) {
                Some(Ok(part)) => {
                    // Token-major already: one contiguous run per token.
                    let start = share * (i + 1);
                    let len = part.len() / n;
                    for (t, run) in part.chunks_exact(len.max(1)).enumerate().take(n) {
                        out[t * rows + start..t * rows + start + len].copy_from_slice(run);
                    }
                    helper.spare = part;
                }
                Some(Err(e)) => outcome = outcome.and(Err(kernel_error(e))),
                // A helper that is gone cannot answer again: the team is broken for good.
                None => outcome = outcome.and(Err(helper_gone())),
            }
        }
        outcome
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        for helper in &mut self.helpers {
            helper.jobs = None;
        }
        for helper in &mut self.helpers {
            if let Some(thread) = helper.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

fn helper_gone() -> MindError {
    MindError::Inference("a helper thread of the mind stopped".into())
}

/// The next message, polled for a while before sleeping: within a token the next product (and
/// a helper's answer) comes within microseconds, sooner than a sleeping thread wakes. `None`
/// when the other side is gone.
fn receive<T>(from: &mpsc::Receiver<T>) -> Option<T> {
    /// Well under a millisecond of polling (each try is a few nanoseconds).
    const SPINS: u32 = 20_000;
    for _ in 0..SPINS {
        match from.try_recv() {
            Ok(message) => return Some(message),
            Err(mpsc::TryRecvError::Empty) => std::hint::spin_loop(),
            Err(mpsc::TryRecvError::Disconnected) => return None,
        }
    }
    from.recv().ok()
}

/// A helper's loop: wait for a share, compute it, answer, until the team is dropped.
fn help(inbox: &mpsc::Receiver<Job>, outbox: &mpsc::Sender<Answer>) {
    let mut row_major = Vec::new();
    loop {
        let Some(job) = receive(inbox) else {
            return;
        };
        let Job {
            matrix,
            rows,
            acts,
            tokens,
            mut out,
        } = job;
        let len = rows.len();
        out.resize(len * tokens, 0.0);
        let answer = if tokens == 1 {
            product_rows(&matrix, rows, &acts[..1], &mut out).map(|()| out)
        } else {
            // Row-major from the kernels, then token-major here, in this thread.
            row_major.resize(len * tokens, 0.0);
            product_rows(&matrix, rows, &acts[..tokens], &mut row_major).map(|()| {
                for (r, outs) in row_major.chunks_exact(tokens).enumerate() {
                    for (t, v) in outs.iter().enumerate() {
                        out[t * len + r] = *v;
                    }
                }
                out
            })
        };
        // Drop the shared input before answering, so the next quantization reuses it in place.
        drop(acts);
        if outbox.send(answer).is_err() {
            return;
        }
    }
}
