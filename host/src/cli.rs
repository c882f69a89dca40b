//! The command line: parses arguments into protocol [`Request`]s and prints their results.
//!
//! Until the host serves the protocol, every command acts directly on the image file: the
//! inspecting ones read-only (they work while another process writes), the writing ones as the
//! image's single writer. `--offline` is accepted from the start so scripts need not change when
//! the host arrives.

use crate::protocol::Code;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde_json::{Map, Value, json};

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::image::{Durability, Image};
use crate::method::Methods;
use crate::mind::{
    self, Engine, GenerateRequest, ImportOptions, MindError, MindInfo, MindSpec, Quantize, weights,
};
use crate::object::{ObjRef, Oid, TxId};
use crate::protocol::{self, Executed, Failure, Refs, Request};
use crate::sandbox::Limits;
use crate::server::client::Client;
use crate::server::{self, ServeOptions};

/// The actor recorded for changes made from the command line.
pub const CLI_ACTOR: &str = "cli";

/// batos: a living image of prototype objects, with its whole history.
#[derive(Debug, Parser)]
#[command(name = "batos", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// The image file.
    #[arg(long, global = true, default_value = "image.db", env = "BATOS_IMAGE")]
    pub image: PathBuf,
    /// Where a running host listens (used once the host serves the protocol).
    #[arg(
        long,
        global = true,
        default_value = "tcp://127.0.0.1:5555",
        env = "BATOS_ENDPOINT"
    )]
    pub endpoint: String,
    /// Print exactly the protocol's `result` (or `error`) as one JSON document.
    #[arg(long, global = true)]
    pub json: bool,
    /// How the host's log lines (stderr) are written: `text`, or `json` (one object per line).
    /// Levels come from RUST_LOG (default `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "BATOS_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Act on the image file directly instead of through a running host.
    #[arg(long, global = true)]
    pub offline: bool,
    /// How hard a commit waits for the disk: `full` survives a power cut, `normal` a crash.
    #[arg(long, global = true, default_value = "full", value_parser = durability_parser())]
    pub durability: Durability,
    /// Seconds to wait for a host's reply (installs may compile for a while).
    #[arg(long, global = true, default_value_t = 300)]
    pub timeout: u64,
    /// The access token to send a host (default: the file IMAGE.token beside the image).
    #[arg(long, global = true, env = "BATOS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Talk CURVE to a host with this public key (Z85; its IMAGE.curve/server.public). Without
    /// it, an endpoint beyond loopback uses the key beside --image.
    #[arg(long, global = true, env = "BATOS_SERVER_KEY")]
    pub server_key: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an image from genesis, with the default model as its mind unless `--mind none`.
    Init {
        /// `image`: import the default model (Qwen2.5-Coder-1.5B-Instruct, or BATOS_MODEL: a
        /// known model's name or a GGUF file); `none`: no mind.
        #[arg(long, default_value = "image", env = "BATOS_MIND")]
        mind: MindSpec,
    },
    /// Serve the image to ZeroMQ clients until SIGINT or SIGTERM (creating it if missing).
    Serve {
        /// The ROUTER endpoint: tcp://HOST:PORT or ipc://PATH. Beyond loopback only with --curve.
        #[arg(long, default_value = "tcp://127.0.0.1:5555")]
        bind: String,
        /// Encrypt and authenticate connections with ZeroMQ CURVE: the host's keys and the
        /// clients' allow-list live in IMAGE.curve/ beside the image.
        #[arg(long)]
        curve: bool,
        /// Worker threads, each with its own connection to the image.
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// The largest request accepted; libzmq drops a connection that sends more.
        #[arg(long, default_value_t = 1 << 20)]
        max_message_bytes: i64,
        /// Milliseconds in-flight requests get to finish after a shutdown signal.
        #[arg(long, default_value_t = 5000)]
        grace_ms: u64,
        /// `image`: run the image's mind (a new image gets the default model); `none`: no mind.
        #[arg(long, default_value = "image", env = "BATOS_MIND")]
        mind: MindSpec,
        /// Where inference runs: cpu, or cuda in a build with the `cuda` feature.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Seconds a `generate` may run before it is cancelled.
        #[arg(long, default_value_t = 300)]
        generate_timeout: u64,
        /// How many method compiles run at once (the rest wait without holding a worker);
        /// default: one per two cores.
        #[arg(long)]
        compiles: Option<usize>,
        /// Requests in flight from one client, at most (past it: `busy`).
        #[arg(long, default_value_t = 64)]
        max_in_flight_per_client: usize,
        /// Bytes of requests in flight, at most (past it: `busy`).
        #[arg(long, default_value_t = 64 << 20)]
        max_queued_bytes: usize,
        /// The largest reply sent; a larger one is answered `too-large`.
        #[arg(long, default_value_t = 16 << 20)]
        max_reply_bytes: usize,
        /// Bytes the read cache may hold.
        #[arg(long, default_value_t = 64 << 20)]
        read_cache_bytes: usize,
        /// Seconds one compile may run before its process group is killed.
        #[arg(long, default_value_t = 60)]
        compile_timeout: u64,
        /// Compile methods with this user's own access when no jail can be made (no bubblewrap,
        /// no user namespaces). Without it such a host refuses every compile.
        #[arg(long, env = "BATOS_UNJAILED_COMPILES", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false)]
        unjailed_compiles: bool,
    },
    /// List the cognitive cycles, oldest first; or export a fine-tuning set.
    Cycles {
        /// Only the newest N.
        #[arg(long)]
        limit: Option<usize>,
        /// Write the prompt/completion pairs of successful cycles to FILE.jsonl.
        #[arg(long)]
        export: Option<PathBuf>,
    },
    /// One cycle's transcript: every transition, prompt, completion, diagnostic and timing.
    Cycle { id: i64 },
    /// The mind: the model that lives in the image.
    Mind {
        #[command(subcommand)]
        command: MindCommand,
    },
    /// Ask for the image's version and newest transaction.
    Ping,
    /// Print this user's CURVE public key (made on first use) for a host's allow-list
    /// (IMAGE.curve/clients).
    ClientKey,
    /// Clone a prototype into a new object.
    Create {
        /// The prototype(s), comma separated, leftmost first.
        #[arg(long, default_value = "object", value_delimiter = ',')]
        from: Vec<ObjRef>,
        /// A unique name for the new object.
        #[arg(long)]
        name: Option<String>,
        /// Slots as a JSON object, e.g. '{"count": 0}'.
        #[arg(long)]
        slots: Option<String>,
    },
    /// Read a slot, through delegation.
    Get { object: ObjRef, slot: String },
    /// Write a slot on the object itself.
    Set {
        object: ObjRef,
        slot: String,
        /// The value as JSON: 3, -5, '"text"', '{"a": 1}', null.
        #[arg(allow_hyphen_values = true)]
        value: String,
    },
    /// Remove a slot from the object itself.
    Remove { object: ObjRef, slot: String },
    /// Name or rename an object (`--clear` removes its name).
    Rename {
        object: ObjRef,
        #[arg(required_unless_present = "clear")]
        name: Option<String>,
        #[arg(long, conflicts_with = "name")]
        clear: bool,
    },
    /// Show, or replace, the ordered parents.
    Parents {
        object: ObjRef,
        parents: Vec<ObjRef>,
    },
    /// Send a message; each JSON is one argument.
    Send {
        object: ObjRef,
        selector: String,
        /// Each argument as JSON (negative numbers welcome).
        #[arg(allow_hyphen_values = true)]
        args: Vec<String>,
        /// What a missing method should do (read by cognition).
        #[arg(long)]
        intent: Option<String>,
        /// What a missing method must do: `ARGS => ANSWER[, SLOT: VALUE]...`, e.g. `[3] => 8`,
        /// `[0] => 5, count: 5`, `["x"] => error` (repeatable; checked before it is installed).
        #[arg(long, allow_hyphen_values = true)]
        example: Vec<String>,
        /// Examples as a JSON file: `[{"args": [...], "answer": ..., "slots": {...}}, ...]`.
        #[arg(long)]
        examples: Option<PathBuf>,
    },
    /// Show an object now, or as of a transaction.
    Describe {
        object: ObjRef,
        /// The transaction to look back to.
        #[arg(long)]
        at: Option<i64>,
    },
    /// Show transactions with their changes, newest last.
    History {
        /// From this transaction on.
        #[arg(long)]
        since: Option<i64>,
        /// At most this many transactions.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Only changes to this object.
        #[arg(long)]
        object: Option<ObjRef>,
    },
    /// What differs between two transactions, object by object and slot by slot.
    Diff {
        /// The earlier transaction (0: the empty image).
        from: i64,
        /// The later transaction.
        until: i64,
    },
    /// Rebuild the state from the log and hash it.
    Replay {
        /// Replay up to this transaction (default: the newest).
        #[arg(long)]
        until: Option<i64>,
        /// Also replay the whole log and fail unless it matches the live image.
        #[arg(long)]
        verify: bool,
    },
    /// Revert a transaction in a new one.
    Undo { tx: i64 },
    /// Compile, check and install a method from a Rust file.
    Install {
        object: ObjRef,
        selector: String,
        /// The method's source: one file defining `pub fn run`.
        file: PathBuf,
    },
    /// List the methods installed now.
    Methods {
        /// Only this object's methods.
        #[arg(long)]
        object: Option<ObjRef>,
    },
    /// Show one method: OBJECT.SELECTOR (found through delegation).
    Method {
        /// OBJECT.SELECTOR, e.g. counter.increment.
        target: String,
        /// Print only the source.
        #[arg(long, group = "part")]
        source: bool,
        /// Print only the WIT contract it was built against.
        #[arg(long, group = "part")]
        wit: bool,
        /// Print only the guardian's report.
        #[arg(long, group = "part")]
        report: bool,
        /// Print only the list of versions.
        #[arg(long, group = "part")]
        versions: bool,
        /// Show this version instead of the installed one.
        #[arg(long)]
        version: Option<i64>,
        /// Print a unified diff of the sources of versions FROM and TO.
        #[arg(long, num_args = 2, value_names = ["FROM", "TO"], group = "part")]
        diff: Option<Vec<i64>>,
    },
    /// Point OBJECT.SELECTOR back at an earlier version.
    Revert { target: String, version: i64 },
}

#[derive(Debug, Subcommand)]
pub enum MindCommand {
    /// Stream a model into the image as its mind (one transaction): a known model's name
    /// (`batos mind list`; its pinned sha256 is checked) or a Llama/Qwen2 GGUF file.
    Import {
        /// `qwen2.5-coder-1.5b`, `qwen2.5-coder-0.5b`, `smollm2-135m`, or a path.
        model: String,
        /// Rewrite the quantized matrices as this type while importing (q8_0: 8 bits per weight).
        #[arg(long)]
        quantize: Option<String>,
        /// Chunk size in MiB.
        #[arg(long, default_value_t = 4)]
        chunk_mib: usize,
    },
    /// The mind's metadata.
    Info,
    /// The models known by name, and which are in the model cache.
    List,
    /// Generate from the image's mind: text to stdout as it comes, speed to stderr.
    Generate {
        prompt: String,
        #[arg(long, default_value_t = 256)]
        max_tokens: usize,
        #[arg(long, default_value_t = 299_792_458)]
        seed: u64,
        /// 0 is greedy.
        #[arg(long, default_value_t = 0.0)]
        temperature: f64,
        #[arg(long)]
        top_p: Option<f64>,
        #[arg(long, default_value_t = 1.0)]
        repeat_penalty: f32,
        /// A system message for the chat template.
        #[arg(long)]
        system: Option<String>,
        /// Send the prompt as it is, without the chat template.
        #[arg(long)]
        raw: bool,
        /// Stop before this text (repeatable).
        #[arg(long)]
        stop: Vec<String>,
        /// Never end the turn early: generate exactly --max-tokens (for benchmarks).
        #[arg(long)]
        ignore_eos: bool,
        /// Load this GGUF file instead of the image's mind (to compare the two).
        #[arg(long)]
        file: Option<PathBuf>,
        #[arg(long, default_value = "cpu")]
        device: String,
        /// The forward pass: auto (native where it covers the model on the CPU), native or
        /// candle.
        #[arg(long, default_value = "auto")]
        backend: mind::Backend,
    },
}

/// The format of the log (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The log target of the host's one readiness line (`serving … on …`).
pub const READY_TARGET: &str = "batos::ready";

/// Sends the log (`tracing`'s events) to stderr, at the levels RUST_LOG names (default `info`).
pub fn init_log(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::filter::LevelFilter;
    // Whatever RUST_LOG says (a directive it cannot read is left out), the host's readiness line
    // is always written: scripts wait for it.
    let mut filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env_lossy();
    if let Ok(ready) = format!("{READY_TARGET}=info").parse() {
        filter = filter.add_directive(ready);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    // Already set (a second call in one process) is no error: the first one stays.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// An error at the command line: the protocol failure it stands for.
pub type CliError = Failure;

/// Runs one command and prints its result. Returns the failure to report, if any.
pub fn run(cli: Cli) -> Result<(), CliError> {
    let Cli { global, command } = cli;
    let request = match command {
        Command::Init { mind } => {
            let mut bar = Progress::new("importing the default mind");
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
            let result = Backend::open(&global, false)?.execute(request)?;
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
    let mut backend = Backend::open(&global, request.writes())?;
    let shown = request.clone();
    let result = backend.execute(request)?;
    print(&global, &result, || render(&shown, &result));
    Ok(())
}

/// `batos cycles --export FILE`: prompt/completion pairs of successful cycles, one per line.
fn export_cycles(
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
fn read_examples(
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

/// `batos mind list`: the catalog, and what the model cache holds.
fn list_models(global: &Global) -> Result<(), Failure> {
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
fn import_mind(
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
    let mut bar = Progress::new(&format!("importing {}", file.display()));
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
fn generate(
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

/// A progress line on stderr: redrawn in place on a terminal, every 10% otherwise.
struct Progress {
    label: String,
    tty: bool,
    shown: u64,
}

impl Progress {
    fn new(label: &str) -> Self {
        use std::io::IsTerminal;
        Progress {
            label: label.to_owned(),
            tty: std::io::stderr().is_terminal(),
            shown: u64::MAX,
        }
    }

    fn show(&mut self, done: u64, total: u64) {
        let percent = (done * 100).checked_div(total).unwrap_or(100).min(100);
        let step = if self.tty { percent } else { percent / 10 * 10 };
        if step == self.shown {
            return;
        }
        self.shown = step;
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let line = format!(
            "{}: {percent:3}% ({:.1} / {:.1} MiB)",
            self.label,
            mib(done),
            mib(total)
        );
        if self.tty {
            eprint!("\r{line}");
        } else {
            eprintln!("{line}");
        }
    }

    fn finish(&mut self) {
        if self.tty && self.shown != u64::MAX {
            eprintln!();
        }
    }
}

/// How long a probe waits for a host to answer before the command acts on the file instead.
const PROBE: Duration = Duration::from_millis(300);

/// The same, over CURVE.
const CURVE_PROBE: Duration = Duration::from_secs(3);

/// Where a command's requests go: a running host, or the image file itself.
enum Backend {
    Host(Client, Duration),
    File(Box<Image>),
}

impl Backend {
    /// A host serving this image if one answers at `--endpoint` (unless `--offline`); otherwise
    /// the file: read-only for inspecting, as the writer for `--offline` writes.
    fn open(global: &Global, writes: bool) -> Result<Backend, Failure> {
        if !global.offline {
            let curve = curve_keys(global)?;
            // A CURVE handshake (and the host's allow-list check) takes longer than a plain
            // connection, and such a host has no file here to fall back on.
            let probe = if curve.is_some() { CURVE_PROBE } else { PROBE };
            let curve = curve
                .as_ref()
                .map(|(server, mine)| (server.as_slice(), mine));
            if let Some(mut client) = Client::connect(&global.endpoint, probe, curve)? {
                client.token = global
                    .token
                    .clone()
                    .or_else(|| crate::access::read_full_token(&global.image));
                if same_image(&client.image, &global.image) {
                    return Ok(Backend::Host(client, Duration::from_secs(global.timeout)));
                }
                if writes {
                    return Err(Failure::new(
                        Code::BadRequest,
                        format!(
                            "the host at {} serves {}, not {}; point --endpoint or --image at the same image",
                            global.endpoint,
                            client.image,
                            global.image.display()
                        ),
                    ));
                }
            } else if writes {
                return Err(Failure::new(
                    Code::NoHost,
                    format!(
                        "no host serves {} at {}: start one with `batos serve`, or pass --offline to write the file directly",
                        global.image.display(),
                        global.endpoint
                    ),
                ));
            }
        }
        Ok(Backend::File(Box::new(if writes {
            Image::open(&global.image, global.durability)?
        } else {
            Image::open_read_only(&global.image)?
        })))
    }

    fn execute(&mut self, request: Request) -> Result<Value, Failure> {
        match self {
            Backend::Host(client, timeout) => {
                let value = serde_json::to_value(&request)
                    .map_err(|e| Failure::new(Code::Internal, e.to_string()))?;
                client.request(value, *timeout)
            }
            // No mind offline: a message nobody understands is answered as it is.
            Backend::File(image) => protocol::execute(image, &methods(), request, CLI_ACTOR)
                .and_then(Executed::into_result),
        }
    }
}

/// CURVE keys for the endpoint: with `--server-key`, or for an endpoint beyond loopback (the
/// host's key then comes from beside `--image`); `None` on loopback without one.
fn curve_keys(global: &Global) -> Result<Option<(Vec<u8>, server::curve::ClientKeys)>, Failure> {
    let server = match &global.server_key {
        Some(z85) => Some(z85.clone()),
        None if !server::curve::is_loopback(&global.endpoint) => {
            let path = server::curve::directory(&global.image).join("server.public");
            Some(std::fs::read_to_string(&path).map_err(|e| {
                Failure::new(
                    Code::BadRequest,
                    format!(
                        "{} is beyond loopback, so the host speaks CURVE: pass --server-key (the host's {}) ({e})",
                        global.endpoint,
                        path.display()
                    ),
                )
            })?)
        }
        None => None,
    };
    let Some(server) = server else {
        return Ok(None);
    };
    let key = server::curve::server_key(&server).ok_or_else(|| {
        Failure::new(
            Code::BadRequest,
            "--server-key is not a Z85 key of 32 bytes",
        )
    })?;
    let mine = server::curve::ClientKeys::ensure()
        .map_err(|e| Failure::new(Code::Internal, e.to_string()))?;
    Ok(Some((key, mine)))
}

/// Whether the host's image is the one this command names (by canonical path, when both exist).
fn same_image(host: &str, mine: &std::path::Path) -> bool {
    match (std::fs::canonicalize(host), std::fs::canonicalize(mine)) {
        (Ok(a), Ok(b)) => a == b,
        // A host elsewhere, or a file that is not here: trust the endpoint.
        _ => true,
    }
}

fn replay(global: &Global, until: Option<TxId>, verify: bool) -> Result<(), CliError> {
    let mut backend = Backend::open(global, false)?;
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
fn diff_versions(
    global: &Global,
    to: ObjRef,
    selector: String,
    pair: &[i64],
) -> Result<(), CliError> {
    let mut backend = Backend::open(global, false)?;
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
fn methods() -> Methods {
    Methods::new(crate::forge::default_cache_dir(), Limits::default())
}

/// `counter.increment` → (`counter`, `increment`); ids work too: `3.increment`.
fn split_target(target: &str) -> Result<(ObjRef, String), Failure> {
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

fn render_method(part: Option<&str>, v: &Value) -> String {
    match part {
        Some("source") | Some("wit") => v.as_str().unwrap_or_default().to_owned(),
        Some("report") => pretty(v),
        Some("versions") => v
            .as_array()
            .map(|vs| {
                vs.iter()
                    .map(|x| {
                        format!(
                            "v{}  method {}  {}  tx {}  {} bytes  {}{}",
                            x["version"],
                            x["method"],
                            x["origin"].as_str().unwrap_or(""),
                            x["tx"],
                            x["wasm_bytes"],
                            short_hash(&x["sha256"]),
                            if x["active"] == json!(true) {
                                "  (installed)"
                            } else {
                                ""
                            }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default(),
        _ => {
            let imports: Vec<String> = v["imports"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|i| i["name"].as_str().unwrap_or("").to_owned())
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "{}.{} v{} (method {}, {}, {} bytes, sha256 {})\nimports: {}\nexports: {}\n\n{}",
                v["object"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v["oid"].to_string()),
                v["selector"].as_str().unwrap_or(""),
                v["version"],
                v["method"],
                v["origin"].as_str().unwrap_or(""),
                v["report"]["compile"]["wasm_bytes"],
                v["sha256"].as_str().unwrap_or(""),
                imports.join(", "),
                v["exports"],
                v["source"].as_str().unwrap_or("")
            )
        }
    }
}

/// The first 12 characters of a hash, whatever the host sent.
fn short_hash(v: &Value) -> &str {
    let s = v.as_str().unwrap_or("");
    s.get(..12).unwrap_or(s)
}

fn parse_json(what: &str, text: &str) -> Result<Value, Failure> {
    serde_json::from_str(text).map_err(|e| {
        Failure::new(
            Code::BadRequest,
            format!("{what} is not JSON ({e}): quote strings as '\"text\"'"),
        )
    })
}

fn parse_slots(text: &str) -> Result<Map<String, Value>, Failure> {
    match parse_json("--slots", text)? {
        Value::Object(map) => Ok(map),
        _ => Err(Failure::new(
            Code::BadRequest,
            "--slots must be a JSON object",
        )),
    }
}

fn print(global: &Global, result: &Value, human: impl FnOnce() -> String) {
    if global.json {
        println!("{result}");
    } else {
        println!("{}", human());
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// A person's view of a result.
fn render(request: &Request, result: &Value) -> String {
    match request {
        Request::Create { .. } => format!("created object {} (tx {})", result["oid"], result["tx"]),
        Request::Set { .. } | Request::Remove { .. } | Request::Rename { .. } => {
            format!("tx {}", result["tx"])
        }
        Request::Undo { tx } => format!("undid tx {tx} in tx {}", result["tx"]),
        Request::Parents { .. } => {
            let parents: Vec<String> = result["parents"]
                .as_array()
                .map(|a| a.iter().map(Value::to_string).collect())
                .unwrap_or_default();
            format!(
                "parents of {}: {}",
                result["oid"],
                if parents.is_empty() {
                    "(none)".into()
                } else {
                    parents.join(" ")
                }
            )
        }
        Request::Describe { .. } => render_object(result),
        Request::History { .. } => render_history(result),
        Request::Diff { .. } => render_diff(result),
        Request::Replay { .. } => {
            let mut out = format!(
                "replayed to tx {}: state {}",
                result["tx"],
                result["state_hash"].as_str().unwrap_or("")
            );
            if let Some(live) = result["live_hash"].as_str() {
                let verdict = if result["match"] == json!(true) {
                    "match"
                } else {
                    "MISMATCH"
                };
                out.push_str(&format!("\nlive image:        {live} ({verdict})"));
                if let Some(diff) = result["first_difference"].as_str() {
                    out.push_str(&format!("\nfirst difference: {diff}"));
                }
            }
            out
        }
        Request::Ping => format!(
            "batos {} image {} at tx {}",
            result["version"].as_str().unwrap_or("?"),
            result["image"].as_str().unwrap_or("(memory)"),
            result["tx"]
        ),
        Request::Get { .. } | Request::Send { .. } | Request::Method { .. } => pretty(result),
        Request::Generate(_) => result["text"].as_str().unwrap_or_default().to_owned(),
        Request::Cycles { .. } => {
            let rows: Vec<String> = result
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|c| {
                    format!(
                        "{:>5}  {}.{}  {}  attempts {}  {}  {}",
                        c["id"],
                        c["object"],
                        c["selector"].as_str().unwrap_or(""),
                        c["state"].as_str().unwrap_or(""),
                        c["attempts"],
                        c["started"].as_str().unwrap_or(""),
                        match c["state"].as_str() {
                            Some("complete") => format!("method {}", c["outcome"]["method"]),
                            Some("failed") =>
                                c["outcome"]["reason"].as_str().unwrap_or("").to_owned(),
                            _ => String::new(),
                        }
                    )
                })
                .collect();
            if rows.is_empty() {
                "(no cycles)".into()
            } else {
                rows.join("\n")
            }
        }
        Request::Cycle { .. } => {
            let mut out = format!(
                "cycle {}: {}.{} — {} after {} attempt(s)\n",
                result["id"],
                result["object"],
                result["selector"].as_str().unwrap_or(""),
                result["state"].as_str().unwrap_or(""),
                result["attempts"]
            );
            for e in result["events"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let data = &e["data"];
                let line = match e["kind"].as_str().unwrap_or("") {
                    "transition" => format!("→ {}", data["to"].as_str().unwrap_or("")),
                    "prompt" => format!(
                        "prompt to {}:\n{}",
                        data["persona"].as_str().unwrap_or(""),
                        data["prompt"].as_str().unwrap_or("")
                    ),
                    "completion" => format!(
                        "completion by {} ({} tokens, {:.0} ms):\n{}",
                        data["persona"].as_str().unwrap_or(""),
                        data["tokens"],
                        data["millis"].as_f64().unwrap_or(0.0),
                        data["completion"].as_str().unwrap_or("")
                    ),
                    "diagnostic" => format!(
                        "diagnostic ({}): {}",
                        data["stage"].as_str().unwrap_or(""),
                        data["error"].as_str().unwrap_or("")
                    ),
                    kind => format!("{kind}: {data}"),
                };
                out.push_str(&format!("[{}] {line}\n", e["at"].as_str().unwrap_or("")));
            }
            out
        }
        Request::Mind => {
            let field = |k: &str| match &result[k] {
                Value::String(s) => s.clone(),
                Value::Null => "-".into(),
                other => other.to_string(),
            };
            let mut out = String::new();
            for key in [
                "name",
                "architecture",
                "parameters",
                "quantization",
                "file_type",
                "requantized_from",
                "context_length",
                "vocab_size",
                "tokenizer",
                "size",
                "sha256",
                "blob",
                "chunk_size",
                "source",
                "source_sha256",
            ] {
                out.push_str(&format!("{key:<18}{}\n", field(key)));
            }
            let template = result["chat_template"].as_str().map_or("-", |t| {
                if t.contains("<|im_start|>") {
                    "ChatML"
                } else {
                    "present"
                }
            });
            out.push_str(&format!("{:<18}{template}", "chat_template"));
            out
        }
        Request::Install { to, selector, .. } => format!(
            "installed {to}.{selector} version {} (method {}, tx {}): source gate passed, compiled in {:.0} ms, component gate passed",
            result["version"],
            result["method"],
            result["tx"],
            result["report"]["compile"]["millis"]
                .as_f64()
                .unwrap_or(0.0)
        ),
        Request::Revert {
            to,
            selector,
            version,
        } => format!(
            "{to}.{selector} is version {version} again (tx {})",
            result["tx"]
        ),
        Request::Methods { .. } => {
            let rows: Vec<String> = result
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|m| {
                    format!(
                        "{:>5}  {}.{}  v{}  {}  {} bytes  {}",
                        m["method"],
                        m["object"]
                            .as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| m["oid"].to_string()),
                        m["selector"].as_str().unwrap_or(""),
                        m["version"],
                        m["origin"].as_str().unwrap_or(""),
                        m["wasm_bytes"],
                        m["sha256"]
                            .as_str()
                            .map(|s| s.get(..12).unwrap_or(s))
                            .unwrap_or("")
                    )
                })
                .collect();
            if rows.is_empty() {
                "(no methods)".into()
            } else {
                rows.join("\n")
            }
        }
    }
}

fn render_object(o: &Value) -> String {
    let mut out = format!("object {}", o["oid"]);
    if let Some(name) = o["name"].as_str() {
        out.push_str(&format!(" `{name}`"));
    }
    let parents: Vec<String> = o["parents"]
        .as_array()
        .map(|a| a.iter().map(Value::to_string).collect())
        .unwrap_or_default();
    out.push_str(&format!(
        "\n  parents: {}",
        if parents.is_empty() {
            "(none)".into()
        } else {
            parents.join(" ")
        }
    ));
    match o["slots"].as_object() {
        Some(slots) if !slots.is_empty() => {
            for (name, value) in slots {
                out.push_str(&format!("\n  {name} = {value}"));
            }
        }
        _ => out.push_str("\n  (no slots)"),
    }
    if let Some(methods) = o["methods"].as_array().filter(|m| !m.is_empty()) {
        let names: Vec<&str> = methods.iter().filter_map(Value::as_str).collect();
        out.push_str(&format!("\n  methods: {}", names.join(" ")));
    }
    out
}

fn render_diff(d: &Value) -> String {
    let mut lines = vec![format!("from tx {} until tx {}", d["from"], d["until"])];
    for o in d["objects"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let oid = &o["oid"];
        if o["created"] == true {
            lines.push(format!("  object {oid}: created"));
        } else if o["destroyed"] == true {
            lines.push(format!("  object {oid}: destroyed"));
        }
        for part in ["name", "parents"] {
            if o[part].is_object() {
                lines.push(format!(
                    "  {oid} {part}: {} -> {}",
                    o[part]["from"], o[part]["until"]
                ));
            }
        }
        for (slot, span) in o["slots"].as_object().into_iter().flatten() {
            lines.push(format!(
                "  {oid}.{slot}: {} -> {}",
                slot_text(&span["from"]),
                slot_text(&span["until"])
            ));
        }
    }
    if lines.len() == 1 {
        lines.push("  nothing differs".into());
    }
    lines.join("\n")
}

fn render_history(h: &Value) -> String {
    let mut lines = Vec::new();
    for t in h.as_array().map(Vec::as_slice).unwrap_or_default() {
        lines.push(format!(
            "tx {}  {}  {}  {}",
            t["tx"],
            t["at"].as_str().unwrap_or(""),
            t["actor"].as_str().unwrap_or(""),
            t["note"].as_str().unwrap_or("")
        ));
        for c in t["changes"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let oid = &c["oid"];
            let line = match c["what"].as_str().unwrap_or("") {
                "create" => format!("create object {oid}"),
                "destroy" => format!("destroy object {oid}"),
                "slot" => format!(
                    "{oid}.{}: {} -> {}",
                    c["slot"].as_str().unwrap_or(""),
                    slot_text(&c["before"]),
                    slot_text(&c["after"])
                ),
                other => format!("{oid} {other}: {} -> {}", c["before"], c["after"]),
            };
            lines.push(format!("    {line}"));
        }
    }
    if lines.is_empty() {
        "(no transactions)".into()
    } else {
        lines.join("\n")
    }
}

fn slot_text(slot: &Value) -> String {
    match slot.get("value") {
        Some(v) => v.to_string(),
        None if slot.is_null() => "(absent)".into(),
        None => slot.to_string(),
    }
}

/// `--durability`: the image knows nothing of the command line, so its values are named here.
fn durability_parser() -> impl clap::builder::TypedValueParser<Value = Durability> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(["full", "normal"]).map(|s| match s.as_str() {
        "normal" => Durability::Normal,
        _ => Durability::Full,
    })
}
