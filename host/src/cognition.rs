//! Cognition: doesNotUnderstand as a mandate. A message no slot answers opens a cognitive cycle
//! that plans, writes, compiles, validates and installs the missing method, then answers the
//! message with it.
//!
//! The cycle is a Prototypal State Machine in the image: each state (`state_planning`, …) is a
//! prototype object, and a cycle object delegates to its current state (its first parent) and
//! names it in its `state` slot; a transition rewrites both in one committed transaction. The
//! behaviour of each state is host code keyed by that state. Personas (`brick` plans, `robin`
//! writes, `alfred` reviews failures) and the configuration (`cognition`) are objects too, so
//! `batos set` retunes them while the host runs. Every transition, prompt, completion,
//! diagnostic and timing goes into the cycle's transcript, in the image and in
//! `IMAGE.cycles.jsonl` beside it.
//!
//! Nothing half-installed is ever visible: the method is installed and first sent in one
//! transaction, which commits only if that first call succeeds.

pub mod brief;
mod config;
mod cycle;
pub use batos_methods::examples;
pub mod fixes;
pub mod hints;
mod journal;
pub mod memory;
mod personas;
mod records;

pub use config::{Config, RepairTraps};
pub use cycle::Cycle;
pub use journal::Journal;
pub use personas::{Persona, ensure_objects};
pub use records::{export, list, recover, summary, transcript};

use cycle::*;
use personas::*;

use crate::protocol::Code;
use crate::protocol::Coded;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::forge::ForgeError;
use crate::image::{Image, ImageError, Origin};
use crate::method::{MethodError, Runtime};
use crate::mind::{Ask, Completer};
use crate::object::{MethodId, ObjRef, Oid, Slot};
use crate::sandbox::SandboxError;

/// The states of a cycle, in the order a successful one passes through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Planning,
    Writing,
    Compiling,
    Validating,
    Installing,
    Answering,
    Complete,
    Failed,
}

impl State {
    pub const ALL: [State; 8] = [
        State::Planning,
        State::Writing,
        State::Compiling,
        State::Validating,
        State::Installing,
        State::Answering,
        State::Complete,
        State::Failed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            State::Planning => "planning",
            State::Writing => "writing",
            State::Compiling => "compiling",
            State::Validating => "validating",
            State::Installing => "installing",
            State::Answering => "answering",
            State::Complete => "complete",
            State::Failed => "failed",
        }
    }

    /// The state's prototype object.
    pub fn object(self) -> String {
        format!("state_{}", self.name())
    }

    pub fn terminal(self) -> bool {
        matches!(self, State::Complete | State::Failed)
    }

    fn parse(name: &str) -> Option<State> {
        State::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// The prototype of every cycle object.
pub const CYCLE_PROTO: &str = "cycle";
/// The configuration object.
pub const CONFIG_OBJECT: &str = "cognition";

#[derive(Debug, thiserror::Error)]
pub enum CognitionError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Method(#[from] MethodError),
    #[error("no cycle {0} in this image")]
    NoSuchCycle(Oid),
    #[error("cannot write the cycle journal {}: {source}", path.display())]
    Journal {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A bug in the host, not damage to the image: the cycle's transaction was rolled back.
    #[error("the cognitive cycle crashed (a bug in the host; its changes were rolled back)")]
    Crashed,
}

impl CognitionError {
    pub fn code(&self) -> Code {
        match self {
            CognitionError::Image(e) => e.code(),
            CognitionError::Method(e) => e.code(),
            CognitionError::NoSuchCycle(_) => Code::NoSuchCycle,
            CognitionError::Journal { .. } | CognitionError::Crashed => Code::Internal,
        }
    }
}

/// A message nobody understood, as cognition receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Mission {
    pub receiver: Oid,
    pub selector: String,
    pub args: Vec<Value>,
    pub intent: Option<String>,
    /// What the method must do (none: only the gates and the first call judge it).
    pub examples: Vec<examples::Example>,
    pub actor: String,
    /// Set when the message found a method that trapped: the cycle writes its next version.
    pub repair: Option<Repair>,
}

/// An installed method that trapped on a message, as its repair cycle receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Repair {
    /// The object whose slot holds it: the receiver, or the parent it inherits the slot from.
    pub holder: Oid,
    pub method: MethodId,
    pub version: i64,
    pub source: String,
    /// The protocol code and the message the call failed with.
    pub code: Code,
    pub error: String,
}

/// The repair a failed send asks for, if any: the failure is a trap, synthesis is on, and the
/// method that trapped is of an origin `repair_traps` covers.
pub fn trap_repair(
    image: &Image,
    receiver: Oid,
    selector: &str,
    code: Code,
    error: &str,
) -> Result<Option<Repair>, ImageError> {
    if !code.is_trap() {
        return Ok(None);
    }
    let config = Config::read(image)?;
    if !config.synthesis {
        return Ok(None);
    }
    let crate::object::Dispatch::Method { holder, method } = image.dispatch(receiver, selector)?
    else {
        return Ok(None);
    };
    let record = image.method_record(method)?;
    if !config.repair_traps.covers(&record.origin) {
        return Ok(None);
    }
    let (source, _) = image.method_source_and_report(method)?;
    Ok(Some(Repair {
        holder,
        method,
        version: record.version,
        source,
        code,
        error: error.to_owned(),
    }))
}

/// How a cycle ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The method is installed and answered the message with `value`.
    Answered {
        cycle: Oid,
        value: Value,
        method: MethodId,
    },
    Failed {
        cycle: Oid,
        reason: String,
    },
    /// The method passed every example given and is installed; its right answer to the
    /// message that opened the cycle is this `Err`.
    Refused {
        cycle: Oid,
        message: String,
        method: MethodId,
    },
    /// Synthesis is off (`cognition.synthesis = false`): no cycle was opened.
    Off,
}

/// The failure a client gets when a cycle did not produce the method.
pub fn failure_message(mission: &Mission, outcome: &Outcome) -> String {
    if let (Some(repair), Outcome::Failed { cycle, reason }) = (&mission.repair, outcome) {
        return format!(
            "{}; its repair (cycle {cycle}) failed: {reason}",
            repair.error
        );
    }
    match outcome {
        Outcome::Failed { cycle, reason } => format!(
            "object {} does not understand `{}`: cycle {cycle} failed: {reason}",
            mission.receiver, mission.selector
        ),
        Outcome::Off => format!(
            "object {} does not understand `{}` (synthesis is off)",
            mission.receiver, mission.selector
        ),
        Outcome::Answered { .. } | Outcome::Refused { .. } => String::new(),
    }
}
