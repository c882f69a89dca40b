//! Gate 2: the compiled component's imports and exports, against the WIT contract.
//!
//! A method component must export exactly `invoke` (a function), and import only the contract's
//! interfaces (`batos:image/host`, `batos:image/persistence`, at the contract's version) and the
//! WASI interfaces Rust's std needs and the host grants: `wasi:io`, `wasi:cli` (environment, exit,
//! stdio, terminals), `wasi:clocks` and `wasi:random`. Never `wasi:filesystem`, `wasi:sockets` or
//! anything else. A component imports only the functions it uses, so one that imports
//! `set-slot` or `remove-slot` without `notify-changed` is refused here: it cannot honour the
//! covenant on any path.

use serde::Serialize;
use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

use crate::contract::{GRANTED_WASI, PACKAGE as CONTRACT_PACKAGE};

/// What a component imports (interface → functions used) and exports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shape {
    pub imports: Vec<Import>,
    pub exports: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Import {
    /// The full name, version included: `batos:image/host@0.1.0`.
    pub name: String,
    /// The functions the component uses from it.
    pub functions: Vec<String>,
}

/// Reads the component's imports and exports from its type.
pub fn shape(engine: &Engine, component: &Component) -> Shape {
    let ty = component.component_type();
    let imports = ty
        .imports(engine)
        .map(|(name, item)| Import {
            name: name.to_owned(),
            functions: match &item.ty {
                ComponentItem::ComponentInstance(instance) => instance
                    .exports(engine)
                    .filter(|(_, e)| matches!(e.ty, ComponentItem::ComponentFunc(_)))
                    .map(|(n, _)| n.to_owned())
                    .collect(),
                _ => Vec::new(),
            },
        })
        .collect();
    let exports = ty
        .exports(engine)
        .map(|(name, item)| match item.ty {
            ComponentItem::ComponentFunc(_) => name.to_owned(),
            _ => format!("{name} (not a function)"),
        })
        .collect();
    Shape { imports, exports }
}

/// Checks a shape against the contract; every refusal is one sentence.
pub fn check(shape: &Shape) -> Result<(), Vec<String>> {
    let mut refusals = Vec::new();
    if shape.exports != ["invoke"] {
        refusals.push(format!(
            "a method exports exactly `invoke`, this component exports [{}]",
            shape.exports.join(", ")
        ));
    }
    let host = crate::contract::interface("host");
    let persistence = crate::contract::interface("persistence");
    for import in &shape.imports {
        let unversioned = import.name.split('@').next().unwrap_or_default();
        if import.name == host || import.name == persistence || GRANTED_WASI.contains(&unversioned)
        {
            continue;
        }
        let why = if unversioned.starts_with("wasi:filesystem") {
            "the sandbox grants no files"
        } else if unversioned.starts_with("wasi:sockets") || unversioned.starts_with("wasi:http") {
            "the sandbox grants no network"
        } else if unversioned.starts_with(CONTRACT_PACKAGE) {
            "it is not this contract's version"
        } else {
            "the host does not grant it"
        };
        refusals.push(format!("imports `{}`: {why}", import.name));
    }
    let uses = |interface: &str, function: &str| {
        shape
            .imports
            .iter()
            .any(|i| i.name == interface && i.functions.iter().any(|f| f == function))
    };
    // Waiting burns no fuel and would hold the call's transaction open: methods may read the
    // clocks, never sleep on them.
    for import in &shape.imports {
        if import.name.split('@').next() == Some("wasi:clocks/monotonic-clock")
            && import.functions.iter().any(|f| f.starts_with("subscribe"))
        {
            refusals.push(format!(
                "imports `{}` to sleep or wait: a method may not block; it runs on fuel, and waiting burns none",
                import.name
            ));
        }
    }
    let writes = uses(&host, "set-slot") || uses(&host, "remove-slot");
    if writes && !uses(&persistence, "notify-changed") {
        refusals.push(
            "imports `set-slot`/`remove-slot` but not `notify-changed`: it cannot honour the persistence covenant"
                .into(),
        );
    }
    if refusals.is_empty() {
        Ok(())
    } else {
        Err(refusals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape_of(imports: &[(&str, &[&str])], exports: &[&str]) -> Shape {
        Shape {
            imports: imports
                .iter()
                .map(|(n, f)| Import {
                    name: (*n).into(),
                    functions: f.iter().map(|s| (*s).to_string()).collect(),
                })
                .collect(),
            exports: exports.iter().map(|s| (*s).to_string()).collect(),
        }
    }

    #[test]
    fn a_well_formed_method_passes() {
        let s = shape_of(
            &[
                ("batos:image/host@0.1.0", &["get-slot", "set-slot"]),
                ("batos:image/persistence@0.1.0", &["notify-changed"]),
                ("wasi:cli/environment@0.2.6", &["get-environment"]),
                ("wasi:io/streams@0.2.6", &[]),
            ],
            &["invoke"],
        );
        assert_eq!(check(&s), Ok(()));
    }

    #[test]
    fn filesystem_sockets_and_strangers_are_refused() {
        for name in [
            "wasi:filesystem/types@0.2.6",
            "wasi:sockets/tcp@0.2.6",
            "evil:host/x",
            "batos:image/host@9.0.0",
        ] {
            let s = shape_of(&[(name, &[])], &["invoke"]);
            assert!(check(&s).is_err(), "{name}");
        }
    }

    #[test]
    fn sleeping_is_refused_but_reading_the_clock_is_not() {
        let sleeps = shape_of(
            &[(
                "wasi:clocks/monotonic-clock@0.2.6",
                &["now", "subscribe-duration"],
            )],
            &["invoke"],
        );
        assert!(check(&sleeps).is_err());
        let reads = shape_of(
            &[("wasi:clocks/monotonic-clock@0.2.6", &["now"])],
            &["invoke"],
        );
        assert_eq!(check(&reads), Ok(()));
    }

    #[test]
    fn writes_without_notify_are_refused() {
        let s = shape_of(&[("batos:image/host@0.1.0", &["set-slot"])], &["invoke"]);
        assert!(check(&s).is_err());
    }

    #[test]
    fn exports_must_be_exactly_invoke() {
        assert!(check(&shape_of(&[], &["invoke", "other"])).is_err());
        assert!(check(&shape_of(&[], &[])).is_err());
    }
}
