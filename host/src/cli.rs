//! The command line: parses arguments ([`args`]) into protocol [`Request`]s, sends them to a
//! running host or runs them on the image file itself ([`target`]), and prints their results
//! ([`render`]); `batos mind …` has its own commands ([`mind_commands`]), and [`dispatch`] ties them.
//!
//! With no host running, the inspecting commands read the image file read-only (they work while
//! another process writes), and the writing ones act as the image's single writer with
//! `--offline`.

mod args;
mod dispatch;
mod mind_commands;
mod render;
mod target;

pub use args::{Cli, Command, Global, LogFormat, MindCommand};
pub use dispatch::run;

use dispatch::*;
use mind_commands::*;
use render::*;
use target::*;

use crate::protocol::Code;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde_json::{Map, Value, json};

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::image::{Durability, Image};
use crate::method::Runtime;
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
