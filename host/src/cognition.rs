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
pub use batos_methods::examples;
pub mod fixes;
pub mod hints;
pub mod memory;

use crate::protocol::Code;
use crate::protocol::Coded;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::forge::ForgeError;
use crate::image::{Image, ImageError, Origin};
use crate::method::{MethodError, Methods};
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

/// The configuration, read from the `cognition` object at the start of every cycle.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub synthesis: bool,
    pub attempts: u32,
    pub time_limit: Duration,
    pub planner: String,
    pub writer: String,
    pub reviewer: String,
    /// Installed methods most like the mission shown to the writer (0: none).
    pub memory: u32,
    /// With no examples given, the examples persona writes some from the intent, and they are
    /// checked as given ones are.
    pub examples_from_intent: bool,
    pub examples_writer: String,
    /// A writer's candidate identical to an earlier attempt's is drawn again, sampled.
    pub resample: bool,
    /// Candidates the writer draws per attempt (the first greedy, the others sampled with a
    /// seed each), checked in turn: the first that passes is installed.
    pub candidates: u32,
    /// Which installed methods a trap (a panic, fuel or memory run out, the time limit) sends
    /// back to the mind for repair.
    pub repair_traps: RepairTraps,
}

/// Which methods' traps open repair cycles (`cognition.repair_traps`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairTraps {
    Off,
    /// Methods the mind wrote (the default): genesis and hand-installed methods are the
    /// architect's, and a trap in them is answered as it is.
    Synthesized,
    All,
}

impl RepairTraps {
    pub fn name(self) -> &'static str {
        match self {
            RepairTraps::Off => "off",
            RepairTraps::Synthesized => "synthesized",
            RepairTraps::All => "all",
        }
    }

    fn parse(name: &str) -> Option<RepairTraps> {
        [RepairTraps::Off, RepairTraps::Synthesized, RepairTraps::All]
            .into_iter()
            .find(|r| r.name() == name)
    }

    /// Whether a trap in a method of this origin (`genesis`, `architect`, `synthesized`) opens
    /// a repair cycle.
    pub fn covers(self, origin: &str) -> bool {
        match self {
            RepairTraps::Off => false,
            RepairTraps::Synthesized => origin == Origin::Synthesized.as_str(),
            RepairTraps::All => true,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            synthesis: true,
            attempts: 4,
            time_limit: Duration::from_secs(600),
            planner: "brick".into(),
            writer: "robin".into(),
            reviewer: "alfred".into(),
            memory: 2,
            examples_from_intent: false,
            examples_writer: "lucius".into(),
            resample: true,
            candidates: 1,
            repair_traps: RepairTraps::Synthesized,
        }
    }
}

impl Config {
    pub fn read(image: &Image) -> Result<Config, ImageError> {
        let mut config = Config::default();
        let Some(oid) = image.named(CONFIG_OBJECT)? else {
            return Ok(config);
        };
        let slots = image.describe(oid, None)?.slots;
        if let Some(v) = slots.get("synthesis").and_then(Value::as_bool) {
            config.synthesis = v;
        }
        if let Some(v) = slots.get("attempts").and_then(Value::as_u64) {
            config.attempts = v.clamp(1, 16) as u32;
        }
        if let Some(v) = slots.get("examples_from_intent").and_then(Value::as_bool) {
            config.examples_from_intent = v;
        }
        if let Some(v) = slots.get("resample").and_then(Value::as_bool) {
            config.resample = v;
        }
        if let Some(v) = slots.get("candidates").and_then(Value::as_u64) {
            config.candidates = v.clamp(1, 8) as u32;
        }
        if let Some(v) = slots
            .get("repair_traps")
            .and_then(Value::as_str)
            .and_then(RepairTraps::parse)
        {
            config.repair_traps = v;
        }
        if let Some(v) = slots.get("memory").and_then(Value::as_u64) {
            config.memory = v.min(8) as u32;
        }
        if let Some(v) = slots.get("time_limit_s").and_then(Value::as_f64) {
            config.time_limit = Duration::from_secs_f64(v.clamp(1.0, 86_400.0));
        }
        for (key, field) in [
            ("planner", &mut config.planner),
            ("writer", &mut config.writer),
            ("reviewer", &mut config.reviewer),
            ("examples_writer", &mut config.examples_writer),
        ] {
            if let Some(v) = slots.get(key).and_then(Value::as_str) {
                *field = v.to_owned();
            }
        }
        Ok(config)
    }

    fn as_slots(&self) -> Map<String, Value> {
        let Value::Object(map) = json!({
            "synthesis": self.synthesis,
            "attempts": self.attempts,
            "time_limit_s": self.time_limit.as_secs_f64(),
            "planner": self.planner,
            "writer": self.writer,
            "reviewer": self.reviewer,
            "memory": self.memory,
            "examples_from_intent": self.examples_from_intent,
            "examples_writer": self.examples_writer,
            "resample": self.resample,
            "candidates": self.candidates,
            "repair_traps": self.repair_traps.name(),
        }) else {
            return Map::new();
        };
        map
    }
}

/// How a repeated candidate is drawn again: warm enough to leave the greedy path, with a seed per
/// attempt so that a cycle is reproducible.
const RESAMPLE_TEMPERATURE: f64 = 0.7;
const RESAMPLE_SEED: u64 = 20_261_201;

/// The writer's answers start with the fence and `run`'s signature: the model writes the body.
const WRITER_PREFILL: &str = "```rust\n// {selector}: {intent}\npub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {\n";

/// The personas a new image gets: (name, role, system prompt, max tokens, prefill, stop).
type PersonaSeed = (
    &'static str,
    &'static str,
    &'static str,
    u64,
    &'static str,
    &'static [&'static str],
);
const PERSONAS: &[PersonaSeed] = &[
    (
        "brick",
        "plans",
        "You are BRICK, the planner of a living object system. You read a mission and say plainly what the missing method must do.",
        64,
        "",
        &["\n\n"],
    ),
    (
        "robin",
        "writes code",
        "You are ROBIN, who writes methods in Rust for the batos guest SDK. You answer with exactly one ```rust code block and nothing else.",
        200,
        WRITER_PREFILL,
        &["```", "\n}"],
    ),
    (
        "lucius",
        "writes examples",
        "You are LUCIUS, who writes test examples for a method of a living object system: one example per line, `ARGS => ANSWER, SLOT: VALUE`, and nothing else.",
        120,
        "",
        &["\n\n"],
    ),
    (
        "alfred",
        "reviews failures",
        "You are ALFRED, who reviews a method that failed to compile or to run, and says briefly what to fix.",
        64,
        "",
        &["\n\n"],
    ),
];

/// A persona as the image holds it.
#[derive(Debug, Clone)]
pub struct Persona {
    pub name: String,
    pub system: String,
    pub max_tokens: usize,
    /// The start of this persona's answers (the writer's: the fence and `run`'s signature).
    pub prefill: String,
    /// Its answers end before the first of these.
    pub stop: Vec<String>,
}

fn persona(image: &Image, name: &str) -> Result<Persona, ImageError> {
    let oid = image
        .named(name)?
        .ok_or_else(|| ImageError::NoSuchObject(ObjRef::Name(name.to_owned())))?;
    let system = image
        .get(oid, "system")?
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let max_tokens = image
        .get(oid, "max_tokens")
        .ok()
        .and_then(|v| v.as_u64())
        .unwrap_or(256)
        .clamp(16, 4096) as usize;
    let prefill = image
        .get(oid, "prefill")
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let stop = image
        .get(oid, "stop")
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    Ok(Persona {
        name: name.to_owned(),
        system,
        max_tokens,
        prefill,
        stop,
    })
}

/// Creates what cognition keeps in the image, where missing: the configuration, the personas,
/// the state prototypes and the cycle prototype. One transaction by `cognition`; nothing when
/// all are there.
pub fn ensure_objects(image: &mut Image) -> Result<(), ImageError> {
    if image.named(CYCLE_PROTO)?.is_some() {
        // An image made before a persona existed gets it now.
        let mut missing = Vec::new();
        for seed in PERSONAS {
            if image.named(seed.0)?.is_none() {
                missing.push(seed);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        image.transact("cognition", "cognition: new personas", |tx| {
            let proto = tx.resolve(&ObjRef::Name("persona".into()))?;
            for seed in missing {
                create_persona(tx, proto, seed)?;
            }
            Ok::<_, ImageError>(())
        })?;
        return Ok(());
    }
    image.transact("cognition", "cognition: personas, states, cycle", |tx| {
        let object = tx.resolve(&ObjRef::Name("object".into()))?;
        tx.create_object(&[object], Some(CONFIG_OBJECT), Config::default().as_slots())?;
        let persona_proto = tx.create_object(&[object], Some("persona"), Map::new())?;
        for seed in PERSONAS {
            create_persona(tx, persona_proto, seed)?;
        }
        let state_proto = tx.create_object(&[object], Some("cycle_state"), Map::new())?;
        for state in State::ALL {
            let Value::Object(slots) = json!({"label": state.name(), "terminal": state.terminal()})
            else {
                continue;
            };
            tx.create_object(&[state_proto], Some(&state.object()), slots)?;
        }
        tx.create_object(&[object], Some(CYCLE_PROTO), Map::new())?;
        Ok::<_, ImageError>(())
    })?;
    Ok(())
}

fn create_persona(
    tx: &mut crate::image::Tx,
    proto: Oid,
    (name, role, system, max_tokens, prefill, stop): &PersonaSeed,
) -> Result<(), ImageError> {
    let Value::Object(slots) = json!({
        "role": role,
        "system": system,
        "max_tokens": max_tokens,
        "prefill": prefill,
        "stop": stop,
    }) else {
        return Ok(());
    };
    tx.create_object(&[proto], Some(name), slots)?;
    Ok(())
}

/// The transcript's second home: one JSON line per event in `IMAGE.cycles.jsonl`.
#[derive(Debug, Clone)]
pub struct Journal {
    path: Option<PathBuf>,
}

impl Journal {
    /// The journal beside the image at `image` (none for an in-memory image).
    pub fn beside(image: Option<&Path>) -> Journal {
        Journal {
            path: image.map(|p| {
                let mut name = p.as_os_str().to_owned();
                name.push(".cycles.jsonl");
                PathBuf::from(name)
            }),
        }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn append(&self, event: &Value) -> Result<(), CognitionError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let fail = |source| CognitionError::Journal {
            path: path.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(fail)?;
        file.write_all(format!("{event}\n").as_bytes())
            .map_err(fail)
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
    let crate::object::Outcome::Method { holder, method } = image.dispatch(receiver, selector)?
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

/// One cycle's runner: the image (a writer), the method machinery, the mind, the journal, and
/// the flag that stops everything (host shutdown).
#[derive(Debug)]
pub struct Cycle<'a> {
    pub image: &'a mut Image,
    pub methods: &'a Methods,
    pub mind: &'a dyn Completer,
    pub journal: &'a Journal,
    pub stop: &'a AtomicBool,
}

/// Why a step gave up on the whole cycle.
enum Abort {
    Fail(String),
    Error(CognitionError),
}

impl From<CognitionError> for Abort {
    fn from(e: CognitionError) -> Self {
        Abort::Error(e)
    }
}

impl From<ImageError> for Abort {
    fn from(e: ImageError) -> Self {
        Abort::Error(e.into())
    }
}

impl Cycle<'_> {
    /// Runs one cycle for `mission` to `complete` or `failed`.
    pub fn run(&mut self, mission: &Mission) -> Result<Outcome, CognitionError> {
        let config = Config::read(self.image)?;
        if !config.synthesis {
            return Ok(Outcome::Off);
        }
        let cycle = self.open(mission)?;
        let deadline = Instant::now() + config.time_limit;
        match self.steps(cycle, mission, &config, deadline) {
            Ok((Ok(value), method)) => Ok(Outcome::Answered {
                cycle,
                value,
                method,
            }),
            Ok((Err(message), method)) => Ok(Outcome::Refused {
                cycle,
                message,
                method,
            }),
            Err(Abort::Fail(reason)) => {
                self.finish_failed(cycle, &reason)?;
                Ok(Outcome::Failed { cycle, reason })
            }
            Err(Abort::Error(e)) => {
                // The cycle must still end: failed, with the error as its reason.
                let reason = format!("internal error: {e}");
                let _ = self.finish_failed(cycle, &reason);
                Err(e)
            }
        }
    }

    fn open(&mut self, mission: &Mission) -> Result<Oid, CognitionError> {
        let proto = self.required(CYCLE_PROTO)?;
        let first = self.required(&State::Planning.object())?;
        let Value::Object(slots) = json!({
            "receiver": mission.receiver,
            "selector": mission.selector,
            "args": mission.args,
            "intent": mission.intent,
            "actor": mission.actor,
            "state": State::Planning.name(),
            "attempts": 0,
            "mind": self.mind.label(),
        }) else {
            return Err(ImageError::Corrupt("a cycle's slots are not an object".into()).into());
        };
        let mut slots = slots;
        if let Some(repair) = &mission.repair {
            slots.insert("repairs".into(), json!(repair.method));
        }
        let (cycle, _) = self.image.transact(
            "cognition",
            &format!("cycle for {}.{}", mission.receiver, mission.selector),
            |tx| tx.create_object(&[first, proto], None, slots),
        )?;
        self.event(
            cycle,
            "opened",
            json!({
                "receiver": mission.receiver,
                "selector": mission.selector,
                "args": mission.args,
                "intent": mission.intent,
                "actor": mission.actor,
                "mind": self.mind.label(),
                "repair": mission.repair.as_ref().map(|r| json!({"holder": r.holder, "method": r.method, "version": r.version, "code": r.code, "error": r.error})),
            }),
        )?;
        self.event(cycle, "transition", json!({"to": State::Planning.name()}))?;
        Ok(cycle)
    }

    fn required(&self, name: &str) -> Result<Oid, CognitionError> {
        Ok(self
            .image
            .named(name)?
            .ok_or_else(|| ImageError::NoSuchObject(ObjRef::Name(name.to_owned())))?)
    }

    fn event(&mut self, cycle: Oid, kind: &str, data: Value) -> Result<(), CognitionError> {
        let stored = self.image.append_cycle_event(cycle, kind, &data)?;
        self.journal.append(&stored)
    }

    /// A transition: the cycle delegates to the new state and names it, in one transaction.
    fn enter(&mut self, cycle: Oid, to: State, extra: Value) -> Result<(), CognitionError> {
        transition(self.image, cycle, to, None)?;
        let mut data = json!({"to": to.name()});
        if let (Value::Object(d), Value::Object(e)) = (&mut data, extra) {
            d.extend(e);
        }
        self.event(cycle, "transition", data)
    }

    fn finish_failed(&mut self, cycle: Oid, reason: &str) -> Result<(), CognitionError> {
        transition(self.image, cycle, State::Failed, Some(reason))?;
        self.event(
            cycle,
            "transition",
            json!({"to": State::Failed.name(), "reason": reason}),
        )
    }

    fn check(&self, deadline: Instant) -> Result<(), Abort> {
        if self.stop.load(Ordering::SeqCst) {
            return Err(Abort::Fail("the host is shutting down".into()));
        }
        if Instant::now() >= deadline {
            return Err(Abort::Fail("the cycle's time limit passed".into()));
        }
        Ok(())
    }

    /// One turn of a persona: prompt, completion, both in the transcript.
    fn ask(
        &mut self,
        cycle: Oid,
        persona_name: &str,
        prompt: &str,
        mission: &Mission,
        deadline: Instant,
    ) -> Result<String, Abort> {
        self.ask_sampled(cycle, persona_name, prompt, mission, deadline, 0.0, 0)
    }

    /// [`Cycle::ask`] at a temperature, with a seed (0: greedy).
    #[allow(clippy::too_many_arguments)]
    fn ask_sampled(
        &mut self,
        cycle: Oid,
        persona_name: &str,
        prompt: &str,
        mission: &Mission,
        deadline: Instant,
        temperature: f64,
        seed: u64,
    ) -> Result<String, Abort> {
        self.check(deadline)?;
        let mut persona = persona(self.image, persona_name)?;
        // A prefill may name the mission: `{selector}` and `{intent}`.
        persona.prefill = persona
            .prefill
            .replace("{selector}", &mission.selector)
            .replace(
                "{intent}",
                mission.intent.as_deref().unwrap_or("answer the message"),
            );
        self.event(
            cycle,
            "prompt",
            json!({"persona": persona.name, "system": persona.system, "prompt": prompt, "prefill": persona.prefill, "temperature": temperature, "seed": seed}),
        )?;
        let ask = Ask {
            system: &persona.system,
            prompt,
            prefill: &persona.prefill,
            stop: &persona.stop,
            max_tokens: persona.max_tokens,
            deadline: Some(deadline),
            temperature,
            seed,
        };
        match self.mind.complete(&ask) {
            Ok(c) => {
                self.event(
                    cycle,
                    "completion",
                    json!({"persona": persona.name, "completion": c.text, "tokens": c.tokens, "millis": c.millis}),
                )?;
                Ok(c.text)
            }
            Err(e) => {
                let reason = format!("the mind failed: {e}");
                self.event(
                    cycle,
                    "diagnostic",
                    json!({"stage": "mind", "error": reason}),
                )?;
                self.check(deadline)?;
                Err(Abort::Fail(reason))
            }
        }
    }

    fn steps(
        &mut self,
        cycle: Oid,
        mission: &Mission,
        config: &Config,
        deadline: Instant,
    ) -> Result<(Result<Value, String>, MethodId), Abort> {
        if let Some(reason) = examples::contradiction(&mission.examples) {
            return Err(Abort::Fail(reason));
        }
        let brief = brief::mission(self.image, mission)?;
        self.event(cycle, "brief", json!({"brief": brief}))?;
        let plan = self.ask(
            cycle,
            &config.planner,
            &brief::plan_prompt(&brief),
            mission,
            deadline,
        )?;
        // A repair keeps to what the method it replaces was held to: the examples of the cycle
        // that wrote it, beside any the failing message carried.
        let mut examples = mission.examples.clone();
        if let Some(repair) = &mission.repair {
            for example in self.inherited_examples(repair)? {
                if !examples.contains(&example) {
                    examples.push(example);
                }
            }
            if let Some(reason) = examples::contradiction(&examples) {
                return Err(Abort::Fail(reason));
            }
        }
        // With none given, examples written from the intent (a setting), checked the same way.
        if examples.is_empty() && config.examples_from_intent {
            let text = self.ask(
                cycle,
                &config.examples_writer,
                &brief::examples_prompt(&brief, &mission.selector),
                mission,
                deadline,
            )?;
            let written: Vec<examples::Example> = text
                .lines()
                .filter_map(|line| {
                    let line = line
                        .trim()
                        .trim_start_matches(['-', '*', ' '])
                        .trim_matches('`');
                    examples::parse_cli(line).ok()
                })
                .take(3)
                .collect();
            // Examples that contradict each other judge nothing: none are kept.
            let kept = if examples::contradiction(&written).is_some() {
                Vec::new()
            } else {
                written
            };
            self.event(cycle, "examples-written", json!({"examples": kept}))?;
            examples = kept;
        }
        if !examples.is_empty() {
            // Kept with the cycle: a later repair of its method is held to them too. Examples too
            // large (or deep) for a slot are not kept; the cycle goes on, and says so.
            let kept = json!(examples);
            match crate::image::check_value("examples", &kept) {
                Ok(()) => set_slot(self.image, cycle, "examples", kept)?,
                Err(e) => self.event(
                    cycle,
                    "diagnostic",
                    json!({"stage": "examples", "error": format!("the examples are not kept for later repairs: {e}")}),
                )?,
            }
        }
        let recalled = memory::recall(self.image, mission, config.memory as usize)?;
        if !recalled.is_empty() {
            let found: Vec<Value> = recalled
                .iter()
                .map(|r| json!({"method": r.label, "score": r.score}))
                .collect();
            self.event(cycle, "memory", json!({"recalled": found}))?;
        }
        let mut repair: Option<(String, String, String)> = None;
        let mut tried: Vec<String> = Vec::new();
        let mut last_reason = String::from("no attempt was made");
        for attempt in 1..=config.attempts {
            self.enter(cycle, State::Writing, json!({"attempt": attempt}))?;
            set_slot(self.image, cycle, "attempts", json!(attempt))?;
            let prompt = brief::write_prompt(
                &brief,
                &mission.selector,
                &plan,
                &recalled,
                repair
                    .as_ref()
                    .map(|(s, d, a)| (s.as_str(), d.as_str(), a.as_str())),
            );
            let turn = Turn {
                cycle,
                mission,
                examples: &examples,
                deadline,
                attempt,
            };
            // The candidates of one attempt, checked in turn: the first to pass is installed; if
            // none does, the one that got furthest is what the reviewer and the next attempt see.
            let mut furthest: Option<Setback> = None;
            for candidate in 1..=config.candidates {
                let Some(completion) = self.draw(&turn, config, &prompt, candidate, &mut tried)?
                else {
                    continue;
                };
                match self.candidate(&turn, candidate, &completion)? {
                    Tried::Installed(answer, method) => return Ok((answer, method)),
                    Tried::Failed(setback) => {
                        if furthest
                            .as_ref()
                            .is_none_or(|f| setback.reached > f.reached)
                        {
                            furthest = Some(setback);
                        }
                    }
                }
            }
            let Some(setback) = furthest else {
                last_reason = "every candidate repeated an earlier one".into();
                continue;
            };
            last_reason = setback.reason.clone();
            // No advice after the last attempt, nor for a completion with no method in it.
            let advice = if attempt >= config.attempts || setback.reached == Reached::Nothing {
                String::new()
            } else {
                self.ask(
                    cycle,
                    &config.reviewer,
                    &brief::review_prompt(&brief, &setback.source, &setback.reason),
                    mission,
                    deadline,
                )?
            };
            repair = Some((setback.source, setback.reason, advice));
        }
        Err(Abort::Fail(format!(
            "no method passed after {} attempt(s); last: {}",
            config.attempts,
            brief::clip(&last_reason, 300)
        )))
    }

    /// The examples the cycle that wrote a method checked it against (none for a method no
    /// cycle wrote, or one whose cycle kept none).
    fn inherited_examples(&self, repair: &Repair) -> Result<Vec<examples::Example>, Abort> {
        let (_, report) = self.image.method_source_and_report(repair.method)?;
        let Some(cycle) = report.get("cycle").and_then(Value::as_i64) else {
            return Ok(Vec::new());
        };
        let kept = match self.image.get(Oid(cycle), "examples") {
            Ok(kept) => kept,
            Err(ImageError::NoSuchSlot { .. } | ImageError::NoSuchObject(_)) => {
                return Ok(Vec::new());
            }
            Err(e) => return Err(e.into()),
        };
        // Examples a client overwrote with something else are no reason to repair unchecked.
        serde_json::from_value(kept).map_err(|e| {
            Abort::Fail(format!(
                "cycle {cycle}'s kept examples cannot be read ({e}): the repair would go unchecked"
            ))
        })
    }

    /// Candidate `n` of an attempt: the first greedy (drawn again, sampled, if it repeats an
    /// earlier attempt's and `resample` is on), the others sampled with a seed each. `None`: a
    /// sampled candidate that repeats one already checked (it would fail the same way).
    fn draw(
        &mut self,
        turn: &Turn<'_>,
        config: &Config,
        prompt: &str,
        n: u32,
        tried: &mut Vec<String>,
    ) -> Result<Option<String>, Abort> {
        let (cycle, mission, attempt) = (turn.cycle, turn.mission, turn.attempt);
        let repeats = |completion: &str, tried: &[String]| {
            brief::extract_source(completion).is_some_and(|(source, _)| tried.contains(&source))
        };
        let completion = if n == 1 {
            let completion = self.ask(cycle, &config.writer, prompt, mission, turn.deadline)?;
            // Greedy decoding repeats itself: a candidate already tried is drawn again, sampled.
            if config.resample && repeats(&completion, tried) {
                let seed = RESAMPLE_SEED + u64::from(attempt);
                self.event(
                    cycle,
                    "resample",
                    json!({"attempt": attempt, "why": "the writer repeated an earlier candidate", "temperature": RESAMPLE_TEMPERATURE, "seed": seed}),
                )?;
                self.ask_sampled(
                    cycle,
                    &config.writer,
                    prompt,
                    mission,
                    turn.deadline,
                    RESAMPLE_TEMPERATURE,
                    seed,
                )?
            } else {
                completion
            }
        } else {
            let seed = RESAMPLE_SEED + 1000 * u64::from(attempt) + u64::from(n);
            let completion = self.ask_sampled(
                cycle,
                &config.writer,
                prompt,
                mission,
                turn.deadline,
                RESAMPLE_TEMPERATURE,
                seed,
            )?;
            if repeats(&completion, tried) {
                self.event(
                    cycle,
                    "candidate",
                    json!({"attempt": attempt, "candidate": n, "skipped": "it repeats a candidate already checked"}),
                )?;
                return Ok(None);
            }
            completion
        };
        if let Some((source, _)) = brief::extract_source(&completion) {
            tried.push(source);
        }
        Ok(Some(completion))
    }

    /// One candidate through every check: extraction, the fixes by rule, the gates and rustc,
    /// the examples on scratch clones, and the install with the first call. Its failure is a
    /// `diagnostic` in the transcript.
    fn candidate(&mut self, turn: &Turn<'_>, n: u32, completion: &str) -> Result<Tried, Abort> {
        let (cycle, mission, attempt) = (turn.cycle, turn.mission, turn.attempt);
        let Some((source, made)) = brief::extract_source(completion) else {
            let reason = "the completion holds no Rust method (no `fn run`)".to_owned();
            return self.failed(
                turn,
                n,
                Setback::new(completion.to_owned(), reason, "no-method", Reached::Nothing),
                json!({"stage": "extract"}),
            );
        };
        for note in &made {
            self.event(
                cycle,
                "fix",
                json!({"attempt": attempt, "candidate": n, "fix": note}),
            )?;
        }
        let mut source = source;
        self.enter(
            cycle,
            State::Compiling,
            json!({"attempt": attempt, "candidate": n}),
        )?;
        self.check(turn.deadline)?;
        let started = Instant::now();
        let mut outcome = self.methods.build(&source);
        // Fixes by rule, each once and in this order, each compiled again before a model turn
        // is spent: a covenant refusal that names its write, then rustc's machine-applicable
        // suggestions.
        for rule in [covenant_fix, rustc_fix] {
            if let Err(e) = &outcome
                && let Some((fixed, note)) = rule(&source, e)
            {
                self.event(
                    cycle,
                    "fix",
                    json!({"attempt": attempt, "candidate": n, "fix": note}),
                )?;
                source = fixed;
                outcome = self.methods.build(&source);
            }
        }
        let mut built = match outcome {
            Ok(built) => built,
            Err(e) => {
                // The exact corrected lines for the mistakes models repeat, first: rustc's own
                // text is long and its suggestions are often wrong.
                let hints = hints::corrected_lines(&source);
                let detail = json!({"stage": "compile", "gate": gate_of(&e), "hints": hints, "millis": started.elapsed().as_secs_f64() * 1000.0});
                let reason = if hints.is_empty() {
                    e.to_string()
                } else {
                    format!("Corrected lines (use these):\n{}\n\n{e}", hints.join("\n"))
                };
                let reached = if matches!(e, MethodError::Refused { .. }) {
                    Reached::Source
                } else {
                    Reached::Rustc
                };
                return self.failed(
                    turn,
                    n,
                    Setback::new(source, reason, e.code().as_str(), reached),
                    detail,
                );
            }
        };
        self.event(
            cycle,
            "compiled",
            json!({"attempt": attempt, "candidate": n, "millis": started.elapsed().as_secs_f64() * 1000.0, "sha256": built.sha256}),
        )?;
        if let Value::Object(report) = &mut built.report {
            report.insert("cycle".into(), json!(cycle));
        }
        self.enter(
            cycle,
            State::Validating,
            json!({"attempt": attempt, "candidate": n}),
        )?;
        self.check(turn.deadline)?;
        if !turn.examples.is_empty() {
            let started = Instant::now();
            let failures = match self.methods.trial(
                self.image,
                mission.receiver,
                &mission.selector,
                &built,
                turn.examples,
                &mission.actor,
            ) {
                Ok(failures) => failures,
                Err(e) if host_fault(&e) => return Err(Abort::Error(CognitionError::Method(e))),
                Err(e) => {
                    let setback =
                        Setback::new(source, e.to_string(), e.code().as_str(), Reached::Compiled);
                    return self.failed(turn, n, setback, json!({"stage": "examples"}));
                }
            };
            let millis = started.elapsed().as_secs_f64() * 1000.0;
            self.event(
                cycle,
                "examples",
                json!({"attempt": attempt, "candidate": n, "passed": turn.examples.len() - failures.len(), "failed": failures, "millis": millis}),
            )?;
            if !failures.is_empty() {
                let reason = format!(
                    "the method compiled but failed {} of {} examples:\n{}",
                    failures.len(),
                    turn.examples.len(),
                    failures.join("\n")
                );
                let setback = Setback::new(source, reason, "wrong-answer", Reached::Compiled);
                return self.failed(turn, n, setback, json!({"stage": "examples"}));
            }
        }
        let started = Instant::now();
        // A repair is a new version of the method that trapped, where it is (the receiver or
        // the parent it was inherited from), and only while that slot still holds the version
        // that trapped: a newer one (another repair, a hand install) is never overwritten.
        let holder = mission
            .repair
            .as_ref()
            .map_or(mission.receiver, |r| r.holder);
        if let Some(repair) = &mission.repair
            && self.image.own_slot(holder, &mission.selector)? != Some(Slot::Method(repair.method))
        {
            return Err(Abort::Fail(format!(
                "{holder}.{} changed while its repair ran (version {} is no longer there): send the message again",
                mission.selector, repair.version
            )));
        }
        let note = match &mission.repair {
            None => format!(
                "cycle {cycle}: install {}.{} and answer its first message",
                mission.receiver, mission.selector
            ),
            Some(r) => format!(
                "cycle {cycle}: repair {holder}.{} (version {} failed with {}) and answer the message again",
                mission.selector, r.version, r.code
            ),
        };
        match self.methods.install_and_send(
            self.image,
            holder,
            mission.receiver,
            &mission.selector,
            &built,
            Origin::Synthesized,
            mission.args.clone(),
            &mission.actor,
            &note,
        ) {
            Ok((installed, report)) => {
                let millis = started.elapsed().as_secs_f64() * 1000.0;
                let answer = json!({"value": report.value, "millis": millis});
                self.finish_installed(cycle, &installed, answer, attempt)?;
                Ok(Tried::Installed(Ok(report.value), installed.method))
            }
            // Every example passed (an example may ask for an Err): the method's own Err is its
            // answer, and the method is installed without the call's changes.
            Err(MethodError::Sandbox(SandboxError::MethodError { message }))
                // Only a client's example can ask for an Err: one the model wrote cannot vouch
                // for an Err it may always answer.
                if mission.examples.iter().any(|e| {
                    e.expect == examples::Expect::Error
                        && examples::same(
                            &Value::Array(e.args.clone()),
                            &Value::Array(mission.args.clone()),
                        )
                }) =>
            {
                let installed = self
                    .methods
                    .install_built(
                        self.image,
                        holder,
                        &mission.selector,
                        &built,
                        Origin::Synthesized,
                        &mission.actor,
                        &format!(
                            "cycle {cycle}: install {holder}.{} (it answers its first message with an Err)",
                            mission.selector
                        ),
                    )
                    .map_err(CognitionError::from)?;
                self.finish_installed(cycle, &installed, json!({"error": message}), attempt)?;
                Ok(Tried::Installed(Err(message), installed.method))
            }
            Err(e) if host_fault(&e) => Err(Abort::Error(CognitionError::Method(e))),
            Err(e) => {
                let setback = Setback::new(source, e.to_string(), e.code().as_str(), Reached::Examples);
                self.failed(turn, n, setback, json!({"stage": "trial"}))
            }
        }
    }

    /// A candidate's failure, as a `diagnostic` in the transcript.
    fn failed(
        &mut self,
        turn: &Turn<'_>,
        n: u32,
        setback: Setback,
        mut detail: Value,
    ) -> Result<Tried, Abort> {
        let reason = brief::clip(&setback.reason, 1500);
        if let Value::Object(d) = &mut detail {
            d.insert("attempt".into(), json!(turn.attempt));
            d.insert("candidate".into(), json!(n));
            d.insert("code".into(), json!(setback.code));
            d.insert("error".into(), json!(reason));
        }
        self.event(turn.cycle, "diagnostic", detail)?;
        Ok(Tried::Failed(Setback { reason, ..setback }))
    }

    /// The last three states of a cycle whose method is installed: installing, answering (with
    /// `answer`: the value or the error it answered), complete.
    fn finish_installed(
        &mut self,
        cycle: Oid,
        installed: &crate::method::Installed,
        answer: Value,
        attempt: u32,
    ) -> Result<(), Abort> {
        self.enter(
            cycle,
            State::Installing,
            json!({"method": installed.method, "version": installed.version, "tx": installed.tx}),
        )?;
        self.enter(cycle, State::Answering, answer)?;
        set_slot(self.image, cycle, "method", json!(installed.method))?;
        self.enter(cycle, State::Complete, json!({"attempts": attempt}))?;
        Ok(())
    }
}

/// One attempt's place in its cycle, for its candidates.
struct Turn<'a> {
    cycle: Oid,
    mission: &'a Mission,
    /// The examples the method must pass (given, or written from the intent).
    examples: &'a [examples::Example],
    deadline: Instant,
    attempt: u32,
}

/// How far a failed candidate got: the furthest of an attempt's is the one repaired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Reached {
    /// No method in the completion.
    Nothing,
    /// Refused by the source gate (before rustc).
    Source,
    /// Refused by rustc or the component gate.
    Rustc,
    /// Compiled, then failed an example.
    Compiled,
    /// Passed every example, then failed its first call.
    Examples,
}

/// A candidate that failed: its source, why, the error code, and how far it got.
struct Setback {
    source: String,
    reason: String,
    code: String,
    reached: Reached,
}

impl Setback {
    fn new(source: String, reason: String, code: &str, reached: Reached) -> Setback {
        Setback {
            source,
            reason,
            code: code.to_owned(),
            reached,
        }
    }
}

/// What one candidate came to.
enum Tried {
    /// Installed, with the answer to the message (or the Err an example asked for).
    Installed(Result<Value, String>, MethodId),
    Failed(Setback),
}

/// The host's fault, not the writer's (the image's file or database failed): the cycle ends,
/// no model turn is spent on it. A method's own misuse of the image (delegation too deep, a
/// value too large) is the writer's to repair.
fn host_fault(e: &MethodError) -> bool {
    match e {
        MethodError::Image(e) | MethodError::Sandbox(SandboxError::Image(e)) => {
            e.code() == Code::Internal
        }
        _ => false,
    }
}

/// A covenant refusal that names its write: `notify_changed()` inserted after it.
fn covenant_fix(source: &str, e: &MethodError) -> Option<(String, String)> {
    match e {
        MethodError::Refused { refusals, .. } => fixes::notify_after_writes(source, refusals),
        _ => None,
    }
}

/// A compile error with machine-applicable suggestions: rustc's fixes applied.
fn rustc_fix(source: &str, e: &MethodError) -> Option<(String, String)> {
    match e {
        MethodError::Forge(ForgeError::CompileFailed { suggestions, .. }) => {
            fixes::apply_rustc_suggestions(source, suggestions)
        }
        _ => None,
    }
}

/// Which gate refused a method: `source` (before rustc), `rustc`, `component` (after it).
fn gate_of(e: &MethodError) -> &'static str {
    match e {
        MethodError::Refused { gate, .. } => gate,
        MethodError::Forge(_) => "rustc",
        _ => "other",
    }
}

fn set_slot(image: &mut Image, cycle: Oid, slot: &str, value: Value) -> Result<(), ImageError> {
    image.transact("cognition", &format!("cycle {cycle}: {slot}"), |tx| {
        tx.set_slot(cycle, slot, Slot::Value(value))
    })?;
    Ok(())
}

/// Moves `cycle` to `to`: it delegates to the state's object first, and names it in `state`.
fn transition(
    image: &mut Image,
    cycle: Oid,
    to: State,
    reason: Option<&str>,
) -> Result<(), ImageError> {
    let state = image
        .named(&to.object())?
        .ok_or_else(|| ImageError::NoSuchObject(ObjRef::Name(to.object())))?;
    let proto = image
        .named(CYCLE_PROTO)?
        .ok_or_else(|| ImageError::NoSuchObject(ObjRef::Name(CYCLE_PROTO.into())))?;
    image.transact(
        "cognition",
        &format!("cycle {cycle} → {}", to.name()),
        |tx| {
            tx.set_parents(cycle, vec![state, proto])?;
            tx.set_slot(cycle, "state", Slot::Value(json!(to.name())))?;
            if let Some(reason) = reason {
                tx.set_slot(cycle, "reason", Slot::Value(json!(reason)))?;
            }
            Ok::<_, ImageError>(())
        },
    )?;
    Ok(())
}

/// Cycles a host left unfinished (it died mid-cycle) are marked failed, with the reason, in the
/// image and the journal. Answers how many there were.
pub fn recover(image: &mut Image, journal: &Journal) -> Result<usize, CognitionError> {
    let Some(proto) = image.named(CYCLE_PROTO)? else {
        return Ok(0);
    };
    let mut recovered = 0;
    for cycle in image.children_of(proto)? {
        let state = image.get(cycle, "state").ok();
        let unfinished = state
            .as_ref()
            .and_then(Value::as_str)
            .and_then(State::parse)
            .is_some_and(|s| !s.terminal());
        if !unfinished {
            continue;
        }
        let reason = "the host stopped during this cycle; nothing of it was installed";
        transition(image, cycle, State::Failed, Some(reason))?;
        let stored = image.append_cycle_event(
            cycle,
            "transition",
            &json!({"to": State::Failed.name(), "reason": reason, "recovered": true}),
        )?;
        journal.append(&stored)?;
        recovered += 1;
    }
    Ok(recovered)
}

/// One cycle's summary row, as `cycles` lists it.
pub fn summary(image: &Image, cycle: Oid) -> Result<Value, CognitionError> {
    let view = match image.describe(cycle, None) {
        Ok(view) => view,
        Err(ImageError::NoSuchObject(_)) => return Err(CognitionError::NoSuchCycle(cycle)),
        Err(e) => return Err(e.into()),
    };
    let proto = image.named(CYCLE_PROTO)?;
    if !proto.is_some_and(|p| view.parents.contains(&p)) {
        return Err(CognitionError::NoSuchCycle(cycle));
    }
    let events = image.cycle_events(cycle)?;
    let started = events
        .first()
        .map(|e| e["at"].clone())
        .unwrap_or(Value::Null);
    let state = view.slots.get("state").cloned().unwrap_or(Value::Null);
    let terminal = state
        .as_str()
        .and_then(State::parse)
        .is_some_and(State::terminal);
    let ended = if terminal {
        events
            .last()
            .map(|e| e["at"].clone())
            .unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    let outcome = match state.as_str() {
        Some("complete") => json!({"method": view.slots.get("method")}),
        Some("failed") => json!({"reason": view.slots.get("reason")}),
        _ => Value::Null,
    };
    let object = view.slots.get("receiver").cloned().unwrap_or(Value::Null);
    Ok(json!({
        "id": cycle,
        "object": object,
        "selector": view.slots.get("selector"),
        "state": state,
        "attempts": view.slots.get("attempts"),
        "outcome": outcome,
        "started": started,
        "ended": ended,
        "mind": view.slots.get("mind"),
    }))
}

/// The cycles, oldest first; with `limit`, only the newest that many.
pub fn list(image: &Image, limit: Option<usize>) -> Result<Vec<Value>, CognitionError> {
    let Some(proto) = image.named(CYCLE_PROTO)? else {
        return Ok(Vec::new());
    };
    let mut cycles = image.children_of(proto)?;
    if let Some(limit) = limit {
        let skip = cycles.len().saturating_sub(limit);
        cycles.drain(..skip);
    }
    cycles.into_iter().map(|c| summary(image, c)).collect()
}

/// One cycle: its summary and its whole transcript.
pub fn transcript(image: &Image, cycle: Oid) -> Result<Value, CognitionError> {
    let mut summary = summary(image, cycle)?;
    summary["events"] = Value::Array(image.cycle_events(cycle)?);
    Ok(summary)
}

/// Prompt/completion pairs of the cycles that completed: a fine-tuning set, one object per pair.
pub fn export(image: &Image) -> Result<Vec<Value>, CognitionError> {
    let mut pairs = Vec::new();
    for cycle in list(image, None)? {
        if cycle["state"] != "complete" {
            continue;
        }
        let Some(id) = cycle["id"].as_i64() else {
            continue;
        };
        let mut pending: Option<Value> = None;
        for event in image.cycle_events(Oid(id))? {
            match event["kind"].as_str() {
                Some("prompt") => pending = Some(event["data"].clone()),
                Some("completion") => {
                    if let Some(prompt) = pending.take() {
                        pairs.push(json!({
                            "cycle": id,
                            "persona": prompt["persona"],
                            "system": prompt["system"],
                            "prompt": prompt["prompt"],
                            "completion": event["data"]["completion"],
                        }));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(pairs)
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
