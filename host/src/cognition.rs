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
pub mod examples;
pub mod fixes;
pub mod hints;
pub mod memory;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

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
}

impl CognitionError {
    pub fn code(&self) -> &'static str {
        match self {
            CognitionError::Image(e) => e.code(),
            CognitionError::Method(e) => e.code(),
            CognitionError::NoSuchCycle(_) => "no-such-cycle",
            CognitionError::Journal { .. } => "internal",
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
        // With none given, examples written from the intent (a setting), checked the same way.
        let mut examples = mission.examples.clone();
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
            let mut completion = self.ask(cycle, &config.writer, &prompt, mission, deadline)?;
            // Greedy decoding repeats itself: a candidate already tried is drawn again, sampled.
            if config.resample
                && let Some((again, _)) = brief::extract_source(&completion)
                && tried.contains(&again)
            {
                let seed = RESAMPLE_SEED + u64::from(attempt);
                self.event(
                    cycle,
                    "resample",
                    json!({"attempt": attempt, "why": "the writer repeated an earlier candidate", "temperature": RESAMPLE_TEMPERATURE, "seed": seed}),
                )?;
                completion = self.ask_sampled(
                    cycle,
                    &config.writer,
                    &prompt,
                    mission,
                    deadline,
                    RESAMPLE_TEMPERATURE,
                    seed,
                )?;
            }
            let Some((source, made)) = brief::extract_source(&completion) else {
                last_reason = "the completion holds no Rust method (no `fn run`)".into();
                self.event(
                    cycle,
                    "diagnostic",
                    json!({"stage": "extract", "attempt": attempt, "error": last_reason}),
                )?;
                repair = Some((completion.clone(), last_reason.clone(), String::new()));
                continue;
            };
            tried.push(source.clone());
            for note in &made {
                self.event(cycle, "fix", json!({"attempt": attempt, "fix": note}))?;
            }
            let mut source = source;
            let failed = Failed {
                cycle,
                mission,
                config,
                brief: &brief,
                deadline,
                attempt,
            };
            self.enter(cycle, State::Compiling, json!({"attempt": attempt}))?;
            self.check(deadline)?;
            let started = Instant::now();
            let mut outcome = self.methods.build(&source);
            // A covenant refusal that names its write is fixed by rule and compiled again
            // before a model turn is spent on it.
            if let Err(MethodError::Refused { refusals, .. }) = &outcome
                && let Some((fixed, note)) = fixes::notify_after_writes(&source, refusals)
            {
                self.event(cycle, "fix", json!({"attempt": attempt, "fix": note}))?;
                source = fixed;
                outcome = self.methods.build(&source);
            }
            let mut built = match outcome {
                Ok(built) => built,
                Err(e) => {
                    // The exact corrected lines for the mistakes models repeat, first: rustc's
                    // own text is long and its suggestions are often wrong.
                    let hints = hints::corrected_lines(&source);
                    let detail = json!({"stage": "compile", "gate": gate_of(&e), "hints": hints, "millis": started.elapsed().as_secs_f64() * 1000.0});
                    let reason = if hints.is_empty() {
                        e.to_string()
                    } else {
                        format!("Corrected lines (use these):\n{}\n\n{e}", hints.join("\n"))
                    };
                    let (reason, next) =
                        self.setback_because(&failed, source, reason, e.code(), detail)?;
                    last_reason = reason;
                    repair = Some(next);
                    continue;
                }
            };
            self.event(
                cycle,
                "compiled",
                json!({"attempt": attempt, "millis": started.elapsed().as_secs_f64() * 1000.0, "sha256": built.sha256}),
            )?;
            if let Value::Object(report) = &mut built.report {
                report.insert("cycle".into(), json!(cycle));
            }
            self.enter(cycle, State::Validating, json!({"attempt": attempt}))?;
            self.check(deadline)?;
            if !examples.is_empty() {
                let started = Instant::now();
                let failures = match self.methods.trial(
                    self.image,
                    mission.receiver,
                    &mission.selector,
                    &built,
                    &examples,
                    &mission.actor,
                ) {
                    Ok(failures) => failures,
                    // The host's fault, not the writer's: no model turn is spent on it.
                    Err(
                        e @ (MethodError::Image(_) | MethodError::Sandbox(SandboxError::Image(_))),
                    ) => {
                        return Err(Abort::Error(CognitionError::Method(e)));
                    }
                    Err(e) => {
                        let (reason, next) =
                            self.setback(&failed, source, &e, json!({"stage": "examples"}))?;
                        last_reason = reason;
                        repair = Some(next);
                        continue;
                    }
                };
                let millis = started.elapsed().as_secs_f64() * 1000.0;
                self.event(
                    cycle,
                    "examples",
                    json!({"attempt": attempt, "passed": examples.len() - failures.len(), "failed": failures, "millis": millis}),
                )?;
                if !failures.is_empty() {
                    let reason = format!(
                        "the method compiled but failed {} of {} examples:\n{}",
                        failures.len(),
                        examples.len(),
                        failures.join("\n")
                    );
                    let (reason, next) = self.setback_because(
                        &failed,
                        source,
                        reason,
                        "wrong-answer",
                        json!({"stage": "examples"}),
                    )?;
                    last_reason = reason;
                    repair = Some(next);
                    continue;
                }
            }
            let started = Instant::now();
            let note = format!(
                "cycle {cycle}: install {}.{} and answer its first message",
                mission.receiver, mission.selector
            );
            match self.methods.install_and_send(
                self.image,
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
                    return Ok((Ok(report.value), installed.method));
                }
                // Every example passed (an example may ask for an Err): the method's own Err
                // is its answer, and the method is installed without the call's changes.
                Err(MethodError::Sandbox(SandboxError::MethodError { message }))
                    // Only a client's example can ask for an Err: one the model wrote cannot
                    // vouch for an Err it may always answer.
                    if mission.examples.iter().any(|e| {
                        e.expect == examples::Expect::Error
                            && examples::same(
                                &Value::Array(e.args.clone()),
                                &Value::Array(mission.args.clone()),
                            )
                    }) =>
                {
                    let installed = self.methods.install_built(
                        self.image,
                        mission.receiver,
                        &mission.selector,
                        &built,
                        Origin::Synthesized,
                        &mission.actor,
                        &format!(
                            "cycle {cycle}: install {}.{} (it answers its first message with an Err)",
                            mission.receiver, mission.selector
                        ),
                    ).map_err(CognitionError::from)?;
                    self.finish_installed(cycle, &installed, json!({"error": message}), attempt)?;
                    return Ok((Err(message), installed.method));
                }
                Err(e) => {
                    let (reason, next) =
                        self.setback(&failed, source, &e, json!({"stage": "trial"}))?;
                    last_reason = reason;
                    repair = Some(next);
                }
            }
        }
        Err(Abort::Fail(format!(
            "no method passed after {} attempt(s); last: {}",
            config.attempts,
            brief::clip(&last_reason, 300)
        )))
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

    /// An attempt that failed: its diagnostic (`detail` plus the attempt, the code and the
    /// error) in the transcript, and the reviewer's advice (none after the last attempt).
    /// Answers the reason and what the writer's next prompt repairs: (source, reason, advice).
    fn setback(
        &mut self,
        failed: &Failed<'_>,
        source: String,
        error: &MethodError,
        detail: Value,
    ) -> Result<(String, (String, String, String)), Abort> {
        self.setback_because(failed, source, error.to_string(), error.code(), detail)
    }

    /// [`Cycle::setback`] for a failure that is not a [`MethodError`] (a wrong answer).
    fn setback_because(
        &mut self,
        failed: &Failed<'_>,
        source: String,
        reason: String,
        code: &str,
        mut detail: Value,
    ) -> Result<(String, (String, String, String)), Abort> {
        let reason = brief::clip(&reason, 1500);
        if let Value::Object(d) = &mut detail {
            d.insert("attempt".into(), json!(failed.attempt));
            d.insert("code".into(), json!(code));
            d.insert("error".into(), json!(reason));
        }
        self.event(failed.cycle, "diagnostic", detail)?;
        let advice = if failed.attempt >= failed.config.attempts {
            String::new()
        } else {
            self.ask(
                failed.cycle,
                &failed.config.reviewer,
                &brief::review_prompt(failed.brief, &source, &reason),
                failed.mission,
                failed.deadline,
            )?
        };
        Ok((reason.clone(), (source, reason, advice)))
    }
}

/// Where a failed attempt happened, for [`Cycle::setback`].
struct Failed<'a> {
    cycle: Oid,
    mission: &'a Mission,
    config: &'a Config,
    brief: &'a str,
    deadline: Instant,
    attempt: u32,
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
