//! The protocol's error codes: a closed set, each with its stable wire name (PROTOCOL.md). Every
//! module's error type answers one with `code()`; replies and the command line print its name.

use std::fmt;

macro_rules! codes {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        /// An error code, as a reply's `error.code` names it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $($(#[$doc])* $variant,)*
        }

        impl Code {
            /// Every code, in the order PROTOCOL.md lists them.
            pub const ALL: &[Code] = &[$(Code::$variant,)*];

            /// The wire name (`bad-request`, …).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $name,)*
                }
            }
        }
    };
}

codes! {
    BadRequest = "bad-request",
    UnknownOp = "unknown-op",
    TooLarge = "too-large",
    NoSuchObject = "no-such-object",
    NoSuchSlot = "no-such-slot",
    NoSuchMethod = "no-such-method",
    NoSuchTransaction = "no-such-transaction",
    NoSuchCycle = "no-such-cycle",
    DoesNotUnderstand = "does-not-understand",
    CompileFailed = "compile-failed",
    /// The host cannot jail a compile and was not told to compile unjailed.
    CompileRefused = "compile-refused",
    GuardianRejected = "guardian-rejected",
    CovenantViolation = "covenant-violation",
    MethodTrap = "method-trap",
    MethodError = "method-error",
    OutOfFuel = "out-of-fuel",
    OutOfMemory = "out-of-memory",
    Timeout = "timeout",
    SendTooDeep = "send-too-deep",
    DelegationTooDeep = "delegation-too-deep",
    SchemaViolation = "schema-violation",
    Conflict = "conflict",
    ParentCycle = "parent-cycle",
    NameTaken = "name-taken",
    Locked = "locked",
    ReadOnly = "read-only",
    ReplayMismatch = "replay-mismatch",
    NoMind = "no-mind",
    MindFailed = "mind-failed",
    Unauthorized = "unauthorized",
    Busy = "busy",
    ShuttingDown = "shutting-down",
    Internal = "internal",
    /// The command line's own: no host serves the image at the endpoint.
    NoHost = "no-host",
    /// The command line's own: the host did not answer in time.
    NoReply = "no-reply",
    /// A code this build does not know (a newer host's): the message keeps its name.
    Unknown = "unknown",
}

impl Code {
    /// The code a wire name names, if this build knows it.
    pub fn parse(name: &str) -> Option<Code> {
        Code::ALL.iter().copied().find(|c| c.as_str() == name)
    }

    /// Whether it reports a trap in a method (what may open a repair cycle).
    pub fn is_trap(self) -> bool {
        matches!(
            self,
            Code::MethodTrap | Code::OutOfFuel | Code::OutOfMemory | Code::Timeout
        )
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// An error's stable code on the wire. The image's errors get theirs here, where the protocol
/// lives (the `batos-image` crate knows nothing of the protocol).
pub trait Coded {
    fn code(&self) -> Code;
}

use batos_image::ImageError;
use batos_methods::MethodError;
use batos_methods::forge::ForgeError;
use batos_methods::sandbox::SandboxError;
use batos_mind::MindError;

impl Coded for ImageError {
    fn code(&self) -> Code {
        match self {
            ImageError::NoSuchObject(_) => Code::NoSuchObject,
            ImageError::NoSuchSlot { .. } => Code::NoSuchSlot,
            ImageError::HoldsMethod { .. } => Code::BadRequest,
            ImageError::NoSuchMethod(_) => Code::NoSuchMethod,
            ImageError::NoSuchBlob(_) => Code::BadRequest,
            ImageError::NoSuchTransaction(_) => Code::NoSuchTransaction,
            ImageError::SchemaViolation { .. } => Code::SchemaViolation,
            ImageError::Conflict { .. } | ImageError::Irreversible { .. } => Code::Conflict,
            ImageError::NameTaken { .. } => Code::NameTaken,
            ImageError::BadName { .. } => Code::BadRequest,
            ImageError::ParentCycle { .. } => Code::ParentCycle,
            ImageError::TooDeep(_) => Code::DelegationTooDeep,
            ImageError::Locked { .. } => Code::Locked,
            ImageError::ReadOnly => Code::ReadOnly,
            ImageError::KeyApplied(_) => Code::Busy,
            ImageError::ValueTooLarge { .. } => Code::TooLarge,
            ImageError::BadValue { .. } => Code::BadRequest,
            ImageError::NotFound(_) | ImageError::AlreadyExists(_) => Code::BadRequest,
            ImageError::NewerSchema { .. }
            | ImageError::OlderSchema { .. }
            | ImageError::Corrupt(_)
            | ImageError::InTransaction
            | ImageError::Io { .. }
            | ImageError::Sqlite(_) => Code::Internal,
        }
    }
}

impl Coded for MindError {
    fn code(&self) -> Code {
        match self {
            MindError::NoMind => Code::NoMind,
            MindError::TooLong { .. } | MindError::BadRequest(_) => Code::BadRequest,
            MindError::Image(e) => e.code(),
            _ => Code::MindFailed,
        }
    }
}

impl Coded for MethodError {
    fn code(&self) -> Code {
        match self {
            MethodError::Refused {
                syntax_only: true, ..
            } => Code::CompileFailed,
            MethodError::Refused { .. } => Code::GuardianRejected,
            MethodError::Forge(e) => e.code(),
            MethodError::Sandbox(e) => e.code(),
            MethodError::Image(e) => e.code(),
            MethodError::BadSelector { .. } => Code::BadRequest,
            MethodError::NoSuchVersion { .. } => Code::NoSuchMethod,
        }
    }
}

impl Coded for ForgeError {
    fn code(&self) -> Code {
        match self {
            ForgeError::CompileFailed { .. } | ForgeError::Timeout(_) => Code::CompileFailed,
            ForgeError::SourceTooLarge { .. } | ForgeError::OutputTooLarge { .. } => Code::TooLarge,
            ForgeError::NoJail(_) => Code::CompileRefused,
            ForgeError::Toolchain(_) | ForgeError::Sdk(_) | ForgeError::Io { .. } => Code::Internal,
        }
    }
}

impl Coded for SandboxError {
    fn code(&self) -> Code {
        match self {
            SandboxError::MethodError { .. } => Code::MethodError,
            SandboxError::Trap { .. }
            | SandboxError::BadAnswer(_)
            | SandboxError::Instantiate(_) => Code::MethodTrap,
            SandboxError::OutOfFuel { .. } => Code::OutOfFuel,
            SandboxError::OutOfMemory { .. } => Code::OutOfMemory,
            SandboxError::Timeout { .. } => Code::Timeout,
            SandboxError::TooDeep { .. } => Code::SendTooDeep,
            SandboxError::CovenantViolation { .. } => Code::CovenantViolation,
            SandboxError::Refused(_) => Code::GuardianRejected,
            SandboxError::Image(e) => e.code(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_one_distinct_wire_name_that_parses_back() {
        let mut names: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
        for code in Code::ALL {
            assert_eq!(Code::parse(code.as_str()), Some(*code));
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Code::ALL.len());
        assert_eq!(Code::parse("flying"), None);
    }

    /// The protocol's spec (`docs/protocol.md`) lists every code a client can meet.
    #[test]
    fn the_protocol_spec_names_every_code() {
        let spec = include_str!("../../../docs/protocol.md");
        let missing: Vec<&str> = Code::ALL
            .iter()
            .filter(|c| !spec.contains(&format!("`{}`", c.as_str())))
            .map(|c| c.as_str())
            .collect();
        assert!(missing.is_empty(), "not in docs/protocol.md: {missing:?}");
    }
}
