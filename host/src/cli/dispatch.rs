//! Each command: the request it builds, where it goes, and what is printed.

use super::*;

/// Runs one command and prints its result. Returns the failure to report, if any.
pub fn run(cli: Cli) -> Result<(), CliError> {
    let Cli { global, command } = cli;
    let request = match command {
        Command::Init { mind } => {
            let mut bar = crate::progress::Bytes::new(
                "importing the default mind",
                crate::progress::Plain::Stderr,
            );
            let (image, info) = crate::genesis::create_image(
                &global.image,
                global.durability,
                &methods(),
                &mind,
                CLI_ACTOR,
                &mut |done, total| bar.show(done, total),
            )?;
            bar.finish();
            let tx = image.newest_tx()?;
            let result = json!({
                "image": global.image.display().to_string(),
                "tx": tx,
                "mind": info,
                "token_file": crate::access::full_token_path(&global.image).display().to_string(),
            });
            print(&global, &result, || {
                format!(
                    "created {} from genesis (tx {tx}): `object`, `lobby`, `counter` and the genesis methods{}",
                    global.image.display(),
                    info.as_ref()
                        .map(|i| format!("; mind: {} ({})", i.name, i.quantization))
                        .unwrap_or_default()
                )
            });
            return Ok(());
        }
        Command::Serve {
            bind,
            curve,
            workers,
            max_message_bytes,
            grace_ms,
            mind,
            model,
            device,
            generate_timeout,
            compiles,
            compile_timeout,
            unjailed_compiles,
            max_in_flight_per_client,
            max_queued_bytes,
            max_reply_bytes,
            read_cache_bytes,
        } => {
            let shutdown = Arc::new(AtomicBool::new(false));
            for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                // The second signal ends the process at once (SQLite's WAL keeps the image whole).
                signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&shutdown))
                    .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&shutdown)))
                    .map_err(|e| {
                        Failure::new(Code::Internal, format!("cannot handle signals: {e}"))
                    })?;
            }
            let options = ServeOptions {
                image: global.image.clone(),
                bind,
                workers,
                durability: global.durability,
                max_message_bytes,
                grace: Duration::from_millis(grace_ms),
                mind,
                model,
                device,
                generate_timeout: Duration::from_secs(generate_timeout),
                curve,
                budget: server::load::Budget {
                    per_client: max_in_flight_per_client.max(1),
                    queued_bytes: max_queued_bytes,
                    reply_bytes: max_reply_bytes,
                    read_cache_bytes,
                    message_bytes: usize::try_from(max_message_bytes).unwrap_or(usize::MAX),
                    ..server::load::Budget::default()
                },
                forge: crate::forge::ForgeLimits {
                    concurrent: compiles
                        .unwrap_or_else(crate::forge::default_concurrent_compiles)
                        .max(1),
                    allow_unjailed: unjailed_compiles,
                    compile_time: Duration::from_secs(compile_timeout.max(1)),
                    ..crate::forge::ForgeLimits::default()
                },
            };
            return server::run(options, shutdown).map_err(|e| match e {
                server::ServerError::Image(e) => Failure::from(e),
                server::ServerError::Method(e) => Failure::from(e),
                server::ServerError::Mind(e) => Failure::from(e),
                server::ServerError::Genesis(e) => Failure::from(e),
                server::ServerError::Access(e) => Failure::new(Code::Unauthorized, e.to_string()),
                e @ server::ServerError::Exposed(_) => {
                    Failure::new(Code::BadRequest, e.to_string())
                }
                other => Failure::new(Code::Internal, other.to_string()),
            });
        }
        Command::Mind { command } => match command {
            MindCommand::Info => Request::Mind,
            MindCommand::List => return list_models(&global),
            MindCommand::Import {
                model,
                quantize,
                chunk_mib,
            } => {
                return import_mind(
                    &global,
                    &mind::ModelRef::parse(&model),
                    quantize.as_deref(),
                    chunk_mib,
                );
            }
            MindCommand::Generate {
                prompt,
                max_tokens,
                seed,
                temperature,
                top_p,
                repeat_penalty,
                system,
                raw,
                stop,
                ignore_eos,
                file,
                device,
                backend,
            } => {
                let request = GenerateRequest {
                    prompt,
                    system,
                    raw,
                    max_tokens,
                    seed,
                    temperature,
                    top_p,
                    repeat_penalty,
                    stop,
                    ignore_eos,
                    ..GenerateRequest::default()
                };
                return generate(&global, request, file.as_deref(), &device, backend);
            }
        },
        Command::Cycles {
            limit,
            export: Some(path),
        } => return export_cycles(&global, limit, &path),
        Command::Cycles {
            limit,
            export: None,
        } => Request::Cycles { limit },
        Command::Cycle { id } => Request::Cycle {
            cycle: Some(Oid(id)),
            id: None,
        },
        Command::Ping => Request::Ping,
        Command::ClientKey => {
            let keys = server::curve::ClientKeys::ensure()
                .map_err(|e| Failure::new(Code::Internal, e.to_string()))?;
            print(&global, &json!({"public_key": keys.public_z85}), || {
                keys.public_z85.clone()
            });
            return Ok(());
        }
        Command::Create { from, name, slots } => Request::Create {
            from: Refs::Many(from),
            name,
            slots: slots.map(|s| parse_slots(&s)).transpose()?,
        },
        Command::Get { object, slot } => Request::Get { to: object, slot },
        Command::Set {
            object,
            slot,
            value,
        } => Request::Set {
            to: object,
            slot,
            value: parse_json("the value", &value)?,
        },
        Command::Remove { object, slot } => Request::Remove { to: object, slot },
        Command::Rename {
            object,
            name,
            clear,
        } => Request::Rename {
            to: object,
            name: if clear { None } else { name },
        },
        Command::Parents { object, parents } => Request::Parents {
            to: object,
            parents: (!parents.is_empty()).then_some(parents),
        },
        Command::Send {
            object,
            selector,
            args,
            intent,
            example,
            examples,
        } => Request::Send {
            to: object,
            selector,
            args: args
                .iter()
                .enumerate()
                .map(|(i, a)| parse_json(&format!("argument {}", i + 1), a))
                .collect::<Result<_, _>>()?,
            intent,
            examples: read_examples(&example, examples.as_deref())?,
        },
        Command::Describe { object, at } => Request::Describe {
            to: object,
            at: at.map(TxId),
        },
        Command::History {
            since,
            limit,
            object,
        } => Request::History {
            since: since.map(TxId),
            limit: Some(limit),
            to: object,
        },
        Command::Diff { from, until } => Request::Diff {
            from: TxId(from),
            until: TxId(until),
        },
        Command::Replay { until, verify } => {
            return replay(&global, until.map(TxId), verify);
        }
        Command::Undo { tx } => Request::Undo { tx: TxId(tx) },
        Command::Install {
            object,
            selector,
            file,
        } => Request::Install {
            to: object,
            selector,
            source: std::fs::read_to_string(&file).map_err(|e| {
                Failure::new(
                    Code::BadRequest,
                    format!("cannot read {}: {e}", file.display()),
                )
            })?,
        },
        Command::Methods { object } => Request::Methods { to: object },
        Command::Method {
            target,
            source,
            wit,
            report,
            versions,
            version,
            diff,
        } => {
            let (to, selector) = split_target(&target)?;
            if let Some(pair) = diff {
                return diff_versions(&global, to, selector, &pair);
            }
            let request = Request::Method {
                method: None,
                to: Some(to),
                selector: Some(selector),
                version,
            };
            let result = Target::open(&global, false)?.execute(request)?;
            let part = if source {
                Some("source")
            } else if wit {
                Some("wit")
            } else if report {
                Some("report")
            } else if versions {
                Some("versions")
            } else {
                None
            };
            let shown = match part {
                Some(key) => result[key].clone(),
                None => result,
            };
            print(&global, &shown, || render_method(part, &shown));
            return Ok(());
        }
        Command::Revert { target, version } => {
            let (to, selector) = split_target(&target)?;
            Request::Revert {
                to,
                selector,
                version,
            }
        }
    };
    let mut backend = Target::open(&global, request.writes())?;
    let shown = request.clone();
    let result = backend.execute(request)?;
    print(&global, &result, || render(&shown, &result));
    Ok(())
}

/// `batos cycles --export FILE`: prompt/completion pairs of successful cycles, one per line.
pub(super) fn export_cycles(
    global: &Global,
    limit: Option<usize>,
    path: &std::path::Path,
) -> Result<(), Failure> {
    if limit.is_some() {
        return Err(Failure::new(
            Code::BadRequest,
            "--export takes every successful cycle; drop --limit",
        ));
    }
    let image = Image::open_read_only(&global.image)?;
    let pairs = crate::cognition::export(&image)?;
    let mut text = String::new();
    for pair in &pairs {
        text.push_str(&pair.to_string());
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| {
        Failure::new(
            Code::Internal,
            format!("cannot write {}: {e}", path.display()),
        )
    })?;
    let result = json!({"file": path.display().to_string(), "pairs": pairs.len()});
    print(global, &result, || {
        format!(
            "wrote {} prompt/completion pairs to {}",
            pairs.len(),
            path.display()
        )
    });
    Ok(())
}

/// The examples of `batos send`: each `--example`, then those of `--examples FILE.json`.
pub(super) fn read_examples(
    given: &[String],
    file: Option<&std::path::Path>,
) -> Result<Vec<crate::cognition::examples::Example>, Failure> {
    use crate::cognition::examples;
    let mut all = given
        .iter()
        .map(|e| {
            examples::parse_cli(e)
                .map_err(|m| Failure::new(Code::BadRequest, format!("--example {m}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Failure::new(
                Code::BadRequest,
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let more: Vec<examples::Example> = serde_json::from_str(&text).map_err(|e| {
            Failure::new(
                Code::BadRequest,
                format!("{}: not a list of examples ({e})", path.display()),
            )
        })?;
        all.extend(more);
    }
    examples::check_bounds(&all).map_err(|m| Failure::new(Code::BadRequest, m))?;
    Ok(all)
}

pub(super) fn replay(global: &Global, until: Option<TxId>, verify: bool) -> Result<(), CliError> {
    let mut backend = Target::open(global, false)?;
    let result = backend.execute(Request::Replay { until })?;
    print(global, &result, || {
        render(&Request::Replay { until }, &result)
    });
    if verify {
        // Verifying always replays the whole log against the live image.
        let full = if result.get("match").is_some() {
            result
        } else {
            backend.execute(Request::Replay { until: None })?
        };
        if full["match"] != json!(true) {
            return Err(Failure::new(
                Code::ReplayMismatch,
                format!(
                    "replay of the log to tx {} does not match the live image: {}",
                    full["tx"],
                    full["first_difference"].as_str().unwrap_or("hashes differ")
                ),
            ));
        }
        if !global.json {
            println!(
                "verified: the log replays to the live image at tx {}",
                full["tx"]
            );
        }
    }
    Ok(())
}

/// `batos method X.sel --diff A B`: a unified diff of two versions' sources.
pub(super) fn diff_versions(
    global: &Global,
    to: ObjRef,
    selector: String,
    pair: &[i64],
) -> Result<(), CliError> {
    let mut backend = Target::open(global, false)?;
    let mut sources = Vec::new();
    for version in pair {
        let request = Request::Method {
            method: None,
            to: Some(to.clone()),
            selector: Some(selector.clone()),
            version: Some(*version),
        };
        let result = backend.execute(request)?;
        sources.push(result["source"].as_str().unwrap_or_default().to_owned());
    }
    let (from, into) = (
        pair.first().copied().unwrap_or(0),
        pair.get(1).copied().unwrap_or(0),
    );
    let diff = similar::TextDiff::from_lines(&sources[0], &sources[1])
        .unified_diff()
        .header(
            &format!("{to}.{selector} v{from}"),
            &format!("{to}.{selector} v{into}"),
        )
        .to_string();
    let result = json!({"from": from, "to": into, "diff": diff});
    print(global, &result, || diff.clone());
    Ok(())
}

/// The method machinery, with the cache in its default place (`$BATOS_CACHE` overrides).
pub(super) fn methods() -> Runtime {
    Runtime::new(crate::forge::default_cache_dir(), Limits::default()).with_forge_limits(
        crate::forge::ForgeLimits {
            on_sdk_build: Some(crate::progress::sdk_build_spinner(
                crate::progress::Plain::Stderr,
            )),
            ..crate::forge::ForgeLimits::default()
        },
    )
}

/// `counter.increment` → (`counter`, `increment`); ids work too: `3.increment`.
pub(super) fn split_target(target: &str) -> Result<(ObjRef, String), Failure> {
    match target.split_once('.') {
        Some((object, selector)) if !object.is_empty() && !selector.is_empty() => Ok((
            object.parse().unwrap_or(ObjRef::Name(object.to_owned())),
            selector.to_owned(),
        )),
        _ => Err(Failure::new(
            Code::BadRequest,
            format!("`{target}` is not OBJECT.SELECTOR (e.g. counter.increment)"),
        )),
    }
}

pub(super) fn parse_json(what: &str, text: &str) -> Result<Value, Failure> {
    serde_json::from_str(text).map_err(|e| {
        Failure::new(
            Code::BadRequest,
            format!("{what} is not JSON ({e}): quote strings as '\"text\"'"),
        )
    })
}

pub(super) fn parse_slots(text: &str) -> Result<Map<String, Value>, Failure> {
    match parse_json("--slots", text)? {
        Value::Object(map) => Ok(map),
        _ => Err(Failure::new(
            Code::BadRequest,
            "--slots must be a JSON object",
        )),
    }
}
