//! The image's SQL schema: an append-only list of migrations keyed on `PRAGMA user_version`.
//!
//! Compatibility: entry `i` takes a database from version `i` to `i + 1`. Never reorder, edit or
//! remove an entry; a change of schema is a new entry at the end. An image whose version is newer
//! than this list is refused rather than guessed at.

use rusqlite::{Connection, TransactionBehavior};

use super::ImageError;

/// The migrations, oldest first. Table names match the constants above.
const MIGRATIONS: &[&str] = &[
    // 1: objects, slots, parents and the append-only transaction log.
    r#"
    CREATE TABLE transactions (
        tx    INTEGER PRIMARY KEY AUTOINCREMENT,
        at    TEXT NOT NULL,
        actor TEXT NOT NULL,
        note  TEXT NOT NULL
    );
    -- AUTOINCREMENT: an oid is never reused, even after an undone creation.
    CREATE TABLE objects (
        oid  INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT UNIQUE
    );
    CREATE TABLE parents (
        oid      INTEGER NOT NULL REFERENCES objects(oid) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        parent   INTEGER NOT NULL REFERENCES objects(oid),
        PRIMARY KEY (oid, position)
    ) WITHOUT ROWID;
    CREATE INDEX parents_by_parent ON parents(parent);
    -- kind: 'value' (value is any JSON) or 'method' (value points at an installed method).
    CREATE TABLE slots (
        oid   INTEGER NOT NULL REFERENCES objects(oid) ON DELETE CASCADE,
        name  TEXT NOT NULL,
        kind  TEXT NOT NULL CHECK (kind IN ('value', 'method')),
        value TEXT NOT NULL,
        PRIMARY KEY (oid, name)
    ) WITHOUT ROWID;
    -- One row per change, in order within its transaction. before/after are JSON (NULL: absent).
    -- oid has no foreign key: the log outlives objects whose creation was undone.
    CREATE TABLE changes (
        tx     INTEGER NOT NULL REFERENCES transactions(tx),
        seq    INTEGER NOT NULL,
        oid    INTEGER NOT NULL,
        what   TEXT NOT NULL CHECK (what IN ('create', 'destroy', 'name', 'parents', 'slot')),
        slot   TEXT,
        before TEXT,
        after  TEXT,
        PRIMARY KEY (tx, seq)
    ) WITHOUT ROWID;
    CREATE INDEX changes_by_object ON changes(oid, tx);
    -- The log is append-only: the database itself refuses to rewrite it.
    CREATE TRIGGER changes_never_updated BEFORE UPDATE ON changes
        BEGIN SELECT RAISE(ABORT, 'the change log is append-only'); END;
    CREATE TRIGGER changes_never_deleted BEFORE DELETE ON changes
        BEGIN SELECT RAISE(ABORT, 'the change log is append-only'); END;
    CREATE TRIGGER transactions_never_updated BEFORE UPDATE ON transactions
        BEGIN SELECT RAISE(ABORT, 'the transaction log is append-only'); END;
    CREATE TRIGGER transactions_never_deleted BEFORE DELETE ON transactions
        BEGIN SELECT RAISE(ABORT, 'the transaction log is append-only'); END;
    "#,
    // 2: installed methods. A method slot's value is a row id here; rows are never changed, so a
    // slot change in the log (before/after ids) says exactly which code ran before and after.
    r#"
    CREATE TABLE methods (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        oid      INTEGER NOT NULL,
        selector TEXT NOT NULL,
        version  INTEGER NOT NULL,
        source   TEXT NOT NULL,
        wasm     BLOB NOT NULL,
        sha256   TEXT NOT NULL,
        contract TEXT NOT NULL,
        report   TEXT NOT NULL,
        origin   TEXT NOT NULL CHECK (origin IN ('genesis', 'architect', 'synthesized')),
        tx       INTEGER NOT NULL REFERENCES transactions(tx),
        UNIQUE (oid, selector, version)
    );
    CREATE TRIGGER methods_never_updated BEFORE UPDATE ON methods
        BEGIN SELECT RAISE(ABORT, 'installed methods are immutable'); END;
    CREATE TRIGGER methods_never_deleted BEFORE DELETE ON methods
        BEGIN SELECT RAISE(ABORT, 'installed methods are immutable'); END;
    "#,
    // 3: large immutable values (a mind's weights) as chunks, each with its own sha256. A blob
    // row is written first and sealed (complete = 1) with its size and hash after its last chunk;
    // once sealed, neither it nor its chunks ever change.
    r#"
    CREATE TABLE blobs (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        sha256     TEXT NOT NULL,
        size       INTEGER NOT NULL,
        chunk_size INTEGER NOT NULL CHECK (chunk_size > 0),
        chunks     INTEGER NOT NULL,
        complete   INTEGER NOT NULL CHECK (complete IN (0, 1)),
        tx         INTEGER NOT NULL REFERENCES transactions(tx)
    );
    CREATE TABLE blob_chunks (
        blob   INTEGER NOT NULL REFERENCES blobs(id),
        seq    INTEGER NOT NULL,
        sha256 BLOB NOT NULL,
        data   BLOB NOT NULL,
        PRIMARY KEY (blob, seq)
    );
    CREATE TRIGGER blobs_sealed BEFORE UPDATE ON blobs WHEN OLD.complete = 1
        BEGIN SELECT RAISE(ABORT, 'a sealed blob is immutable'); END;
    CREATE TRIGGER blobs_never_deleted BEFORE DELETE ON blobs
        BEGIN SELECT RAISE(ABORT, 'blobs are immutable'); END;
    CREATE TRIGGER blob_chunks_never_updated BEFORE UPDATE ON blob_chunks
        BEGIN SELECT RAISE(ABORT, 'blob chunks are immutable'); END;
    CREATE TRIGGER blob_chunks_never_deleted BEFORE DELETE ON blob_chunks
        BEGIN SELECT RAISE(ABORT, 'blob chunks are immutable'); END;
    "#,
    // 4: the transcripts of cognitive cycles: every transition, prompt, completion, diagnostic
    // and timing, in order. The cycle itself is an object (its state is a slot); this is its
    // metacognitive record, append-only like the change log.
    r#"
    CREATE TABLE cycle_events (
        cycle INTEGER NOT NULL,
        seq   INTEGER NOT NULL,
        at    TEXT NOT NULL,
        kind  TEXT NOT NULL,
        data  TEXT NOT NULL,
        PRIMARY KEY (cycle, seq)
    ) WITHOUT ROWID;
    CREATE TRIGGER cycle_events_never_updated BEFORE UPDATE ON cycle_events
        BEGIN SELECT RAISE(ABORT, 'a cycle transcript is append-only'); END;
    CREATE TRIGGER cycle_events_never_deleted BEFORE DELETE ON cycle_events
        BEGIN SELECT RAISE(ABORT, 'a cycle transcript is append-only'); END;
    "#,
    // 5: retry keys: a client's key for a request, the transaction that applied it (written in
    // that same transaction) and its reply (written right after). Not image state: replay and
    // the state hash never read it; old keys are pruned.
    r#"
    CREATE TABLE request_keys (
        key   TEXT PRIMARY KEY,
        tx    INTEGER NOT NULL,
        at    REAL NOT NULL,
        reply TEXT
    ) WITHOUT ROWID;
    CREATE INDEX request_keys_by_age ON request_keys(at);
    "#,
];

/// The schema version this build writes.
pub fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}

pub fn version(conn: &Connection) -> Result<i64, ImageError> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

/// Brings the schema up to date in one exclusive transaction. Returns the version found before.
pub fn migrate(conn: &mut Connection) -> Result<i64, ImageError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
    let found = version(&tx)?;
    if found > latest_version() {
        return Err(ImageError::NewerSchema {
            found,
            known: latest_version(),
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
    }
    tx.commit()?;
    Ok(found)
}
