//! The command line's arguments (clap).

use super::*;

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
    /// it, an endpoint beyond loopback uses the key beside --image. (Z85 keys may start with
    /// `-`: the value is taken as it is.)
    #[arg(
        long,
        global = true,
        env = "BATOS_SERVER_KEY",
        allow_hyphen_values = true
    )]
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
        /// `image`: run the image's mind (a new image gets the default model); `none`: no mind;
        /// `openai:http://HOST:PORT/v1`: an external engine (llama.cpp's server, vLLM, Ollama)
        /// writes the methods (its API key from BATOS_MIND_API_KEY or BATOS_MIND_API_KEY_FILE).
        #[arg(long, default_value = "image", env = "BATOS_MIND")]
        mind: MindSpec,
        /// The model an external mind (`--mind openai:…`) asks its engine for.
        #[arg(long, env = "BATOS_MIND_MODEL")]
        model: Option<String>,
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

/// `--durability`: the image knows nothing of the command line, so its values are named here.
pub(super) fn durability_parser() -> impl clap::builder::TypedValueParser<Value = Durability> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(["full", "normal"]).map(|s| match s.as_str() {
        "normal" => Durability::Normal,
        _ => Durability::Full,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// A Z85 key may start with `-` (one host's key in the CURVE test did, and the command took
    /// it for an option).
    #[test]
    fn a_server_key_that_starts_with_a_dash_is_a_value() {
        let key = "-q9*Ab+=/?&%$#@!^()[]{}<>.:;wxyzABCDEFGH";
        let cli = Cli::try_parse_from(["batos", "--server-key", key, "ping"]).expect("parses");
        assert_eq!(cli.global.server_key.as_deref(), Some(key));
        assert_eq!(
            Cli::try_parse_from(["batos", "--durability", "normal", "ping"])
                .expect("parses")
                .global
                .durability,
            Durability::Normal
        );
    }
}
