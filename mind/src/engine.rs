//! A loaded model and one generation: the chat template, sampling (seed, temperature, top-p,
//! repeat penalty), max tokens, stop tokens and stop sequences, streaming text as it comes.
//!
//! An engine is owned by one thread (see [`super::worker`]); nothing here is shared.

use std::io::{BufReader, Read, Seek};
use std::ops::ControlFlow;
use std::time::Instant;

use candle_core::quantized::gguf_file::Content;
use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use candle_transformers::models::quantized_llama::{self, MAX_SEQ_LEN};
use candle_transformers::models::quantized_qwen2;
use serde::{Deserialize, Serialize};

use super::llama::Llama;
use super::prefix::{self, PrefixCache};
use super::tokenizer::MindTokenizer;
use super::{MindError, candle_error};

/// Which forward pass runs a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// Native where it covers the model and the device is the CPU, candle otherwise.
    #[default]
    Auto,
    /// batos's own Llama/Qwen2 pass and kernels ([`super::llama`]): Q4_1, Q8_0, Q5_0, Q4_K and
    /// Q6_K on the CPU.
    Native,
    /// candle's quantized Llama or Qwen2: any GGUF quantization, CPU or CUDA.
    Candle,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Auto => "auto",
            Backend::Native => "native",
            Backend::Candle => "candle",
        })
    }
}

impl std::str::FromStr for Backend {
    type Err = MindError;
    fn from_str(s: &str) -> Result<Self, MindError> {
        match s {
            "auto" => Ok(Backend::Auto),
            "native" => Ok(Backend::Native),
            "candle" => Ok(Backend::Candle),
            other => Err(MindError::BadRequest(format!(
                "`{other}` is not a backend: use auto, native or candle"
            ))),
        }
    }
}

/// candle's model of each architecture.
enum CandleModel {
    Llama(quantized_llama::ModelWeights),
    Qwen2(quantized_qwen2::ModelWeights),
}

impl std::fmt::Debug for CandleModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CandleModel::Llama(_) => "CandleModel::Llama",
            CandleModel::Qwen2(_) => "CandleModel::Qwen2",
        })
    }
}

/// The forward pass a loaded engine runs.
#[derive(Debug)]
enum Network {
    Native {
        llama: Box<Llama>,
        /// The tokens whose state the KV cache holds, in order.
        live: Vec<u32>,
        prefixes: PrefixCache,
    },
    Candle(Box<CandleModel>),
}

impl Network {
    /// The logits (`[1, vocabulary]`) after running `tokens` at `position..`.
    fn forward(
        &mut self,
        device: &Device,
        tokens: &[u32],
        position: usize,
    ) -> Result<Tensor, MindError> {
        match self {
            Network::Native { llama, live, .. } => {
                live.truncate(position);
                let logits = llama.forward(tokens, position);
                if logits.is_ok() {
                    live.extend_from_slice(tokens);
                } else {
                    // The cache's state after a failed pass is not worth trusting.
                    live.clear();
                }
                let logits = logits?;
                Tensor::from_slice(logits, (1, logits.len()), device).map_err(candle_error)
            }
            Network::Candle(model) => {
                let input = Tensor::new(tokens, device)
                    .and_then(|t| t.unsqueeze(0))
                    .map_err(candle_error)?;
                match &mut **model {
                    CandleModel::Llama(m) => m.forward(&input, position),
                    CandleModel::Qwen2(m) => m.forward(&input, position),
                }
                .map_err(candle_error)
            }
        }
    }

    /// Makes the KV cache hold the longest start of `prompt` it can recover (from what it
    /// holds, or a saved prompt's state), always leaving the last prompt token to run; answers
    /// how many positions it holds.
    fn reuse(&mut self, prompt: &[u32]) -> usize {
        match self {
            Network::Native {
                llama,
                live,
                prefixes,
            } => {
                let most = prompt.len().saturating_sub(1);
                let held = prefix::common_prefix(live, prompt).min(most);
                let saved = prefixes.best(prompt);
                match saved {
                    Some((state, shared)) if shared.min(most) > held => {
                        let n = shared.min(most);
                        llama.restore(state, n);
                        live.clear();
                        live.extend_from_slice(&prompt[..n]);
                        n
                    }
                    _ => held,
                }
            }
            Network::Candle(model) => {
                match &mut **model {
                    CandleModel::Llama(m) => m.clear_kv_cache(),
                    CandleModel::Qwen2(m) => m.clear_kv_cache(),
                }
                0
            }
        }
    }

    /// Saves the state after `prompt` (just run) for later prompts that begin the same way.
    fn remember(&mut self, prompt: &[u32]) {
        if let Network::Native {
            llama, prefixes, ..
        } = self
            && prompt.len() >= prefix::MIN_TOKENS
            // A state past the budget would be copied only to be dropped.
            && prompt.len().saturating_mul(llama.kv_bytes_per_position()) <= prefix::BUDGET_BYTES
        {
            prefixes.insert(prompt.to_vec(), llama.save(prompt.len()));
        }
    }
}

/// The chat templates this build can apply, recognised from the GGUF's template text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatTemplate {
    /// `<|im_start|>role\n...<|im_end|>` (SmolLM2, Qwen), with the template's default system
    /// prompt when it has one.
    ChatMl { default_system: Option<String> },
    /// `<|system|>` / `<|user|>` / `<|assistant|>` (Zephyr, TinyLlama-Chat).
    Zephyr,
    /// `[INST] ... [/INST]` (Llama 2, Mistral).
    Inst,
    /// `<|start_header_id|>role<|end_header_id|>` (Llama 3).
    Llama3,
}

impl ChatTemplate {
    /// Recognises a template by its markers; `None` when it is none of the known ones (prompt
    /// such a model raw).
    pub fn recognise(template: &str) -> Option<ChatTemplate> {
        if template.contains("<|im_start|>") {
            Some(ChatTemplate::ChatMl {
                default_system: default_chatml_system(template),
            })
        } else if template.contains("<|start_header_id|>") {
            Some(ChatTemplate::Llama3)
        } else if template.contains("<|user|>") {
            Some(ChatTemplate::Zephyr)
        } else if template.contains("[INST]") {
            Some(ChatTemplate::Inst)
        } else {
            None
        }
    }

    /// The prompt text for one system message (optional) and one user message, ready for the
    /// assistant's answer.
    pub fn apply(&self, system: Option<&str>, user: &str) -> String {
        match self {
            ChatTemplate::ChatMl { default_system } => {
                let mut out = String::new();
                if let Some(system) = system.or(default_system.as_deref()) {
                    out.push_str(&format!("<|im_start|>system\n{system}<|im_end|>\n"));
                }
                out.push_str(&format!(
                    "<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
                ));
                out
            }
            ChatTemplate::Zephyr => {
                let mut out = String::new();
                if let Some(system) = system {
                    out.push_str(&format!("<|system|>\n{system}</s>\n"));
                }
                out.push_str(&format!("<|user|>\n{user}</s>\n<|assistant|>\n"));
                out
            }
            ChatTemplate::Inst => match system {
                Some(system) => format!("[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST]"),
                None => format!("[INST] {user} [/INST]"),
            },
            ChatTemplate::Llama3 => {
                let mut out = String::new();
                if let Some(system) = system {
                    out.push_str(&format!(
                        "<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>"
                    ));
                }
                out.push_str(&format!(
                    "<|start_header_id|>user<|end_header_id|>\n\n{user}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
                ));
                out
            }
        }
    }

    /// Tokens that end the assistant's turn, besides the model's EOS.
    fn end_markers(&self) -> &'static [&'static str] {
        match self {
            ChatTemplate::ChatMl { .. } => &["<|im_end|>"],
            ChatTemplate::Zephyr | ChatTemplate::Inst => &["</s>"],
            ChatTemplate::Llama3 => &["<|eot_id|>"],
        }
    }
}

/// SmolLM2's template writes a default system message when the conversation has none:
/// `'<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n'`.
/// Qwen2.5's writes `'<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a
/// helpful assistant.<|im_end|>\n'` after a branch that writes the caller's own system message.
fn default_chatml_system(template: &str) -> Option<String> {
    // The template's string literal holds a newline, or the two characters `\n`.
    ["<|im_start|>system\n", "<|im_start|>system\\n"]
        .iter()
        .flat_map(|start| {
            template
                .match_indices(start)
                .map(move |(at, _)| &template[at + start.len()..])
        })
        .find_map(|rest| {
            let text = &rest[..rest.find("<|im_end|>")?];
            // Only a literal: a Jinja expression (`{{ ... }}` or `' +`) is the caller's own
            // system text.
            (!text.contains('{') && !text.contains('\'') && !text.is_empty())
                .then(|| text.to_owned())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smollm2s_default_system_message_is_found_in_its_template() {
        let template = "{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}";
        let Some(ChatTemplate::ChatMl { default_system }) = ChatTemplate::recognise(template)
        else {
            panic!("ChatML");
        };
        assert_eq!(
            default_system.as_deref(),
            Some("You are a helpful AI assistant named SmolLM, trained by Hugging Face")
        );
        let t = ChatTemplate::ChatMl { default_system };
        assert!(
            t.apply(None, "hi")
                .starts_with("<|im_start|>system\nYou are a helpful")
        );
        assert!(
            t.apply(Some("Be brief."), "hi")
                .starts_with("<|im_start|>system\nBe brief.<|im_end|>")
        );
        // A template whose system text is an expression has no default.
        let dynamic = "{{ '<|im_start|>system\n' + message['content'] + '<|im_end|>' }}";
        assert_eq!(default_chatml_system(dynamic), None);
        // Qwen2.5's: the caller's branch first, the literal default after it.
        let qwen = "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}{%- else %}{{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}{%- endif %}";
        assert_eq!(
            default_chatml_system(qwen).as_deref(),
            Some("You are Qwen, created by Alibaba Cloud. You are a helpful assistant.")
        );
    }
}

/// One generation's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerateRequest {
    pub prompt: String,
    /// A system message for the chat template.
    pub system: Option<String>,
    /// Send `prompt` as it is, without the chat template.
    pub raw: bool,
    pub max_tokens: usize,
    pub seed: u64,
    /// 0 is greedy (argmax).
    pub temperature: f64,
    pub top_p: Option<f64>,
    /// 1.0 is none.
    pub repeat_penalty: f32,
    pub repeat_last_n: usize,
    /// Generation stops before the first of these, which is not part of the text.
    pub stop: Vec<String>,
    /// Never end the turn: always generate `max_tokens` (benchmarks, like llama.cpp's option).
    pub ignore_eos: bool,
    /// Text the answer starts with, written into the prompt after the template (the model
    /// continues it); not repeated in the generated text.
    pub prefill: String,
}

impl Default for GenerateRequest {
    fn default() -> Self {
        GenerateRequest {
            prompt: String::new(),
            system: None,
            raw: false,
            max_tokens: 256,
            seed: 299_792_458,
            temperature: 0.0,
            top_p: None,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            stop: Vec::new(),
            ignore_eos: false,
            prefill: String::new(),
        }
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model ended its turn.
    EndOfTurn,
    MaxTokens,
    StopSequence,
    /// The caller stopped it (gone, deadline, shutdown).
    Cancelled,
}

/// One generation's result and timings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Generation {
    pub text: String,
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub tokens: usize,
    /// Prompt tokens whose state came from the prefix cache (not run again).
    pub cached_prompt_tokens: usize,
    /// Prompt tokens run per second (those not taken from the cache).
    pub prompt_tokens_per_s: f64,
    /// Generation speed: tokens generated after the first, per second of decoding.
    pub tokens_per_s: f64,
    pub stop: StopReason,
    pub ids: Vec<u32>,
}

/// A loaded model, its tokenizer and its template.
#[derive(Debug)]
pub struct Engine {
    network: Network,
    tokenizer: MindTokenizer,
    template: Option<ChatTemplate>,
    end_ids: Vec<u32>,
    context: usize,
    device: Device,
}

impl Engine {
    /// Loads a GGUF from any `Read + Seek` (a file or a blob in the image). The reader is
    /// buffered here: metadata parsing makes tens of thousands of tiny reads.
    pub fn load(reader: impl Read + Seek, device: &Device) -> Result<Engine, MindError> {
        Engine::load_with(reader, device, Backend::Auto)
    }

    /// [`Engine::load`] with a chosen backend; `Native` is refused for a model or device it
    /// does not cover.
    pub fn load_with(
        reader: impl Read + Seek,
        device: &Device,
        backend: Backend,
    ) -> Result<Engine, MindError> {
        let mut reader = BufReader::with_capacity(256 << 10, reader);
        let content = Content::read(&mut reader).map_err(candle_error)?;
        let tokenizer = MindTokenizer::from_gguf(&content)?;
        let template = content
            .metadata
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok())
            .and_then(|t| ChatTemplate::recognise(t));
        let architecture = content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        // candle's Llama holds at most MAX_SEQ_LEN positions; its Qwen2 and the native pass
        // grow their caches to the model's own context.
        let longest = if architecture == "qwen2" {
            usize::MAX
        } else {
            MAX_SEQ_LEN
        };
        let context = content
            .metadata
            .get(&format!("{architecture}.context_length"))
            .and_then(|v| v.to_u32().ok())
            .map_or(MAX_SEQ_LEN, |c| (c as usize).min(longest));
        let native = match (backend, device.is_cpu(), Llama::supports(&content)) {
            (Backend::Candle, _, _) | (Backend::Auto, false, _) | (Backend::Auto, _, Some(_)) => {
                false
            }
            (Backend::Native, false, _) => {
                return Err(MindError::Unsupported(
                    "the native backend runs on the CPU only".into(),
                ));
            }
            (Backend::Native, true, Some(why)) => {
                return Err(MindError::Unsupported(format!(
                    "the native backend does not cover this model: {why}"
                )));
            }
            (Backend::Native | Backend::Auto, true, None) => true,
        };
        let network = if native {
            Network::Native {
                llama: Box::new(Llama::load(&content, &mut reader, super::threads())?),
                live: Vec::new(),
                prefixes: PrefixCache::default(),
            }
        } else {
            let model = match architecture.as_str() {
                "llama" => CandleModel::Llama(
                    quantized_llama::ModelWeights::from_gguf(content, &mut reader, device)
                        .map_err(candle_error)?,
                ),
                "qwen2" => CandleModel::Qwen2(
                    quantized_qwen2::ModelWeights::from_gguf(content, &mut reader, device)
                        .map_err(candle_error)?,
                ),
                other => {
                    return Err(MindError::Unsupported(format!(
                        "architecture `{other}` (this build runs llama and qwen2)"
                    )));
                }
            };
            Network::Candle(Box::new(model))
        };
        let mut end_ids: Vec<u32> = tokenizer.eos.into_iter().collect();
        if let Some(t) = &template {
            end_ids.extend(t.end_markers().iter().filter_map(|m| tokenizer.token_id(m)));
        }
        Ok(Engine {
            network,
            tokenizer,
            template,
            end_ids,
            context,
            device: device.clone(),
        })
    }

    /// The backend that runs this engine: `native` or `candle`.
    pub fn backend(&self) -> Backend {
        match self.network {
            Network::Native { .. } => Backend::Native,
            Network::Candle(_) => Backend::Candle,
        }
    }

    pub fn tokenizer(&self) -> &MindTokenizer {
        &self.tokenizer
    }

    pub fn template(&self) -> Option<&ChatTemplate> {
        self.template.as_ref()
    }

    /// The prompt text a request becomes.
    pub fn prompt_text(&self, request: &GenerateRequest) -> Result<String, MindError> {
        let mut text = if request.raw {
            request.prompt.clone()
        } else {
            match &self.template {
                Some(t) => t.apply(request.system.as_deref(), &request.prompt),
                None => {
                    return Err(MindError::Unsupported(
                        "this model's chat template is not one this build knows: send the prompt raw"
                            .into(),
                    ));
                }
            }
        };
        text.push_str(&request.prefill);
        Ok(text)
    }

    /// Runs one generation. `on_text` is called at every token with the text that became final
    /// (often empty), and may stop the generation by answering `Break` (the text so far is kept).
    pub fn generate(
        &mut self,
        request: &GenerateRequest,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Generation, MindError> {
        if request.max_tokens == 0 {
            return Err(MindError::BadRequest(
                "max_tokens must be at least 1".into(),
            ));
        }
        if request.temperature.is_nan()
            || request.temperature < 0.0
            || request
                .top_p
                .is_some_and(|p| p.is_nan() || p <= 0.0 || p > 1.0)
        {
            return Err(MindError::BadRequest(
                "temperature must be >= 0 and top_p in (0, 1]".into(),
            ));
        }
        if request.repeat_penalty.is_nan() || request.repeat_penalty <= 0.0 {
            return Err(MindError::BadRequest("repeat_penalty must be > 0".into()));
        }
        let prompt = self.tokenizer.encode_prompt(&self.prompt_text(request)?)?;
        if prompt.is_empty() {
            return Err(MindError::BadRequest("the prompt is empty".into()));
        }
        if prompt.len() + request.max_tokens > self.context {
            return Err(MindError::TooLong {
                prompt: prompt.len(),
                max_tokens: request.max_tokens,
                context: self.context,
            });
        }
        let sampling = match (request.temperature, request.top_p) {
            (t, _) if t < 1e-7 => Sampling::ArgMax,
            (temperature, None) => Sampling::All { temperature },
            (temperature, Some(p)) => Sampling::TopP { p, temperature },
        };
        let mut sampler = LogitsProcessor::from_sampling(request.seed, sampling);

        let started = Instant::now();
        let reused = self.network.reuse(&prompt);
        let mut logits = self
            .network
            .forward(&self.device, &prompt[reused..], reused)?;
        self.network.remember(&prompt);
        let prompt_done = Instant::now();

        let mut history = prompt.clone();
        let mut ids: Vec<u32> = Vec::new();
        let mut stream = self.tokenizer.inner().decode_stream(true);
        let mut text = String::new();
        let mut emitted = 0usize;
        let hold = request.stop.iter().map(String::len).max().unwrap_or(0);
        let mut stop = StopReason::MaxTokens;
        while ids.len() < request.max_tokens {
            let next = self.sample(&mut sampler, &logits, request, &history)?;
            if self.end_ids.contains(&next) {
                stop = StopReason::EndOfTurn;
                break;
            }
            ids.push(next);
            history.push(next);
            if let Some(piece) = stream
                .step(next)
                .map_err(|e| MindError::Tokenizer(e.to_string()))?
            {
                text.push_str(&piece);
            }
            if let Some(at) = request
                .stop
                .iter()
                .filter_map(|s| text.find(s.as_str()))
                .min()
            {
                text.truncate(at);
                stop = StopReason::StopSequence;
                break;
            }
            // Hold back what could still become a stop sequence.
            let mut safe = text.len().saturating_sub(hold.saturating_sub(1));
            while !text.is_char_boundary(safe) {
                safe -= 1;
            }
            // Called at every token, with nothing new or not: it is also where a caller stops us.
            let flow = on_text(&text[emitted..safe.max(emitted)]);
            emitted = safe.max(emitted);
            if flow.is_break() {
                stop = StopReason::Cancelled;
                break;
            }
            if ids.len() == request.max_tokens {
                break;
            }
            logits = self
                .network
                .forward(&self.device, &[next], prompt.len() + ids.len() - 1)?;
        }
        if text.len() > emitted && stop != StopReason::Cancelled {
            let _ = on_text(&text[emitted..]);
        }
        let finished = Instant::now();
        let prompt_s = (prompt_done - started).as_secs_f64();
        let decode_s = (finished - prompt_done).as_secs_f64();
        let decoded = ids.len().saturating_sub(1);
        Ok(Generation {
            text,
            prompt_tokens: prompt.len(),
            tokens: ids.len(),
            cached_prompt_tokens: reused,
            prompt_tokens_per_s: per_second(prompt.len() - reused, prompt_s),
            tokens_per_s: per_second(decoded, decode_s),
            stop,
            ids,
        })
    }

    fn sample(
        &self,
        sampler: &mut LogitsProcessor,
        logits: &Tensor,
        request: &GenerateRequest,
        history: &[u32],
    ) -> Result<u32, MindError> {
        let mut logits = logits.squeeze(0).map_err(candle_error)?;
        if request.ignore_eos {
            let mut scores: Vec<f32> = logits
                .to_dtype(candle_core::DType::F32)
                .and_then(|l| l.to_vec1())
                .map_err(candle_error)?;
            for id in &self.end_ids {
                if let Some(score) = scores.get_mut(*id as usize) {
                    *score = f32::NEG_INFINITY;
                }
            }
            logits = Tensor::new(scores, &self.device).map_err(candle_error)?;
        }
        let logits = if (request.repeat_penalty - 1.0).abs() < f32::EPSILON {
            logits
        } else {
            let from = history.len().saturating_sub(request.repeat_last_n);
            candle_transformers::utils::apply_repeat_penalty(
                &logits,
                request.repeat_penalty,
                &history[from..],
            )
            .map_err(candle_error)?
        };
        sampler.sample(&logits).map_err(candle_error)
    }
}

fn per_second(n: usize, seconds: f64) -> f64 {
    if seconds > 0.0 {
        n as f64 / seconds
    } else {
        0.0
    }
}
