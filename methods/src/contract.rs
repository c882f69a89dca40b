//! The contract every method is built and checked against, in one place: the WIT world's text,
//! its package and version, and the WASI interfaces the host grants. The forge compiles against
//! it, the component gate checks imports against it, the sandbox links it, and the mind's brief
//! names it; the tests below hold each of those to this module.

/// The WIT world (`wit/batos.wit`), for `batos method --wit` and the component's imports.
pub const WIT: &str = include_str!("../../wit/batos.wit");

/// The WIT package every method targets, and its version.
pub const PACKAGE: &str = "batos:image";
pub const VERSION: &str = "0.1.0";

/// WASI interfaces (without version) that the sandbox links (`sandbox::link_granted_wasi`) and
/// the component gate allows: what Rust's std needs, never the filesystem or sockets.
pub const GRANTED_WASI: &[&str] = &[
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/wall-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
];

/// `package@version`, as each installed method records it.
pub fn id() -> String {
    format!("{PACKAGE}@{VERSION}")
}

/// One of the contract's own interfaces, as a component imports it
/// (`batos:image/host@0.1.0`).
pub fn interface(name: &str) -> String {
    format!("{PACKAGE}/{name}@{VERSION}")
}

/// The gates' report on a method, stored with every version (`batos method --report`): what
/// each gate checked, how long it took, and what the component imports and exports.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// The contract it was checked against (`batos:image@0.1.0`).
    pub contract: String,
    /// The compiler that built it (`rustc -vV`'s first line).
    pub rustc: String,
    pub source_gate: SourceGateReport,
    pub compile: CompileReport,
    pub component_gate: ComponentGateReport,
    /// What the run-time gate holds every call to.
    pub runtime_gate: String,
    /// The cycle that wrote it, for a synthesized method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cycle: Option<batos_image::object::Oid>,
    /// The mind that wrote it (the model, and the engine for an external one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mind: Option<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SourceGateReport {
    pub passed: bool,
    pub millis: f64,
    pub checked: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CompileReport {
    pub millis: f64,
    pub cached: bool,
    pub wasm_bytes: usize,
    pub sha256: String,
    pub warnings: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ComponentGateReport {
    pub passed: bool,
    pub millis: f64,
    pub imports: Vec<crate::guardian::component::Import>,
    pub exports: Vec<String>,
}

/// What the source gate checks, as the report says it.
pub const SOURCE_GATE_CHECKS: &str = "no unsafe, extern, foreign attributes, module files or disallowed macros; every exit after a slot write is preceded by notify_changed() for that object";

/// What the run-time gate holds every call to, as the report says it.
pub const RUNTIME_GATE: &str =
    "every call: each object written must be notified before Ok, else the call is rolled back";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wit_file_declares_this_package_and_version_and_its_interfaces() {
        let first = WIT
            .lines()
            .find(|l| l.starts_with("package "))
            .expect("a package line");
        assert_eq!(first, format!("package {};", id()));
        for name in ["host", "persistence"] {
            assert!(WIT.contains(&format!("interface {name} {{")), "{name}");
        }
    }

    #[test]
    fn no_granted_wasi_interface_reaches_files_or_the_network() {
        for name in GRANTED_WASI {
            assert!(
                !name.starts_with("wasi:filesystem") && !name.starts_with("wasi:sockets"),
                "{name}"
            );
        }
    }
}
