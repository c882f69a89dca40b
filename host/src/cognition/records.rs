//! Cycles as records: recovery of cycles a dead host left open, summaries, listing,
//! transcripts and export.

use super::*;

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
