//! The cycle runner: one mission from planning to `complete` or `failed`.

use super::*;

/// How a repeated candidate is drawn again: warm enough to leave the greedy path, with a seed per
/// attempt so that a cycle is reproducible.
pub(super) const RESAMPLE_TEMPERATURE: f64 = 0.7;
pub(super) const RESAMPLE_SEED: u64 = 20_261_201;

/// One cycle's runner: the image (a writer), the method machinery, the mind, the journal, and
/// the flag that stops everything (host shutdown).
#[derive(Debug)]
pub struct Cycle<'a> {
    pub image: &'a mut Image,
    pub methods: &'a Runtime,
    pub mind: &'a dyn Completer,
    pub journal: &'a Journal,
    pub stop: &'a AtomicBool,
}

/// Why a step gave up on the whole cycle.
pub(super) enum Abort {
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
            shutdown: Some(self.stop),
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
        built.report.cycle = Some(cycle);
        built.report.mind = Some(self.mind.label());
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
pub(super) struct Turn<'a> {
    cycle: Oid,
    mission: &'a Mission,
    /// The examples the method must pass (given, or written from the intent).
    examples: &'a [examples::Example],
    deadline: Instant,
    attempt: u32,
}

/// How far a failed candidate got: the furthest of an attempt's is the one repaired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Reached {
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
pub(super) struct Setback {
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
pub(super) enum Tried {
    /// Installed, with the answer to the message (or the Err an example asked for).
    Installed(Result<Value, String>, MethodId),
    Failed(Setback),
}

/// The host's fault, not the writer's (the image's file or database failed): the cycle ends,
/// no model turn is spent on it. A method's own misuse of the image (delegation too deep, a
/// value too large) is the writer's to repair.
pub(super) fn host_fault(e: &MethodError) -> bool {
    match e {
        MethodError::Image(e) | MethodError::Sandbox(SandboxError::Image(e)) => {
            e.code() == Code::Internal
        }
        _ => false,
    }
}

/// A covenant refusal that names its write: `notify_changed()` inserted after it.
pub(super) fn covenant_fix(source: &str, e: &MethodError) -> Option<(String, String)> {
    match e {
        MethodError::Refused { refusals, .. } => fixes::notify_after_writes(source, refusals),
        _ => None,
    }
}

/// A compile error with machine-applicable suggestions: rustc's fixes applied.
pub(super) fn rustc_fix(source: &str, e: &MethodError) -> Option<(String, String)> {
    match e {
        MethodError::Forge(ForgeError::CompileFailed { suggestions, .. }) => {
            fixes::apply_rustc_suggestions(source, suggestions)
        }
        _ => None,
    }
}

/// Which gate refused a method: `source` (before rustc), `rustc`, `component` (after it).
pub(super) fn gate_of(e: &MethodError) -> &'static str {
    match e {
        MethodError::Refused { gate, .. } => gate,
        MethodError::Forge(_) => "rustc",
        _ => "other",
    }
}

pub(super) fn set_slot(
    image: &mut Image,
    cycle: Oid,
    slot: &str,
    value: Value,
) -> Result<(), ImageError> {
    image.transact("cognition", &format!("cycle {cycle}: {slot}"), |tx| {
        tx.set_slot(cycle, slot, Slot::Value(value))
    })?;
    Ok(())
}

/// Moves `cycle` to `to`: it delegates to the state's object first, and names it in `state`.
pub(super) fn transition(
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
