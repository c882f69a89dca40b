//! `batos mind …`: the known models, import into the image, and generation here.

use super::*;

/// `batos mind list`: the catalog, and what the model cache holds.
pub(super) fn list_models(global: &Global) -> Result<(), Failure> {
    let models: Vec<Value> = mind::catalog::all()
        .iter()
        .map(|m| {
            json!({
                "name": m.name,
                "description": m.description,
                "licence": m.licence,
                "bytes": m.bytes,
                "sha256": m.sha256,
                "parts": m.parts.len(),
                "default": m.name == mind::catalog::default_name(),
                "cached": m.cached(),
                "path": m.path().map(|p| p.display().to_string()),
            })
        })
        .collect();
    let result = json!({"models": models});
    print(global, &result, || {
        mind::catalog::all()
            .iter()
            .map(|m| {
                let state = if m.cached() {
                    "cached".to_owned()
                } else {
                    format!("not cached: {}", m.fetch_command())
                };
                let default = if m.name == mind::catalog::default_name() {
                    " (default)"
                } else {
                    ""
                };
                format!(
                    "{}{default}: {} MiB, {}; {}\n    {}; licence {}",
                    m.name,
                    m.bytes >> 20,
                    m.description,
                    state,
                    m.path()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    m.licence
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(())
}

/// `batos mind import NAME|FILE`: straight into the file, as its writer.
pub(super) fn import_mind(
    global: &Global,
    model: &mind::ModelRef,
    quantize: Option<&str>,
    chunk_mib: usize,
) -> Result<(), Failure> {
    let (file, expect_sha256) = model.file()?;
    let file = file.as_path();
    if chunk_mib == 0 || chunk_mib > 512 {
        return Err(Failure::new(
            Code::BadRequest,
            "--chunk-mib must be between 1 and 512",
        ));
    }
    let options = ImportOptions {
        quantize: quantize.map(str::parse::<Quantize>).transpose()?,
        chunk_size: chunk_mib << 20,
        expect_sha256,
    };
    let mut image = Image::open(&global.image, global.durability)?;
    let mut bar = crate::progress::Bytes::new(
        &format!("importing {}", file.display()),
        crate::progress::Plain::Stderr,
    );
    let (info, tx) = weights::import(&mut image, file, &options, CLI_ACTOR, &mut |done, total| {
        bar.show(done, total)
    })?;
    bar.finish();
    let result = json!({"tx": tx, "mind": info});
    print(global, &result, || {
        format!(
            "imported {} into {} (tx {tx}): {} parameters, {}, {} bytes in blob {}, sha256 {}",
            info.name,
            global.image.display(),
            info.parameters,
            info.quantization,
            info.size,
            info.blob,
            info.sha256
        )
    });
    Ok(())
}

/// `batos mind generate`: loads the mind here (from the image, read-only, or from a file) and
/// streams the text to stdout.
pub(super) fn generate(
    global: &Global,
    request: GenerateRequest,
    file: Option<&std::path::Path>,
    device: &str,
    backend: mind::Backend,
) -> Result<(), Failure> {
    use std::io::Write;
    let device = mind::device(device)?;
    let loaded = std::time::Instant::now();
    let mut engine = match file {
        Some(path) => {
            let f = std::fs::File::open(path).map_err(|source| MindError::Io {
                path: path.to_owned(),
                source,
            })?;
            Engine::load_with(f, &device, backend)?
        }
        None => {
            let image = Image::open_read_only(&global.image)?;
            let info = MindInfo::read(&image)?;
            Engine::load_with(image.blob_reader(info.blob)?, &device, backend)?
        }
    };
    let load_s = loaded.elapsed().as_secs_f64();
    let stream = !global.json;
    let mut out = std::io::stdout();
    let generation = engine.generate(&request, &mut |piece| {
        if stream && !piece.is_empty() {
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
        }
        std::ops::ControlFlow::Continue(())
    })?;
    if global.json {
        println!("{}", json!(generation));
    } else {
        println!();
    }
    eprintln!(
        "batos: loaded in {load_s:.2} s ({} backend); prompt {} tokens at {:.1} tokens/s; generated {} tokens at {:.1} tokens/s ({:?})",
        engine.backend(),
        generation.prompt_tokens,
        generation.prompt_tokens_per_s,
        generation.tokens,
        generation.tokens_per_s,
        generation.stop
    );
    Ok(())
}
