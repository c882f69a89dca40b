//! Methods: how Rust source becomes behaviour in the image, and how a send runs it.
//!
//! Installing passes a source through all the gates in order: the source gate (syn), the forge
//! (rustc to a component), the component gate (imports and exports against the contract); then
//! the component, its source and the guardian's report are stored as a new version and the slot
//! points at it, in one transaction. Sending a message that finds a method slot runs it in the
//! sandbox, in a transaction of its own, where the run-time gate holds it to the covenant.
//!
//! - [`contract`]: the WIT contract in one place (text, package, version, granted WASI).
//! - [`guardian`]: the gates (the source gate, the component gate; the Data Guardian is the
//!   image's).
//! - [`forge`]: rustc, jailed, to a component; the guest SDK built once per toolchain.
//! - [`sandbox`]: wasmtime, one fresh store per call, fuel, memory, deadline, the covenant.
//! - [`examples`]: what a method must answer for given arguments, checked in trials.

#![forbid(unsafe_code)]

pub mod contract;
pub mod examples;
pub mod forge;
pub mod guardian;
pub mod sandbox;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use serde::Serialize;
use serde_json::{Value, json};

use crate::examples::{Example, Expect};
use crate::forge::{Forge, ForgeError, ForgeLimits};
use crate::guardian::{component as component_gate, source as source_gate};
use crate::sandbox::{Call, CallReport, Limits, Sandbox, SandboxError};
use batos_image::object::{Dispatch, MethodId, Oid, Slot, TxId};
use batos_image::{Image, ImageError, NewMethod, Origin};

/// How a trial's transaction ends: never committed.
enum TrialEnd {
    Done(Vec<String>),
    Error(MethodError),
}

impl From<ImageError> for TrialEnd {
    fn from(e: ImageError) -> Self {
        TrialEnd::Error(MethodError::Image(e))
    }
}

impl From<MethodError> for TrialEnd {
    fn from(e: MethodError) -> Self {
        TrialEnd::Error(e)
    }
}

impl From<SandboxError> for TrialEnd {
    fn from(e: SandboxError) -> Self {
        TrialEnd::Error(MethodError::Sandbox(e))
    }
}

use crate::contract::id as contract;

/// The genesis methods: (object, selector, source). `counter.increment` is SDK.md's example.
pub const GENESIS: &[(&str, &str, &str)] = &[
    (
        "counter",
        "increment",
        include_str!("../genesis/counter_increment.rs"),
    ),
    (
        "object",
        "describe",
        include_str!("../genesis/object_describe.rs"),
    ),
    (
        "lobby",
        "ping_counter",
        include_str!("../genesis/lobby_ping_counter.rs"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum MethodError {
    #[error("the {gate} gate refused the method:\n{}", .refusals.join("\n"))]
    Refused {
        gate: &'static str,
        refusals: Vec<String>,
        /// Every refusal is the source gate's `syntax` rule: the source is not Rust at all, which
        /// the protocol calls `compile-failed` like rustc's own errors.
        syntax_only: bool,
    },
    #[error(transparent)]
    Forge(#[from] ForgeError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("`{selector}` is not a method selector: {reason}")]
    BadSelector {
        selector: String,
        reason: &'static str,
    },
    #[error("object {oid} has no version {version} of `{selector}`")]
    NoSuchVersion {
        oid: Oid,
        selector: String,
        version: i64,
    },
}

/// The most refusals one error lists: a source may repeat a refused line thousands of times.
pub const MAX_REFUSALS: usize = 32;

/// Refusals as a client reads them: each rule and message once (the line of the first), at most
/// [`MAX_REFUSALS`], then how many more.
fn bounded_refusals(all: &[source_gate::Refusal]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut kept = Vec::new();
    for refusal in all {
        if kept.len() < MAX_REFUSALS && seen.insert((refusal.rule, refusal.message.as_str())) {
            kept.push(refusal.to_string());
        }
    }
    let more = all.len() - kept.len();
    if more > 0 {
        kept.push(format!("[… {more} more refusals, repeats among them]"));
    }
    kept
}

/// A method as installed.
#[derive(Debug, Clone, Serialize)]
pub struct Installed {
    pub method: MethodId,
    pub version: i64,
    pub tx: TxId,
    pub report: Value,
}

/// A method compiled and through the source and component gates, not yet installed.
#[derive(Debug)]
pub struct Built {
    pub source: String,
    pub wasm: Vec<u8>,
    pub sha256: String,
    /// The gates' report; cognition adds the cycle it came from.
    pub report: crate::contract::Report,
    pub component: wasmtime::component::Component,
}

impl Built {
    /// The row installing it stores (`report` is [`Built::report`] as JSON).
    fn record<'a>(&'a self, contract: &'a str, report: &'a Value, origin: Origin) -> NewMethod<'a> {
        NewMethod {
            source: &self.source,
            wasm: &self.wasm,
            sha256: &self.sha256,
            contract,
            report,
            origin,
        }
    }

    /// The report as it is stored and answered.
    pub fn report_json(&self) -> Value {
        serde_json::to_value(&self.report).unwrap_or(Value::Null)
    }
}

/// What a send produced.
#[derive(Debug, Clone)]
pub enum Sent {
    /// A value slot's value.
    Value(Value),
    /// A method ran (and committed, if it changed anything).
    Ran(CallReport),
    DoesNotUnderstand {
        receiver: Oid,
        selector: String,
    },
}

/// The methods' runtime: what installs and runs them (the sandbox now, the forge and its
/// one-time SDK build only when something is installed).
#[derive(Debug)]
pub struct Runtime {
    cache_dir: PathBuf,
    limits: Limits,
    sandbox: OnceLock<Arc<Sandbox>>,
    forge: OnceLock<Forge>,
    forge_limits: ForgeLimits,
}

impl Runtime {
    pub fn new(cache_dir: PathBuf, limits: Limits) -> Self {
        Runtime {
            cache_dir,
            limits,
            sandbox: OnceLock::new(),
            forge: OnceLock::new(),
            forge_limits: ForgeLimits::default(),
        }
    }

    /// The same, compiling within `limits` (how many at once, the jail, the bounds).
    pub fn with_forge_limits(mut self, limits: ForgeLimits) -> Self {
        self.forge_limits = limits;
        self
    }

    pub fn sandbox(&self) -> Result<&Arc<Sandbox>, MethodError> {
        if let Some(sandbox) = self.sandbox.get() {
            return Ok(sandbox);
        }
        let sandbox = Sandbox::new(self.limits.clone())?;
        Ok(self.sandbox.get_or_init(|| sandbox))
    }

    pub fn forge(&self) -> Result<&Forge, MethodError> {
        if let Some(forge) = self.forge.get() {
            return Ok(forge);
        }
        let forge = Forge::open(&self.cache_dir, self.forge_limits.clone())?;
        Ok(self.forge.get_or_init(|| forge))
    }

    /// Source gate, forge and component gate, with a report; nothing touches the image.
    pub fn build(&self, source: &str) -> Result<Built, MethodError> {
        let started = Instant::now();
        source_gate::check(source).map_err(|refusals| MethodError::Refused {
            gate: "source",
            syntax_only: refusals.iter().all(|r| r.rule == "syntax"),
            refusals: bounded_refusals(&refusals),
        })?;
        let source_ms = started.elapsed().as_secs_f64() * 1000.0;
        let forge = self.forge()?;
        let compiled = forge.compile(source)?;
        let started = Instant::now();
        let sandbox = self.sandbox()?;
        let (component, shape) = sandbox.load(&compiled.wasm)?;
        component_gate::check(&shape).map_err(|refusals| MethodError::Refused {
            gate: "component",
            refusals,
            syntax_only: false,
        })?;
        let component_ms = started.elapsed().as_secs_f64() * 1000.0;
        let report = crate::contract::Report {
            contract: contract(),
            rustc: forge.rustc_version().to_owned(),
            source_gate: crate::contract::SourceGateReport {
                passed: true,
                millis: source_ms,
                checked: crate::contract::SOURCE_GATE_CHECKS.to_owned(),
            },
            compile: crate::contract::CompileReport {
                millis: compiled.millis,
                cached: compiled.cached,
                wasm_bytes: compiled.wasm.len(),
                sha256: compiled.sha256.clone(),
                warnings: compiled.warnings,
            },
            component_gate: crate::contract::ComponentGateReport {
                passed: true,
                millis: component_ms,
                imports: shape.imports,
                exports: shape.exports,
            },
            runtime_gate: crate::contract::RUNTIME_GATE.to_owned(),
            cycle: None,
            mind: None,
        };
        Ok(Built {
            source: source.to_owned(),
            wasm: compiled.wasm,
            sha256: compiled.sha256,
            report,
            component,
        })
    }

    /// Installs `source` as a new version of `target.selector`.
    pub fn install(
        &self,
        image: &mut Image,
        target: Oid,
        selector: &str,
        source: &str,
        origin: Origin,
        actor: &str,
    ) -> Result<Installed, MethodError> {
        check_selector(selector)?;
        image.describe(target, None)?;
        let built = self.build(source)?;
        let note = format!("install {target}.{selector}");
        self.install_built(image, target, selector, &built, origin, actor, &note)
    }

    /// Installs an already built method (no call), in one transaction.
    #[allow(clippy::too_many_arguments)]
    pub fn install_built(
        &self,
        image: &mut Image,
        target: Oid,
        selector: &str,
        built: &Built,
        origin: Origin,
        actor: &str,
        note: &str,
    ) -> Result<Installed, MethodError> {
        check_selector(selector)?;
        let contract = contract();
        let report = built.report_json();
        let ((method, version), tx) = image.transact(actor, note, |tx| {
            tx.install_method(target, selector, &built.record(&contract, &report, origin))
        })?;
        self.sandbox()?.remember(method, &built.component)?;
        Ok(Installed {
            method,
            version,
            tx,
            report,
        })
    }

    /// Installs an already built method and sends it the message it was written for, in one
    /// transaction: both commit together, or (the call fails) neither does, so a method that
    /// fails on its first message is never installed. The method goes in `target`'s slot and the
    /// message to `receiver` (the same object, or one that inherits the slot from `target`).
    #[allow(clippy::too_many_arguments)]
    pub fn install_and_send(
        &self,
        image: &mut Image,
        target: Oid,
        receiver: Oid,
        selector: &str,
        built: &Built,
        origin: Origin,
        args: Vec<Value>,
        actor: &str,
        note: &str,
    ) -> Result<(Installed, CallReport), MethodError> {
        check_selector(selector)?;
        let contract = contract();
        let stored = built.report_json();
        let sandbox = Arc::clone(self.sandbox()?);
        let (((method, version), report), tx) = image.transact(actor, note, |tx| {
            let (method, version) =
                tx.install_method(target, selector, &built.record(&contract, &stored, origin))?;
            // A rolled-back install frees its id again (SQLite's AUTOINCREMENT counter rolls back
            // with it), so a failed call forgets what it remembered under that id.
            sandbox.remember(method, &built.component)?;
            let call = Call::new(method, receiver, args, sandbox.limits());
            match sandbox.invoke(tx, call) {
                Ok(report) => Ok::<_, MethodError>(((method, version), report)),
                Err(e) => {
                    // The rollback frees the id again: the next install may take it.
                    sandbox.forget(method);
                    Err(e.into())
                }
            }
        })?;
        Ok((
            Installed {
                method,
                version,
                tx,
                report: stored,
            },
            report,
        ))
    }

    /// Runs `built` as `selector` on a scratch clone of `target` (its parents, value slots and
    /// method slots) for each example, in one transaction that is always rolled back: the real
    /// receiver, the history and the method rows never see a trial. Answers what each failed
    /// example expected and what the method did (empty: every example passed).
    pub fn trial(
        &self,
        image: &mut Image,
        target: Oid,
        selector: &str,
        built: &Built,
        examples: &[Example],
        actor: &str,
    ) -> Result<Vec<String>, MethodError> {
        check_selector(selector)?;
        let contract = contract();
        let trial_report = built.report_json();
        let sandbox = Arc::clone(self.sandbox()?);
        let mut trial_methods = Vec::new();
        let ran = image.transact(actor, "trial of a synthesized method (rolled back)", |tx| {
            let parents = tx.parents(target)?;
            let own = tx.own_slots(target)?;
            let mut failures = Vec::new();
            for (i, example) in examples.iter().enumerate() {
                // Each example on its own scratch clone, and nothing it did (to the clone or to
                // any other object) seen by the next.
                let savepoint = tx.savepoint()?;
                let values = own
                    .iter()
                    .filter_map(|(name, slot)| match slot {
                        Slot::Value(v) => Some((name.clone(), v.clone())),
                        Slot::Method(_) => None,
                    })
                    .collect();
                let scratch = tx.create_object(&parents, None, values)?;
                for (name, slot) in &own {
                    if matches!(slot, Slot::Method(_)) && name != selector {
                        tx.set_slot(scratch, name, slot.clone())?;
                    }
                }
                let (method, _) = tx.install_method(
                    scratch,
                    selector,
                    &built.record(&contract, &trial_report, Origin::Synthesized),
                )?;
                trial_methods.push(method);
                sandbox.remember(method, &built.component)?;
                let call = Call::new(method, scratch, example.args.clone(), sandbox.limits());
                // The image failing is the host's fault; a method's misuse of it (delegation
                // too deep, a value too large) is that example's failure.
                let outcome = match sandbox.invoke(tx, call) {
                    Err(SandboxError::Image(e)) if e.is_host_fault() => {
                        return Err(TrialEnd::Error(MethodError::Image(e)));
                    }
                    outcome => outcome,
                };
                let mut wrong = Vec::new();
                match (&example.expect, &outcome) {
                    (Expect::Answer(want), Ok(report)) if !examples::same(want, &report.value) => {
                        wrong.push(format!("should answer {want}, answered {}", report.value));
                    }
                    (Expect::Answer(want), Err(e)) => {
                        wrong.push(format!("should answer {want}, failed: {e}"));
                    }
                    (Expect::Error, Ok(report)) => {
                        wrong.push(format!("should answer an Err, answered {}", report.value))
                    }
                    (Expect::Anything, Err(e)) => wrong.push(format!("failed: {e}")),
                    // A trap is not the Err an example asks for.
                    (Expect::Error, Err(e)) if !matches!(e, SandboxError::MethodError { .. }) => {
                        wrong.push(format!("should answer an Err, trapped: {e}"));
                    }
                    _ => {}
                }
                if outcome.is_ok() {
                    for (slot, want) in &example.slots {
                        match tx.own_slot(scratch, slot)? {
                            Some(Slot::Value(got)) if examples::same(want, &got) => {}
                            Some(Slot::Value(got)) => {
                                wrong.push(format!("slot `{slot}` should be {want}, is {got}"));
                            }
                            Some(Slot::Method(_)) => {
                                wrong.push(format!("slot `{slot}` should be {want}, is a method"));
                            }
                            None => {
                                wrong.push(format!("slot `{slot}` should be {want}, is missing"))
                            }
                        }
                    }
                }
                tx.rollback_to(savepoint)?;
                if !wrong.is_empty() {
                    // What a method answered may be large: the writer and the transcript get
                    // enough to see what was wrong.
                    failures.push(crate::examples::clip(
                        &format!(
                            "example {} (args {}): {}",
                            i + 1,
                            Value::Array(example.args.clone()),
                            wrong.join("; ")
                        ),
                        600,
                    ));
                }
            }
            Err::<(), _>(TrialEnd::Done(failures))
        });
        for method in trial_methods {
            sandbox.forget(method);
        }
        match ran {
            Err(TrialEnd::Done(failures)) => Ok(failures),
            Err(TrialEnd::Error(e)) => Err(e),
            Ok(((), _)) => Err(MethodError::Image(ImageError::Corrupt(
                "a trial transaction committed".into(),
            ))),
        }
    }

    /// Sends `selector` to `receiver`: a value slot answers its value, a method runs in its own
    /// transaction (committed only if it changed something), nothing found is
    /// [`Sent::DoesNotUnderstand`].
    pub fn send(
        &self,
        image: &mut Image,
        receiver: Oid,
        selector: &str,
        args: Vec<Value>,
        actor: &str,
    ) -> Result<Sent, MethodError> {
        match image.dispatch(receiver, selector)? {
            Dispatch::Answer(value) => Ok(Sent::Value(value)),
            Dispatch::DoesNotUnderstand { receiver, selector } => {
                Ok(Sent::DoesNotUnderstand { receiver, selector })
            }
            Dispatch::Method { method, .. } => {
                let sandbox = Arc::clone(self.sandbox()?);
                let call = Call::new(method, receiver, args, sandbox.limits());
                let note = format!("send {receiver}.{selector}");
                let (report, _) = image.transact(actor, &note, |tx| {
                    tx.discard_if_unchanged();
                    sandbox.invoke(tx, call).map_err(MethodError::from)
                })?;
                Ok(Sent::Ran(report))
            }
        }
    }

    /// Points `oid.selector` back at an earlier version, in a new transaction.
    pub fn revert(
        &self,
        image: &mut Image,
        oid: Oid,
        selector: &str,
        version: i64,
        actor: &str,
    ) -> Result<TxId, MethodError> {
        let versions = image.method_versions(oid, selector)?;
        let Some(target) = versions.iter().find(|v| v.version == version) else {
            return Err(MethodError::NoSuchVersion {
                oid,
                selector: selector.to_owned(),
                version,
            });
        };
        let method = target.method;
        let note = format!("revert {oid}.{selector} to version {version}");
        let ((), tx) = image.transact(actor, &note, |tx| {
            tx.set_slot(oid, selector, Slot::Method(method))
        })?;
        Ok(tx)
    }

    /// Genesis, part two: the `counter` prototype and the genesis methods, in one transaction
    /// by `genesis`.
    pub fn install_genesis(&self, image: &mut Image) -> Result<TxId, MethodError> {
        let mut built = Vec::new();
        for (object, selector, source) in GENESIS {
            built.push((*object, *selector, self.build(source)?));
        }
        let contract = contract();
        let (ids, tx) = image.transact(
            batos_image::GENESIS_ACTOR,
            "genesis: counter and the genesis methods",
            |tx| {
                let object = tx.resolve(&batos_image::object::ObjRef::Name("object".into()))?;
                let mut slots = serde_json::Map::new();
                slots.insert("count".into(), json!(0));
                tx.create_object(&[object], Some("counter"), slots)?;
                let mut ids = Vec::new();
                for (name, selector, method) in &built {
                    let oid = tx.resolve(&batos_image::object::ObjRef::Name((*name).into()))?;
                    let (id, _) = tx.install_method(
                        oid,
                        selector,
                        &method.record(&contract, &method.report_json(), Origin::Genesis),
                    )?;
                    ids.push(id);
                }
                Ok::<_, MethodError>(ids)
            },
        )?;
        let sandbox = self.sandbox()?;
        for (id, (_, _, method)) in ids.into_iter().zip(&built) {
            sandbox.remember(id, &method.component)?;
        }
        Ok(tx)
    }
}

fn check_selector(selector: &str) -> Result<(), MethodError> {
    let reason = if selector.is_empty() {
        "it is empty"
    } else if selector == crate::guardian::SCHEMA_SLOT {
        "`schema` is the Data Guardian's slot"
    } else if selector
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        "it holds whitespace or a control character"
    } else {
        return Ok(());
    };
    Err(MethodError::BadSelector {
        selector: selector.to_owned(),
        reason,
    })
}
