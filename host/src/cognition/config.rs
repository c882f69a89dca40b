//! The configuration: the `cognition` object's slots, read at the start of every cycle.

use super::*;

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

    pub(super) fn as_slots(&self) -> Map<String, Value> {
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
