//! The change log: what every transaction did, with each value before and after.
//!
//! A [`Change`] is both the record in the log and the instruction that re-applies it: replay
//! applies `after` states in order, undo applies the [`Change::inverse`]. [`apply`] is the one
//! place that turns a change into table writes, so live writes and replay cannot drift apart.

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ImageError;
use crate::object::{Oid, Slot, TxId};

/// One change to one object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "what", rename_all = "snake_case")]
pub enum Change {
    /// The object came into being, with no name, parents or slots (later changes add them).
    Create { oid: Oid },
    /// The object ceased to be (only undo of a creation does this; it is empty by then).
    Destroy { oid: Oid },
    Name {
        oid: Oid,
        before: Option<String>,
        after: Option<String>,
    },
    Parents {
        oid: Oid,
        before: Vec<Oid>,
        after: Vec<Oid>,
    },
    Slot {
        oid: Oid,
        slot: String,
        before: Option<Slot>,
        after: Option<Slot>,
    },
}

/// A change's `slot`, `before` and `after` columns.
type Columns = (Option<String>, Option<String>, Option<String>);

impl Change {
    pub fn oid(&self) -> Oid {
        match self {
            Change::Create { oid }
            | Change::Destroy { oid }
            | Change::Name { oid, .. }
            | Change::Parents { oid, .. }
            | Change::Slot { oid, .. } => *oid,
        }
    }

    fn what(&self) -> &'static str {
        match self {
            Change::Create { .. } => "create",
            Change::Destroy { .. } => "destroy",
            Change::Name { .. } => "name",
            Change::Parents { .. } => "parents",
            Change::Slot { .. } => "slot",
        }
    }

    /// The change that takes the object back to where this one found it.
    pub fn inverse(&self) -> Change {
        match self.clone() {
            Change::Create { oid } => Change::Destroy { oid },
            Change::Destroy { oid } => Change::Create { oid },
            Change::Name { oid, before, after } => Change::Name {
                oid,
                before: after,
                after: before,
            },
            Change::Parents { oid, before, after } => Change::Parents {
                oid,
                before: after,
                after: before,
            },
            Change::Slot {
                oid,
                slot,
                before,
                after,
            } => Change::Slot {
                oid,
                slot,
                before: after,
                after: before,
            },
        }
    }

    /// The columns (what, slot, before, after) this change is stored as.
    fn columns(&self) -> Result<Columns, ImageError> {
        fn json<T: Serialize>(v: &T) -> Result<String, ImageError> {
            serde_json::to_string(v).map_err(|e| ImageError::Corrupt(format!("unencodable: {e}")))
        }
        Ok(match self {
            Change::Create { .. } | Change::Destroy { .. } => (None, None, None),
            Change::Name { before, after, .. } => (
                None,
                before.as_ref().map(json).transpose()?,
                after.as_ref().map(json).transpose()?,
            ),
            Change::Parents { before, after, .. } => {
                (None, Some(json(before)?), Some(json(after)?))
            }
            Change::Slot {
                slot,
                before,
                after,
                ..
            } => (
                Some(slot.clone()),
                before.as_ref().map(json).transpose()?,
                after.as_ref().map(json).transpose()?,
            ),
        })
    }

    fn from_columns(
        oid: Oid,
        what: &str,
        slot: Option<String>,
        before: Option<String>,
        after: Option<String>,
    ) -> Result<Change, ImageError> {
        fn parse<T: for<'de> Deserialize<'de>>(
            text: Option<String>,
        ) -> Result<Option<T>, ImageError> {
            text.map(|t| {
                serde_json::from_str(&t)
                    .map_err(|e| ImageError::Corrupt(format!("a change holds bad JSON `{t}`: {e}")))
            })
            .transpose()
        }
        Ok(match what {
            "create" => Change::Create { oid },
            "destroy" => Change::Destroy { oid },
            "name" => Change::Name {
                oid,
                before: parse(before)?,
                after: parse(after)?,
            },
            "parents" => Change::Parents {
                oid,
                before: parse(before)?.unwrap_or_default(),
                after: parse(after)?.unwrap_or_default(),
            },
            "slot" => Change::Slot {
                oid,
                slot: slot
                    .ok_or_else(|| ImageError::Corrupt("a slot change without a slot".into()))?,
                before: parse(before)?,
                after: parse(after)?,
            },
            other => {
                return Err(ImageError::Corrupt(format!(
                    "unknown change kind `{other}`"
                )));
            }
        })
    }
}

/// Appends `change` to transaction `tx` at position `seq`.
pub fn append(conn: &Connection, tx: TxId, seq: i64, change: &Change) -> Result<(), ImageError> {
    let (slot, before, after) = change.columns()?;
    conn.prepare_cached(
        "INSERT INTO changes (tx, seq, oid, what, slot, before, after) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![tx.0, seq, change.oid().0, change.what(), slot, before, after])?;
    Ok(())
}

/// Makes the tables say what `change` says the object became. The only writer of object rows.
pub fn apply(conn: &Connection, change: &Change) -> Result<(), ImageError> {
    match change {
        Change::Create { oid } => {
            conn.prepare_cached("INSERT INTO objects (oid, name) VALUES (?1, NULL)")?
                .execute([oid.0])?;
        }
        Change::Destroy { oid } => {
            conn.prepare_cached("DELETE FROM objects WHERE oid = ?1")?
                .execute([oid.0])?;
        }
        Change::Name { oid, after, .. } => {
            conn.prepare_cached("UPDATE objects SET name = ?2 WHERE oid = ?1")?
                .execute(params![oid.0, after])?;
        }
        Change::Parents { oid, after, .. } => {
            conn.prepare_cached("DELETE FROM parents WHERE oid = ?1")?
                .execute([oid.0])?;
            let mut insert = conn.prepare_cached(
                "INSERT INTO parents (oid, position, parent) VALUES (?1, ?2, ?3)",
            )?;
            for (position, parent) in after.iter().enumerate() {
                insert.execute(params![oid.0, position as i64, parent.0])?;
            }
        }
        Change::Slot {
            oid, slot, after, ..
        } => match after {
            None => {
                conn.prepare_cached("DELETE FROM slots WHERE oid = ?1 AND name = ?2")?
                    .execute(params![oid.0, slot])?;
            }
            Some(value) => {
                let (kind, text) = slot_columns(value)?;
                conn.prepare_cached(
                    "INSERT INTO slots (oid, name, kind, value) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (oid, name) DO UPDATE SET kind = excluded.kind, value = excluded.value",
                )?
                .execute(params![oid.0, slot, kind, text])?;
            }
        },
    }
    Ok(())
}

/// How a slot is stored in the `slots` table: its kind and its JSON.
pub fn slot_columns(slot: &Slot) -> Result<(&'static str, String), ImageError> {
    let text = match slot {
        Slot::Value(v) => serde_json::to_string(v),
        Slot::Method(id) => serde_json::to_string(id),
    }
    .map_err(|e| ImageError::Corrupt(format!("unencodable slot: {e}")))?;
    Ok((slot.kind(), text))
}

/// Reads a slot back from its stored kind and JSON.
pub fn slot_from_columns(kind: &str, text: &str) -> Result<Slot, ImageError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ImageError::Corrupt(format!("a slot holds bad JSON `{text}`: {e}")))?;
    match kind {
        "value" => Ok(Slot::Value(value)),
        "method" => match value.as_i64() {
            Some(id) => Ok(Slot::Method(crate::object::MethodId(id))),
            None => Err(ImageError::Corrupt(format!(
                "a method slot holds `{text}`, not a method id"
            ))),
        },
        other => Err(ImageError::Corrupt(format!("unknown slot kind `{other}`"))),
    }
}

/// One transaction as history shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transaction {
    pub tx: TxId,
    pub at: String,
    pub actor: String,
    pub note: String,
    pub changes: Vec<Change>,
}

/// The most transactions one `history` answers.
pub const MAX_HISTORY: i64 = 10_000;

/// Which transactions `history` shows.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    /// Transactions from this one on (inclusive).
    pub since: Option<TxId>,
    /// At most this many: the first ones after `since`, or else the newest ones.
    pub limit: Option<usize>,
    /// Only transactions that changed this object, and only their changes to it.
    pub object: Option<Oid>,
}

/// How one object differs between two transactions: each part that changed, as it was at `from`
/// and as it is at `until` (parts changed and changed back are left out).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectDiff {
    pub oid: Oid,
    /// The object did not exist at `from` (it was created after).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub created: bool,
    /// The object no longer exists at `until`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub destroyed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<Span<Option<String>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parents: Option<Span<Vec<Oid>>>,
    /// By slot name: `null` where the slot did not exist.
    pub slots: std::collections::BTreeMap<String, Span<Option<Slot>>>,
}

/// A part of an object at two transactions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Span<T> {
    pub from: T,
    pub until: T,
}

/// What changed between transaction `from` (as it left the image) and `until` (inclusive), by
/// object: one read of the log between them, folded to the first `before` and the last `after`.
pub fn diff(conn: &Connection, from: TxId, until: TxId) -> Result<Vec<ObjectDiff>, ImageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT oid, what, slot, before, after FROM changes WHERE tx > ?1 AND tx <= ?2 ORDER BY tx, seq",
    )?;
    let rows = stmt.query_map(params![from.0, until.0], change_row)?;
    let mut objects: std::collections::BTreeMap<i64, ObjectDiff> = Default::default();
    // Per object, its first and last creation or destruction in between (undo can destroy an
    // object and undoing that undo make it again, under the same oid).
    let mut existence: std::collections::BTreeMap<i64, (bool, bool)> = Default::default();
    for row in rows {
        let change = row??;
        let oid = change.oid();
        if let Change::Create { .. } | Change::Destroy { .. } = change {
            let made = matches!(change, Change::Create { .. });
            existence
                .entry(oid.0)
                .and_modify(|(_, last)| *last = made)
                .or_insert((made, made));
        }
        let entry = objects.entry(oid.0).or_insert_with(|| ObjectDiff {
            oid,
            created: false,
            destroyed: false,
            name: None,
            parents: None,
            slots: Default::default(),
        });
        match change {
            Change::Create { .. } | Change::Destroy { .. } => {}
            Change::Name { before, after, .. } => {
                entry
                    .name
                    .get_or_insert(Span {
                        from: before,
                        until: None,
                    })
                    .until = after;
            }
            Change::Parents { before, after, .. } => {
                entry
                    .parents
                    .get_or_insert(Span {
                        from: before,
                        until: Vec::new(),
                    })
                    .until = after;
            }
            Change::Slot {
                slot,
                before,
                after,
                ..
            } => {
                entry
                    .slots
                    .entry(slot)
                    .or_insert(Span {
                        from: before,
                        until: None,
                    })
                    .until = after;
            }
        }
    }
    let mut out: Vec<ObjectDiff> = objects
        .into_values()
        .map(|mut o| {
            // A first creation: it did not exist at `from`; a last destruction: not at `until`.
            if let Some((first_made, last_made)) = existence.get(&o.oid.0) {
                let (then, now) = (!first_made, *last_made);
                o.created = !then && now;
                o.destroyed = then && !now;
                if !then && !now {
                    // Made and unmade in between: it differs in nothing.
                    o.created = true;
                    o.destroyed = true;
                }
            }
            o.slots.retain(|_, s| s.from != s.until);
            o.name = o.name.filter(|n| n.from != n.until);
            o.parents = o.parents.filter(|p| p.from != p.until);
            o
        })
        .collect();
    // An object made and unmade in between, or changed and changed back, differs in nothing.
    out.retain(|o| {
        !(o.created && o.destroyed)
            && (o.created
                || o.destroyed
                || o.name.is_some()
                || o.parents.is_some()
                || !o.slots.is_empty())
    });
    Ok(out)
}

pub fn changes_of(conn: &Connection, tx: TxId) -> Result<Vec<Change>, ImageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT oid, what, slot, before, after FROM changes WHERE tx = ?1 ORDER BY seq",
    )?;
    let rows = stmt.query_map([tx.0], change_row)?;
    rows.map(|r| r.map_err(ImageError::from).and_then(|x| x))
        .collect()
}

type RowResult = Result<Change, ImageError>;

fn change_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RowResult> {
    Ok(Change::from_columns(
        Oid(r.get(0)?),
        &r.get::<_, String>(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
    ))
}

pub fn transaction(
    conn: &Connection,
    tx: TxId,
) -> Result<Option<(String, String, String)>, ImageError> {
    Ok(conn
        .prepare_cached("SELECT at, actor, note FROM transactions WHERE tx = ?1")?
        .query_row([tx.0], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?)
}

pub fn history(conn: &Connection, filter: &HistoryFilter) -> Result<Vec<Transaction>, ImageError> {
    // SQLite reads a negative LIMIT as "none": clamp, never wrap.
    let limit = filter.limit.map_or(MAX_HISTORY, |l| {
        i64::try_from(l).unwrap_or(MAX_HISTORY).min(MAX_HISTORY)
    });
    let object = filter.object.map(|o| o.0);
    let ids: Vec<i64> = if let Some(since) = filter.since {
        let mut stmt = conn.prepare_cached(
            "SELECT tx FROM transactions t WHERE tx >= ?1
               AND (?2 IS NULL OR EXISTS (SELECT 1 FROM changes c WHERE c.tx = t.tx AND c.oid = ?2))
             ORDER BY tx LIMIT ?3",
        )?;
        stmt.query_map(params![since.0, object, limit], |r| r.get(0))?
            .collect::<Result<_, _>>()?
    } else {
        let mut stmt = conn.prepare_cached(
            "SELECT tx FROM transactions t
              WHERE (?1 IS NULL OR EXISTS (SELECT 1 FROM changes c WHERE c.tx = t.tx AND c.oid = ?1))
             ORDER BY tx DESC LIMIT ?2",
        )?;
        let mut ids: Vec<i64> = stmt
            .query_map(params![object, limit], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        ids.reverse();
        ids
    };
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let tx = TxId(id);
        let Some((at, actor, note)) = transaction(conn, tx)? else {
            continue;
        };
        let mut changes = changes_of(conn, tx)?;
        if let Some(oid) = filter.object {
            changes.retain(|c| c.oid() == oid);
        }
        out.push(Transaction {
            tx,
            at,
            actor,
            note,
            changes,
        });
    }
    Ok(out)
}

/// The first transaction after `tx` that touched what `change` touched, if any: the reason an
/// undo of `tx` would conflict. A creation or destruction conflicts with any later change to the
/// object; the others with a later change to the same slot, name or parents list.
pub fn later_change_to(
    conn: &Connection,
    tx: TxId,
    change: &Change,
) -> Result<Option<TxId>, ImageError> {
    let found: Option<i64> = match change {
        Change::Create { oid } | Change::Destroy { oid } => conn
            .prepare_cached("SELECT tx FROM changes WHERE oid = ?1 AND tx > ?2 ORDER BY tx LIMIT 1")?
            .query_row(params![oid.0, tx.0], |r| r.get(0))
            .optional()?,
        Change::Slot { oid, slot, .. } => conn
            .prepare_cached(
                "SELECT tx FROM changes WHERE oid = ?1 AND tx > ?2
                   AND ((what = 'slot' AND slot = ?3) OR what IN ('create', 'destroy'))
                 ORDER BY tx LIMIT 1",
            )?
            .query_row(params![oid.0, tx.0, slot], |r| r.get(0))
            .optional()?,
        Change::Name { oid, .. } | Change::Parents { oid, .. } => conn
            .prepare_cached(
                "SELECT tx FROM changes WHERE oid = ?1 AND tx > ?2 AND what IN (?3, 'create', 'destroy')
                 ORDER BY tx LIMIT 1",
            )?
            .query_row(params![oid.0, tx.0, change.what()], |r| r.get(0))
            .optional()?,
    };
    Ok(found.map(TxId))
}

/// Every change up to and including `until`, oldest first, for replay.
pub fn for_each_change_until(
    conn: &Connection,
    until: TxId,
    mut f: impl FnMut(Change) -> Result<(), ImageError>,
) -> Result<(), ImageError> {
    let mut stmt = conn.prepare(
        "SELECT oid, what, slot, before, after FROM changes WHERE tx <= ?1 ORDER BY tx, seq",
    )?;
    let mut rows = stmt.query([until.0])?;
    while let Some(row) = rows.next()? {
        f(change_row(row)??)?;
    }
    Ok(())
}

/// The changes to one object up to and including `until`, oldest first, for "as of" views.
pub fn changes_to_object_until(
    conn: &Connection,
    oid: Oid,
    until: TxId,
) -> Result<Vec<Change>, ImageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT oid, what, slot, before, after FROM changes WHERE oid = ?1 AND tx <= ?2 ORDER BY tx, seq",
    )?;
    let rows = stmt.query_map(params![oid.0, until.0], change_row)?;
    rows.map(|r| r.map_err(ImageError::from).and_then(|x| x))
        .collect()
}
