//! GGUF weights in the image: import (streamed into a chunked blob, one transaction), the `mind`
//! object's metadata, and the `Read + Seek` the loader reads the weights through.
//!
//! A plain import never holds more than one chunk of the file. `--quantize q8_0` rewrites the
//! model's quantized matrices as Q8_0 (candle has AVX2 kernels for Q8_0, none for Q4_1); that
//! path holds the requantized tensors in memory while it writes them.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek};
use std::path::Path;
use std::str::FromStr;

use candle_core::Device;
use candle_core::quantized::gguf_file::{self, Content, Value as GgufValue};
use candle_core::quantized::{GgmlDType, QTensor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::tokenizer::MindTokenizer;
use super::{MIND_OBJECT, MindError, candle_error, candle_text};
use batos_image::blobs::DEFAULT_CHUNK_SIZE;
use batos_image::object::{Oid, Slot, TxId};
use batos_image::{BlobId, Image, ImageError};

/// The model's metadata, as the `mind` object's slots hold it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MindInfo {
    pub name: String,
    pub architecture: String,
    pub parameters: u64,
    /// The most common tensor type by bytes (`q4_1`, `q8_0`, `q4_k`, ...).
    pub quantization: String,
    /// The file's own name for its mix of types (`general.file_type`: `Q4_K_M`, ...), when it
    /// states one this build knows.
    #[serde(default)]
    pub file_type: Option<String>,
    pub context_length: u64,
    pub vocab_size: u64,
    pub tokenizer: String,
    /// The chat template from the GGUF, as text (ChatML for SmolLM2).
    pub chat_template: Option<String>,
    /// sha256 and size of the GGUF as stored in the image.
    pub sha256: String,
    pub size: u64,
    pub blob: BlobId,
    pub chunk_size: u64,
    /// The imported file's name, its sha256, and its quantization when it was requantized.
    pub source: String,
    pub source_sha256: String,
    pub requantized_from: Option<String>,
}

impl MindInfo {
    /// The mind's metadata, read from the `mind` object.
    pub fn read(image: &Image) -> Result<MindInfo, MindError> {
        let oid = image.named(MIND_OBJECT)?.ok_or(MindError::NoMind)?;
        let slots = image.describe(oid, None)?.slots;
        if !slots.contains_key("blob") {
            return Err(MindError::NoMind);
        }
        serde_json::from_value(Value::Object(slots)).map_err(|e| MindError::BadInfo(e.to_string()))
    }
}

/// What `--quantize` may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantize {
    Q8_0,
}

impl FromStr for Quantize {
    type Err = MindError;
    fn from_str(s: &str) -> Result<Self, MindError> {
        match s.to_ascii_lowercase().as_str() {
            "q8_0" | "q8" => Ok(Quantize::Q8_0),
            other => Err(MindError::Unsupported(format!(
                "requantizing to `{other}` (this build offers q8_0)"
            ))),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub quantize: Option<Quantize>,
    pub chunk_size: usize,
    /// Refuse (and write nothing) unless the file's sha256 is this.
    pub expect_sha256: Option<String>,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            quantize: None,
            chunk_size: DEFAULT_CHUNK_SIZE,
            expect_sha256: None,
        }
    }
}

/// ggml's name of a tensor type, in lower case: `q4_1`, `q8_0`, `q4_k`, `q6_k`.
fn dtype_name(dtype: GgmlDType) -> String {
    let name = format!("{dtype:?}").to_ascii_lowercase();
    match name.strip_suffix('k') {
        Some(stem) if !stem.ends_with('_') => format!("{stem}_k"),
        _ => name,
    }
}

/// llama.cpp's names of `general.file_type` (its `llama_ftype`).
fn file_type_name(code: u32) -> Option<&'static str> {
    Some(match code {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        32 => "BF16",
        _ => return None,
    })
}

fn text(ct: &Content, key: &str) -> Option<String> {
    ct.metadata
        .get(key)
        .and_then(|v| v.to_string().ok())
        .cloned()
}

/// The metadata of a parsed GGUF that is the same whether it comes from a file or the image.
struct Facts {
    name: String,
    architecture: String,
    parameters: u64,
    quantization: String,
    file_type: Option<String>,
    context_length: u64,
    vocab_size: u64,
    tokenizer: String,
    chat_template: Option<String>,
}

/// Checks that `ct` is a model this build can run, and reads its facts.
fn facts(ct: &Content) -> Result<Facts, MindError> {
    let architecture = text(ct, "general.architecture")
        .ok_or_else(|| MindError::BadModel("no `general.architecture` in its metadata".into()))?;
    if architecture != "llama" && architecture != "qwen2" {
        return Err(MindError::Unsupported(format!(
            "architecture `{architecture}` (this build runs llama and qwen2 models)"
        )));
    }
    let (tokenizer_kind, vocab_size) = MindTokenizer::describe(ct)?;
    let mut parameters = 0u64;
    let mut bytes_by_type: std::collections::BTreeMap<String, u64> = Default::default();
    for info in ct.tensor_infos.values() {
        let elems = info.shape.elem_count() as u64;
        parameters += elems;
        let bytes =
            elems * info.ggml_dtype.type_size() as u64 / info.ggml_dtype.block_size() as u64;
        *bytes_by_type
            .entry(dtype_name(info.ggml_dtype))
            .or_default() += bytes;
    }
    let quantization = bytes_by_type
        .iter()
        .max_by_key(|(_, b)| **b)
        .map(|(t, _)| t.clone())
        .ok_or_else(|| MindError::BadModel("the GGUF holds no tensors".into()))?;
    let context_length = ct
        .metadata
        .get(&format!("{architecture}.context_length"))
        .and_then(|v| v.to_u32().ok())
        .unwrap_or(2048) as u64;
    Ok(Facts {
        name: text(ct, "general.name").unwrap_or_else(|| "unnamed".into()),
        architecture,
        parameters,
        quantization,
        file_type: ct
            .metadata
            .get("general.file_type")
            .and_then(|v| v.to_u32().ok())
            .and_then(file_type_name)
            .map(str::to_owned),
        context_length,
        vocab_size: vocab_size as u64,
        tokenizer: tokenizer_kind,
        chat_template: text(ct, "tokenizer.chat_template"),
    })
}

fn io_error(path: &Path) -> impl Fn(io::Error) -> MindError + '_ {
    move |source| MindError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Reads only the GGUF's header and metadata from a file.
pub fn read_header(path: &Path) -> Result<Content, MindError> {
    let file = File::open(path).map_err(io_error(path))?;
    let mut reader = BufReader::new(file);
    Content::read(&mut reader)
        .map_err(|e| MindError::BadModel(format!("{}: {}", path.display(), candle_text(&e))))
}

fn sha256_of(path: &Path) -> Result<String, MindError> {
    let mut file = File::open(path).map_err(io_error(path))?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher).map_err(io_error(path))?;
    Ok(hex::encode(hasher.finalize()))
}

/// Copies `from` into `to`, telling `progress` the bytes done so far.
fn copy_with_progress(
    from: &mut impl Read,
    to: &mut impl io::Write,
    progress: &mut dyn FnMut(u64),
) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(done),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        done += n as u64;
        progress(done);
    }
}

/// Whether requantizing to Q8_0 applies to a tensor of this type and shape: quantized matrices
/// whose rows split into Q8_0's 32-element blocks. Norms and F32 vectors stay as they are.
fn requantizable(dtype: GgmlDType, dims: &[usize]) -> bool {
    !matches!(
        dtype,
        GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 | GgmlDType::Q8_0
    ) && dims.len() == 2
        && dims.last().is_some_and(|d| d % 32 == 0)
}

/// Imports the GGUF at `path` into the image as its mind, in one transaction by `actor`.
/// `progress` hears (bytes done, bytes in all).
pub fn import(
    image: &mut Image,
    path: &Path,
    options: &ImportOptions,
    actor: &str,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(MindInfo, TxId), MindError> {
    let header = read_header(path)?;
    let mut facts = facts(&header)?;
    let total = std::fs::metadata(path).map_err(io_error(path))?.len();
    let source = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let note = format!("mind import {source}");
    let (info, tx) = image.transact(actor, &note, |tx| -> Result<MindInfo, MindError> {
        let (record, source_sha256, requantized_from) = match options.quantize {
            None => {
                let mut file = File::open(path).map_err(io_error(path))?;
                let mut writer = tx.blob_writer(options.chunk_size)?;
                copy_with_progress(&mut file, &mut writer, &mut |done| progress(done, total))
                    .map_err(io_error(path))?;
                let record = writer.finish()?;
                let sha = record.sha256.clone();
                (record, sha, None)
            }
            Some(Quantize::Q8_0) => {
                let source_sha256 = sha256_of(path)?;
                let (metadata, tensors) =
                    requantize(path, &header, &mut |done| progress(done, total))?;
                let metadata: Vec<(&str, &GgufValue)> =
                    metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
                let tensors: Vec<(&str, &QTensor)> =
                    tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
                let mut writer = tx.blob_writer(options.chunk_size)?;
                gguf_file::write(&mut writer, &metadata, &tensors).map_err(candle_error)?;
                let record = writer.finish()?;
                let from = facts.quantization.clone();
                facts.quantization = dtype_name(GgmlDType::Q8_0);
                facts.file_type = Some("Q8_0".into());
                (record, source_sha256, Some(from))
            }
        };
        if let Some(expected) = &options.expect_sha256
            && *expected != source_sha256
        {
            return Err(MindError::WrongModel {
                expected: expected.clone(),
                found: source_sha256,
            });
        }
        let info = MindInfo {
            name: facts.name.clone(),
            architecture: facts.architecture.clone(),
            parameters: facts.parameters,
            quantization: facts.quantization.clone(),
            file_type: facts.file_type.clone(),
            context_length: facts.context_length,
            vocab_size: facts.vocab_size,
            tokenizer: facts.tokenizer.clone(),
            chat_template: facts.chat_template.clone(),
            sha256: record.sha256.clone(),
            size: record.size,
            blob: record.id,
            chunk_size: record.chunk_size,
            source: source.clone(),
            source_sha256,
            requantized_from,
        };
        write_info(tx, &info)?;
        Ok(info)
    })?;
    Ok((info, tx))
}

/// Reads every tensor of the file, rewriting the quantized matrices as Q8_0.
#[allow(clippy::type_complexity)]
fn requantize(
    path: &Path,
    header: &Content,
    progress: &mut dyn FnMut(u64),
) -> Result<(Vec<(String, GgufValue)>, Vec<(String, QTensor)>), MindError> {
    let mut file = BufReader::new(File::open(path).map_err(io_error(path))?);
    let cpu = Device::Cpu;
    let mut names: Vec<&String> = header.tensor_infos.keys().collect();
    // The file's own order, so the new file reads front to back like the old one.
    names.sort_by_key(|n| header.tensor_infos.get(*n).map(|i| i.offset));
    let mut tensors = Vec::with_capacity(names.len());
    for name in names {
        let qt = header.tensor(&mut file, name, &cpu).map_err(candle_error)?;
        let qt = if requantizable(qt.dtype(), qt.shape().dims()) {
            let dense = qt.dequantize(&cpu).map_err(candle_error)?;
            QTensor::quantize(&dense, GgmlDType::Q8_0).map_err(candle_error)?
        } else {
            qt
        };
        tensors.push((name.clone(), qt));
        progress(file.stream_position().map_err(io_error(path))?);
    }
    let mut metadata: Vec<(String, GgufValue)> = header
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    metadata.retain(|(k, _)| k != "general.file_type");
    // llama.cpp's LLAMA_FTYPE_MOSTLY_Q8_0.
    metadata.push(("general.file_type".into(), GgufValue::U32(7)));
    metadata.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((metadata, tensors))
}

/// Writes the mind's metadata into the `mind` object, creating it (a child of `object`) if
/// needed. Slots of an earlier mind that the new one lacks are removed.
fn write_info(tx: &mut batos_image::Tx, info: &MindInfo) -> Result<Oid, ImageError> {
    let Value::Object(slots) = json!(info) else {
        return Err(ImageError::Corrupt(
            "the mind's metadata is not an object".into(),
        ));
    };
    let oid = match tx.named(MIND_OBJECT)? {
        Some(oid) => oid,
        None => {
            let proto = tx.resolve(&batos_image::object::ObjRef::Name("object".into()))?;
            tx.create_object(&[proto], Some(MIND_OBJECT), Map::new())?
        }
    };
    for (slot, value) in slots {
        if value.is_null() {
            if tx.own_slot(oid, &slot)?.is_some() {
                tx.remove_slot(oid, &slot)?;
            }
        } else {
            tx.set_slot(oid, &slot, Slot::Value(value))?;
        }
    }
    Ok(oid)
}

/// The file's tensors and tokenizer metadata, parsed from any `Read + Seek` (a file, a blob).
pub fn parse(reader: &mut (impl Read + Seek)) -> Result<Content, MindError> {
    Content::read(reader).map_err(candle_error)
}
