//! Replay and the canonical state hash.
//!
//! Replay rebuilds the image's state from the change log alone, in a fresh in-memory database,
//! by applying each change's `after` with the same [`log::apply`] the live image uses. The state
//! hash is SHA-256 over the canonical JSON of every object in oid order (name, parents in order,
//! slots with sorted keys all the way down), so equal states hash equal whatever the row order.

use std::collections::BTreeMap;

use rusqlite::Connection;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::log::{self, Change};
use super::{ImageError, schema};
use crate::object::{Oid, Slot, TxId};

/// One object's state as the hash sees it.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ObjectState {
    pub name: Option<String>,
    pub parents: Vec<Oid>,
    pub slots: BTreeMap<String, Slot>,
}

impl ObjectState {
    /// Applies one change to this object's state (for "as of" views folded from the log).
    fn fold(state: &mut Option<ObjectState>, change: Change) {
        match change {
            Change::Create { .. } => *state = Some(ObjectState::default()),
            Change::Destroy { .. } => *state = None,
            Change::Name { after, .. } => {
                if let Some(s) = state {
                    s.name = after;
                }
            }
            Change::Parents { after, .. } => {
                if let Some(s) = state {
                    s.parents = after;
                }
            }
            Change::Slot { slot, after, .. } => {
                if let Some(s) = state {
                    match after {
                        Some(v) => s.slots.insert(slot, v),
                        None => s.slots.remove(&slot),
                    };
                }
            }
        }
    }

    fn canonical(&self, oid: Oid) -> String {
        let mut out = String::new();
        out.push('[');
        out.push_str(&oid.0.to_string());
        out.push(',');
        write_canonical(
            &mut out,
            &serde_json::to_value(&self.name).unwrap_or(Value::Null),
        );
        out.push_str(",[");
        let parents: Vec<String> = self.parents.iter().map(|p| p.0.to_string()).collect();
        out.push_str(&parents.join(","));
        out.push_str("],{");
        for (i, (name, slot)) in self.slots.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_canonical(&mut out, &Value::String(name.clone()));
            out.push(':');
            match slot {
                Slot::Value(v) => {
                    out.push_str("{\"value\":");
                    write_canonical(&mut out, v);
                }
                Slot::Method(id) => out.push_str(&format!("{{\"method\":{id}")),
            }
            out.push('}');
        }
        out.push_str("}]\n");
        out
    }
}

/// JSON with object keys sorted at every level and no insignificant whitespace.
pub fn write_canonical(out: &mut String, value: &Value) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, &Value::String(key.clone()));
                out.push(':');
                write_canonical(out, &map[key]);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Every object's state, read from the tables.
pub fn dump(conn: &Connection) -> Result<BTreeMap<Oid, ObjectState>, ImageError> {
    let mut states: BTreeMap<Oid, ObjectState> = BTreeMap::new();
    let mut stmt = conn.prepare("SELECT oid, name FROM objects")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        states.insert(
            Oid(r.get(0)?),
            ObjectState {
                name: r.get(1)?,
                ..ObjectState::default()
            },
        );
    }
    let mut stmt = conn.prepare("SELECT oid, parent FROM parents ORDER BY oid, position")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        if let Some(s) = states.get_mut(&Oid(r.get(0)?)) {
            s.parents.push(Oid(r.get(1)?));
        }
    }
    let mut stmt = conn.prepare("SELECT oid, name, kind, value FROM slots")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let slot = log::slot_from_columns(&r.get::<_, String>(2)?, &r.get::<_, String>(3)?)?;
        if let Some(s) = states.get_mut(&Oid(r.get(0)?)) {
            s.slots.insert(r.get(1)?, slot);
        }
    }
    Ok(states)
}

pub fn hash(states: &BTreeMap<Oid, ObjectState>) -> String {
    let mut hasher = Sha256::new();
    for (oid, state) in states {
        hasher.update(state.canonical(*oid).as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// The first place two states differ, in words: object, then the slot or field.
pub fn first_difference(
    live: &BTreeMap<Oid, ObjectState>,
    replayed: &BTreeMap<Oid, ObjectState>,
) -> Option<String> {
    let oids: std::collections::BTreeSet<Oid> =
        live.keys().chain(replayed.keys()).copied().collect();
    for oid in oids {
        let (a, b) = (live.get(&oid), replayed.get(&oid));
        let (a, b) = match (a, b) {
            (Some(a), Some(b)) => (a, b),
            (Some(_), None) => return Some(format!("object {oid} is live but not in the replay")),
            (None, Some(_)) => return Some(format!("object {oid} is in the replay but not live")),
            (None, None) => continue,
        };
        if a.name != b.name {
            return Some(format!(
                "object {oid} name: live {:?}, replayed {:?}",
                a.name, b.name
            ));
        }
        if a.parents != b.parents {
            return Some(format!(
                "object {oid} parents: live {:?}, replayed {:?}",
                a.parents, b.parents
            ));
        }
        let names: std::collections::BTreeSet<&String> =
            a.slots.keys().chain(b.slots.keys()).collect();
        for name in names {
            let (x, y) = (a.slots.get(name), b.slots.get(name));
            if x != y {
                let show = |s: Option<&Slot>| {
                    s.map_or("absent".to_owned(), |slot| match slot {
                        Slot::Value(v) => v.to_string(),
                        Slot::Method(id) => format!("method {id}"),
                    })
                };
                return Some(format!(
                    "object {oid} slot `{name}`: live {}, replayed {}",
                    show(x),
                    show(y)
                ));
            }
        }
    }
    None
}

/// Rebuilds the state as of `until` from the log of `source`, in a fresh in-memory database.
pub fn replay_until(
    source: &Connection,
    until: TxId,
) -> Result<BTreeMap<Oid, ObjectState>, ImageError> {
    let mut fresh = Connection::open_in_memory()?;
    fresh.pragma_update(None, "foreign_keys", true)?;
    schema::migrate(&mut fresh)?;
    let tx = fresh.transaction()?;
    log::for_each_change_until(source, until, |change| log::apply(&tx, &change))?;
    let states = dump(&tx)?;
    tx.commit()?;
    Ok(states)
}

/// One object's state as of transaction `at`, folded from its changes; `None` if it did not exist.
pub fn object_as_of(
    conn: &Connection,
    oid: Oid,
    at: TxId,
) -> Result<Option<ObjectState>, ImageError> {
    let mut state = None;
    for change in log::changes_to_object_until(conn, oid, at)? {
        ObjectState::fold(&mut state, change);
    }
    Ok(state)
}
