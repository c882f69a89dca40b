//! The tokenizer, built from the GGUF's own metadata (no `tokenizer.json` travels with a model in
//! the image).
//!
//! Two vocabulary kinds: byte-level BPE (`tokenizer.ggml.model = gpt2`: SmolLM2, Llama 3, Qwen),
//! whose pre-tokenizer is chosen by `tokenizer.ggml.pre` and never guessed, and SentencePiece
//! (`llama`: TinyLlama, Llama 2, Mistral), built from the scored vocabulary as a unigram model
//! with byte fallback. Control tokens (`token_type` 3) are special tokens: chat markers in a
//! prompt are parsed as themselves.

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::DecoderWrapper;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::BPE;
use tokenizers::models::unigram::Unigram;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use super::MindError;

/// GGUF's token types (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// The pre-tokenizers of byte-level BPE vocabularies this build knows, by `tokenizer.ggml.pre`.
pub const KNOWN_PRE_TOKENIZERS: &[&str] = &["smollm", "gpt2", "llama-bpe", "llama3", "qwen2"];

const REGEX_LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const REGEX_QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A model's tokenizer with what generation needs to know about its special tokens.
#[derive(Debug, Clone)]
pub struct MindTokenizer {
    inner: Tokenizer,
    /// `gpt2/<pre>` or `llama`.
    pub kind: String,
    pub bos: Option<u32>,
    /// Whether a prompt starts with the BOS token (`tokenizer.ggml.add_bos_token`).
    pub add_bos: bool,
    pub eos: Option<u32>,
    pub vocab_size: usize,
}

fn meta<'a>(ct: &'a Content, key: &str) -> Result<&'a Value, MindError> {
    ct.metadata
        .get(key)
        .ok_or_else(|| MindError::BadModel(format!("the GGUF has no `{key}` in its metadata")))
}

fn strings(ct: &Content, key: &str) -> Result<Vec<String>, MindError> {
    let bad = || MindError::BadModel(format!("`{key}` is not a list of strings"));
    meta(ct, key)?
        .to_vec()
        .map_err(|_| bad())?
        .iter()
        .map(|v| v.to_string().cloned().map_err(|_| bad()))
        .collect()
}

fn integer(v: &Value) -> Option<i64> {
    Some(match v {
        Value::U8(x) => *x as i64,
        Value::I8(x) => *x as i64,
        Value::U16(x) => *x as i64,
        Value::I16(x) => *x as i64,
        Value::U32(x) => *x as i64,
        Value::I32(x) => *x as i64,
        Value::U64(x) => *x as i64,
        Value::I64(x) => *x,
        _ => return None,
    })
}

fn optional_id(ct: &Content, key: &str) -> Option<u32> {
    ct.metadata
        .get(key)
        .and_then(integer)
        .and_then(|v| u32::try_from(v).ok())
}

fn token_types(ct: &Content, n: usize) -> Result<Vec<i64>, MindError> {
    match ct.metadata.get("tokenizer.ggml.token_type") {
        None => Ok(vec![1; n]),
        Some(v) => {
            let bad = || {
                MindError::BadModel("`tokenizer.ggml.token_type` is not a list of integers".into())
            };
            v.to_vec()
                .map_err(|_| bad())?
                .iter()
                .map(|t| integer(t).ok_or_else(bad))
                .collect()
        }
    }
}

/// `tokenizer.ggml.pre`, or `gpt2` when the file names none.
fn pre_tokenizer(ct: &Content) -> Result<String, MindError> {
    match ct.metadata.get("tokenizer.ggml.pre") {
        Some(v) => v
            .to_string()
            .cloned()
            .map_err(|_| MindError::BadModel("`tokenizer.ggml.pre` is not a string".into())),
        None => Ok("gpt2".to_owned()),
    }
}

fn unknown_pre_tokenizer(pre: &str) -> MindError {
    MindError::Unsupported(format!(
        "pre-tokenizer `{pre}` (tokenizer.ggml.pre); known: {}",
        KNOWN_PRE_TOKENIZERS.join(", ")
    ))
}

fn unknown_model(model: &str) -> MindError {
    MindError::Unsupported(format!(
        "tokenizer model `{model}` (this build knows `gpt2` byte-level BPE and `llama` SentencePiece)"
    ))
}

fn wrap(e: tokenizers::Error) -> MindError {
    MindError::Tokenizer(e.to_string())
}

impl MindTokenizer {
    /// The tokenizer's kind (`gpt2/<pre>` or `llama`) and vocabulary size, checked as far as
    /// the metadata tells without building it: an import learns whether this build can run the
    /// model's tokenizer without holding a second copy of the vocabulary.
    pub fn describe(ct: &Content) -> Result<(String, usize), MindError> {
        let model = meta(ct, "tokenizer.ggml.model")?
            .to_string()
            .map_err(|_| MindError::BadModel("`tokenizer.ggml.model` is not a string".into()))?;
        let vocabulary = meta(ct, "tokenizer.ggml.tokens")?
            .to_vec()
            .map_err(|_| MindError::BadModel("`tokenizer.ggml.tokens` is not a list".into()))?
            .len();
        let kind = match model.as_str() {
            "gpt2" => {
                let pre = pre_tokenizer(ct)?;
                if !KNOWN_PRE_TOKENIZERS.contains(&pre.as_str()) {
                    return Err(unknown_pre_tokenizer(&pre));
                }
                format!("gpt2/{pre}")
            }
            "llama" => "llama".to_owned(),
            other => return Err(unknown_model(other)),
        };
        Ok((kind, vocabulary))
    }

    pub fn from_gguf(ct: &Content) -> Result<Self, MindError> {
        let model = meta(ct, "tokenizer.ggml.model")?
            .to_string()
            .map_err(|_| MindError::BadModel("`tokenizer.ggml.model` is not a string".into()))?
            .clone();
        let tokens = strings(ct, "tokenizer.ggml.tokens")?;
        let types = token_types(ct, tokens.len())?;
        let (mut inner, kind) = match model.as_str() {
            "gpt2" => Self::byte_level_bpe(ct, &tokens)?,
            "llama" => (Self::sentencepiece(ct, &tokens)?, "llama".to_owned()),
            other => return Err(unknown_model(other)),
        };
        // The vocabulary's tokens of one type, as added tokens (special or not).
        let of_type = |kind, special| -> Vec<AddedToken> {
            tokens
                .iter()
                .zip(&types)
                .filter(|(_, t)| **t == kind)
                .map(|(tok, _)| AddedToken::from(tok.clone(), special))
                .collect()
        };
        inner
            .add_special_tokens(of_type(TOKEN_TYPE_CONTROL, true))
            .map_err(wrap)?;
        inner
            .add_tokens(of_type(TOKEN_TYPE_USER_DEFINED, false))
            .map_err(wrap)?;
        let add_bos = ct
            .metadata
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(model == "llama");
        Ok(MindTokenizer {
            inner,
            kind,
            bos: optional_id(ct, "tokenizer.ggml.bos_token_id"),
            add_bos,
            eos: optional_id(ct, "tokenizer.ggml.eos_token_id"),
            vocab_size: tokens.len(),
        })
    }

    fn byte_level_bpe(ct: &Content, tokens: &[String]) -> Result<(Tokenizer, String), MindError> {
        let pre = pre_tokenizer(ct)?;
        let merges = strings(ct, "tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
                    .ok_or_else(|| {
                        MindError::BadModel(format!("the merge `{m}` is not two tokens"))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(wrap)?;
        let mut tokenizer = Tokenizer::new(bpe);
        let byte_level = tokenizers::pre_tokenizers::byte_level::ByteLevel::new(false, true, true);
        let split = |regex: &str| -> Result<PreTokenizerWrapper, MindError> {
            let split = Split::new(
                SplitPattern::Regex(regex.to_owned()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(wrap)?;
            let no_regex =
                tokenizers::pre_tokenizers::byte_level::ByteLevel::new(false, true, false);
            Ok(PreSequence::new(vec![split.into(), no_regex.into()]).into())
        };
        let pre_tokenizer: PreTokenizerWrapper = match pre.as_str() {
            // SmolLM's tokenizer.json: every digit alone, then GPT-2's byte-level split.
            "smollm" => PreSequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
            "gpt2" => byte_level.into(),
            "llama-bpe" | "llama3" => split(REGEX_LLAMA3)?,
            "qwen2" => split(REGEX_QWEN2)?,
            other => return Err(unknown_pre_tokenizer(other)),
        };
        tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
        tokenizer.with_decoder(Some(ByteLevel::new(false, true, true)));
        Ok((tokenizer, format!("gpt2/{pre}")))
    }

    fn sentencepiece(ct: &Content, tokens: &[String]) -> Result<Tokenizer, MindError> {
        let scores: Vec<f64> = match ct.metadata.get("tokenizer.ggml.scores") {
            Some(v) => v
                .to_vec()
                .map_err(|_| MindError::BadModel("`tokenizer.ggml.scores` is not a list".into()))?
                .iter()
                .map(|s| s.to_f32().map(f64::from))
                .collect::<Result<_, _>>()
                .map_err(|_| {
                    MindError::BadModel("`tokenizer.ggml.scores` holds a non-float".into())
                })?,
            None => {
                return Err(MindError::BadModel(
                    "a SentencePiece vocabulary needs `tokenizer.ggml.scores`".into(),
                ));
            }
        };
        if scores.len() != tokens.len() {
            return Err(MindError::BadModel(format!(
                "{} tokens but {} scores",
                tokens.len(),
                scores.len()
            )));
        }
        let unk = optional_id(ct, "tokenizer.ggml.unknown_token_id").map(|u| u as usize);
        let vocab = tokens.iter().cloned().zip(scores).collect();
        let unigram = Unigram::from(vocab, unk, true).map_err(wrap)?;
        let mut tokenizer = Tokenizer::new(unigram);
        let normalizer = NormalizerSequence::new(vec![
            Prepend::new("▁".to_owned()).into(),
            Replace::new(" ", "▁").map_err(wrap)?.into(),
        ]);
        tokenizer.with_normalizer(Some(normalizer)).map_err(wrap)?;
        let decoder = DecoderSequence::new(vec![
            DecoderWrapper::Replace(Replace::new("▁", " ").map_err(wrap)?),
            DecoderWrapper::ByteFallback(ByteFallback::new()),
            DecoderWrapper::Fuse(Fuse::new()),
            DecoderWrapper::Strip(Strip::new(' ', 1, 0)),
        ]);
        tokenizer.with_decoder(Some(decoder));
        Ok(tokenizer)
    }

    /// The ids of `text`, special markers parsed as themselves, without BOS.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, MindError> {
        Ok(self
            .inner
            .encode(text, false)
            .map_err(wrap)?
            .get_ids()
            .to_vec())
    }

    /// The ids of a whole prompt: BOS first where the model wants it.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, MindError> {
        let mut ids = Vec::new();
        if let (true, Some(bos)) = (self.add_bos, self.bos) {
            ids.push(bos);
        }
        ids.extend(self.encode(text)?);
        Ok(ids)
    }

    /// The text of `ids`; special tokens are kept when `specials` is true.
    pub fn decode(&self, ids: &[u32], specials: bool) -> Result<String, MindError> {
        self.inner.decode(ids, !specials).map_err(wrap)
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub(super) fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use candle_core::quantized::gguf_file::{self, Content, Value};

    use super::*;

    /// A GGUF with only tokenizer metadata, parsed back as the loader would.
    fn gguf(metadata: Vec<(&str, Value)>) -> Content {
        let refs: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
        let mut file = Cursor::new(Vec::new());
        gguf_file::write(&mut file, &refs, &[]).expect("write gguf");
        file.set_position(0);
        Content::read(&mut file).expect("read gguf")
    }

    fn strings(items: &[String]) -> Value {
        Value::Array(items.iter().map(|s| Value::String(s.clone())).collect())
    }

    /// A small SentencePiece vocabulary: specials, the 256 byte tokens, and a few pieces.
    fn sentencepiece() -> MindTokenizer {
        let mut tokens = vec!["<unk>".to_owned(), "<s>".into(), "</s>".into()];
        let mut types = vec![2, 3, 3];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(6);
        }
        for piece in [
            "▁", "▁Hello", "▁world", "H", "e", "l", "o", "w", "r", "d", "▁wor", "ld",
        ] {
            tokens.push(piece.to_owned());
            types.push(1);
        }
        let scores = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                Value::F32(if i < 259 {
                    0.0
                } else {
                    t.chars().count() as f32 - 10.0
                })
            })
            .collect();
        let ct = gguf(vec![
            ("tokenizer.ggml.model", Value::String("llama".into())),
            ("tokenizer.ggml.tokens", strings(&tokens)),
            ("tokenizer.ggml.scores", Value::Array(scores)),
            (
                "tokenizer.ggml.token_type",
                Value::Array(types.into_iter().map(Value::I32).collect()),
            ),
            ("tokenizer.ggml.unknown_token_id", Value::U32(0)),
            ("tokenizer.ggml.bos_token_id", Value::U32(1)),
            ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ]);
        MindTokenizer::from_gguf(&ct).expect("a SentencePiece tokenizer")
    }

    #[test]
    fn sentencepiece_vocabularies_encode_with_pieces_and_fall_back_to_bytes() {
        let t = sentencepiece();
        assert_eq!(t.kind, "llama");
        let hello = t.token_id("▁Hello").expect("piece");
        let world = t.token_id("▁world").expect("piece");
        assert_eq!(t.encode("Hello world").expect("encode"), vec![hello, world]);
        assert_eq!(t.encode_prompt("Hello").expect("encode"), vec![1, hello]);
        for text in ["Hello world", "Héllo wörld 🦀", "  two  spaces "] {
            let ids = t.encode(text).expect("encode");
            assert_eq!(t.decode(&ids, true).expect("decode"), text, "{ids:?}");
        }
        // Control tokens are parsed as themselves.
        assert_eq!(t.encode("</s>").expect("encode"), vec![2]);
    }

    #[test]
    fn an_unknown_pre_tokenizer_is_refused_not_guessed() {
        let tokens = vec!["a".to_owned(), "b".into(), "ab".into()];
        let ct = gguf(vec![
            ("tokenizer.ggml.model", Value::String("gpt2".into())),
            ("tokenizer.ggml.pre", Value::String("mystery".into())),
            ("tokenizer.ggml.tokens", strings(&tokens)),
            ("tokenizer.ggml.merges", strings(&["a b".to_owned()])),
        ]);
        let err = MindTokenizer::from_gguf(&ct).expect_err("refused");
        assert!(err.to_string().contains("mystery"), "{err}");
        let ct = gguf(vec![
            ("tokenizer.ggml.model", Value::String("bert".into())),
            ("tokenizer.ggml.tokens", strings(&tokens)),
        ]);
        let err = MindTokenizer::from_gguf(&ct).expect_err("refused");
        assert!(err.to_string().contains("bert"), "{err}");
    }
}
