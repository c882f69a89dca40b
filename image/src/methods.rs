//! Installed methods: immutable rows (source, component, report), one per version; a method slot
//! points at one of them. Installing again adds a version; reverting points the slot back.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::Value;

use super::ImageError;
use crate::object::{MethodId, Oid, TxId};

/// Where a method came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Installed with the image's genesis.
    Genesis,
    /// Installed by hand (`batos install`).
    Architect,
    /// Written by the mind in a cognitive cycle.
    Synthesized,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Genesis => "genesis",
            Origin::Architect => "architect",
            Origin::Synthesized => "synthesized",
        }
    }
}

/// What installing stores.
#[derive(Debug, Clone)]
pub struct NewMethod<'a> {
    pub source: &'a str,
    pub wasm: &'a [u8],
    pub sha256: &'a str,
    /// The contract the component was built and checked against: `batos:image@0.1.0`.
    pub contract: &'a str,
    /// The guardian's report (gates, timings, imports, exports).
    pub report: &'a Value,
    pub origin: Origin,
}

/// One installed method version, as `methods` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MethodRecord {
    pub method: MethodId,
    pub oid: Oid,
    /// The object's name, if it has one.
    pub object: Option<String>,
    pub selector: String,
    pub version: i64,
    pub origin: String,
    pub sha256: String,
    pub wasm_bytes: i64,
    pub contract: String,
    /// The interfaces the component imports, from its report.
    pub imports: Value,
    pub tx: TxId,
}

const RECORD_COLUMNS: &str = "m.id, m.oid, o.name, m.selector, m.version, m.origin, m.sha256, \
     length(m.wasm), m.contract, m.report, m.tx";

fn record(r: &rusqlite::Row<'_>) -> rusqlite::Result<MethodRecord> {
    let report: String = r.get(9)?;
    let report: Value = serde_json::from_str(&report).unwrap_or(Value::Null);
    Ok(MethodRecord {
        method: MethodId(r.get(0)?),
        oid: Oid(r.get(1)?),
        object: r.get(2)?,
        selector: r.get(3)?,
        version: r.get(4)?,
        origin: r.get(5)?,
        sha256: r.get(6)?,
        wasm_bytes: r.get(7)?,
        contract: r.get(8)?,
        imports: report
            .pointer("/component_gate/imports")
            .cloned()
            .unwrap_or(Value::Null),
        tx: TxId(r.get(10)?),
    })
}

/// Stores a new version of `oid.selector` in transaction `tx`; answers its id and version.
pub fn insert(
    conn: &Connection,
    tx: TxId,
    oid: Oid,
    selector: &str,
    new: &NewMethod<'_>,
) -> Result<(MethodId, i64), ImageError> {
    let version: i64 = conn.query_row(
        "SELECT COALESCE(MAX(version), 0) + 1 FROM methods WHERE oid = ?1 AND selector = ?2",
        params![oid.0, selector],
        |r| r.get(0),
    )?;
    conn.prepare_cached(
        "INSERT INTO methods (oid, selector, version, source, wasm, sha256, contract, report, origin, tx)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        oid.0,
        selector,
        version,
        new.source,
        new.wasm,
        new.sha256,
        new.contract,
        new.report.to_string(),
        new.origin.as_str(),
        tx.0
    ])?;
    Ok((MethodId(conn.last_insert_rowid()), version))
}

pub fn wasm(conn: &Connection, id: MethodId) -> Result<Vec<u8>, ImageError> {
    conn.prepare_cached("SELECT wasm FROM methods WHERE id = ?1")?
        .query_row([id.0], |r| r.get(0))
        .optional()?
        .ok_or_else(|| ImageError::NoSuchMethod(id.to_string()))
}

/// The methods installed now: every method slot, with the version it points at.
pub fn installed(conn: &Connection, object: Option<Oid>) -> Result<Vec<MethodRecord>, ImageError> {
    let sql = format!(
        "SELECT {RECORD_COLUMNS} FROM slots s
           JOIN methods m ON m.id = CAST(s.value AS INTEGER)
           LEFT JOIN objects o ON o.oid = m.oid
          WHERE s.kind = 'method' AND (?1 IS NULL OR s.oid = ?1)
          ORDER BY s.oid, s.name"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map([object.map(|o| o.0)], record)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Every version of `oid.selector`, oldest first.
pub fn versions(
    conn: &Connection,
    oid: Oid,
    selector: &str,
) -> Result<Vec<MethodRecord>, ImageError> {
    let sql = format!(
        "SELECT {RECORD_COLUMNS} FROM methods m LEFT JOIN objects o ON o.oid = m.oid
          WHERE m.oid = ?1 AND m.selector = ?2 ORDER BY m.version"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params![oid.0, selector], record)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn by_id(conn: &Connection, id: MethodId) -> Result<MethodRecord, ImageError> {
    let sql = format!(
        "SELECT {RECORD_COLUMNS} FROM methods m LEFT JOIN objects o ON o.oid = m.oid WHERE m.id = ?1"
    );
    conn.query_row(&sql, [id.0], record)
        .optional()?
        .ok_or_else(|| ImageError::NoSuchMethod(id.to_string()))
}

/// A version's source and report.
pub fn source_and_report(conn: &Connection, id: MethodId) -> Result<(String, Value), ImageError> {
    let (source, report): (String, String) = conn
        .query_row(
            "SELECT source, report FROM methods WHERE id = ?1",
            [id.0],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .ok_or_else(|| ImageError::NoSuchMethod(id.to_string()))?;
    Ok((source, serde_json::from_str(&report).unwrap_or(Value::Null)))
}
