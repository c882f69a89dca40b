//! The personas (`brick` plans, `robin` writes, `alfred` reviews failures): image objects a
//! new image gets, each with its system prompt, token budget, prefill and stop sequences.

use super::*;

/// The writer's answers start with the fence and `run`'s signature: the model writes the body.
pub(super) const WRITER_PREFILL: &str = "```rust\n// {selector}: {intent}\npub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {\n";

/// The personas a new image gets: (name, role, system prompt, max tokens, prefill, stop).
pub(super) type PersonaSeed = (
    &'static str,
    &'static str,
    &'static str,
    u64,
    &'static str,
    &'static [&'static str],
);
pub(super) const PERSONAS: &[PersonaSeed] = &[
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

pub(super) fn persona(image: &Image, name: &str) -> Result<Persona, ImageError> {
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

pub(super) fn create_persona(
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
