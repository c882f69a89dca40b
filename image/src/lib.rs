//! The image: one SQLite file holding every object, slot and parent, and the whole history of
//! how they came to be.
//!
//! [`Image`] owns the connection; every change goes through [`Image::transact`], which hands a
//! [`Tx`] to the caller, records each write in the change log with its value before and after,
//! runs the Data Guardian over every object the transaction touched, and commits. An error
//! anywhere rolls the whole transaction back.
//!
//! Durability: WAL journal, `synchronous=FULL` by default (a commit that returned is on disk even
//! if the machine loses power); [`Durability::Normal`] trades the last commits before a power cut
//! (never consistency) for speed. Foreign keys are on.
//!
//! Compatibility: the schema lives in [`schema`] as append-only migrations on `user_version`.

#![forbid(unsafe_code)]

pub mod blobs;
mod cache;
mod commit;
mod error;
pub mod guardian;
pub mod keys;
mod lock;
pub mod log;
pub mod methods;
pub mod object;
mod reads;
pub mod replay;
mod schema;
mod tx;
mod undo;

use commit::*;
pub use error::ImageError;
use reads::*;
pub use tx::{Savepoint, Tx};

use std::cell::Cell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;
use serde_json::{Map, Value};

pub use blobs::{BlobId, BlobReader, BlobRecord, BlobWriter};
pub use lock::WriterLock;
pub use log::{Change, HistoryFilter, ObjectDiff, Span, Transaction};
pub use methods::{MethodRecord, NewMethod, Origin};

use crate::guardian::SchemaViolation;
use crate::object::{Dispatch, Found, LookupError, MethodId, ObjRef, ObjectGraph, Oid, Slot, TxId};

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL`: an acknowledged commit survives a power cut.
    #[default]
    Full,
    /// `synchronous=NORMAL`: an acknowledged commit survives a crash of the process, and the image
    /// stays consistent after a power cut, but the last commits before it may be lost.
    Normal,
}

/// How long a writer waits for another connection's write to finish before giving up: longer
/// than a method call may run (10 s by default), so a write queued behind one waits it out.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Removes an image's files (the database and its WAL and shared-memory files): an image whose
/// creation did not finish (genesis, or the mind asked for, failed) is not left behind.
pub fn remove_files(image: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut path = image.as_os_str().to_owned();
        path.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(path));
    }
}

/// The largest slot value, as JSON text.
pub const MAX_SLOT_BYTES: usize = 1 << 20;

/// The deepest nesting of arrays and objects a slot value may have: the log wraps each value in
/// a few more levels, and every reader of the log must still parse it.
pub const MAX_VALUE_DEPTH: usize = 64;

/// A value a slot may hold: at most [`MAX_SLOT_BYTES`] as JSON, nested at most
/// [`MAX_VALUE_DEPTH`] deep.
pub fn check_value(slot: &str, value: &Value) -> Result<(), ImageError> {
    fn depth(value: &Value) -> usize {
        match value {
            Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
            Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            if self.0 > MAX_SLOT_BYTES {
                return Err(std::io::Error::other("too large"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let nested = depth(value);
    if nested > MAX_VALUE_DEPTH {
        return Err(ImageError::BadValue {
            slot: slot.to_owned(),
            reason: format!(
                "it is nested {nested} deep; at most {MAX_VALUE_DEPTH} levels are kept"
            ),
        });
    }
    let mut count = Count(0);
    if serde_json::to_writer(&mut count, value).is_err() {
        return Err(ImageError::ValueTooLarge {
            slot: slot.to_owned(),
            limit: MAX_SLOT_BYTES,
        });
    }
    Ok(())
}

/// The actor of the first transaction.
pub const GENESIS_ACTOR: &str = "genesis";

/// An object as `describe` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectView {
    pub oid: Oid,
    pub name: Option<String>,
    pub parents: Vec<Oid>,
    /// Value slots, by name.
    pub slots: Map<String, Value>,
    /// Selectors of method slots.
    pub methods: Vec<String>,
}

impl ObjectView {
    fn from_state(oid: Oid, state: replay::ObjectState) -> Self {
        let mut slots = Map::new();
        let mut methods = Vec::new();
        for (name, slot) in state.slots {
            match slot {
                Slot::Value(v) => {
                    slots.insert(name, v);
                }
                Slot::Method(_) => methods.push(name),
            }
        }
        ObjectView {
            oid,
            name: state.name,
            parents: state.parents,
            slots,
            methods,
        }
    }
}

/// What replay found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplayReport {
    /// The transaction replayed up to.
    pub tx: TxId,
    pub state_hash: String,
    /// The live image's hash, when `tx` is the newest transaction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_hash: Option<String>,
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub matches: Option<bool>,
    /// Where replay and the live image first differ, when they do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_difference: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Write,
    Read,
}

/// The image: one SQLite connection, and (for a writer) the lock that makes it the only writer.
#[derive(Debug)]
pub struct Image {
    /// `None` only while a [`Tx`] has it: a transaction owns the connection so that it can be
    /// handed, whole, to a method's sandbox store (which must own its state).
    conn: Option<Connection>,
    /// `None` for an in-memory image.
    path: Option<PathBuf>,
    access: Access,
    /// Committed objects for fast lookups; only for a writer (see [`cache`]).
    cache: Option<cache::ObjectCache>,
    /// Commits made by this connection and its siblings (all writers there can be: the lock keeps
    /// other processes out), counted twice each, like a sequence lock: once before `COMMIT`
    /// (the count turns odd) and once after it returned, whatever it returned (even again). So
    /// the count moves before any data can change and again once it has: a cache or an answer
    /// that has seen a different count is stale, and what was read while the count was odd is
    /// never trusted past the next check.
    commits: Arc<AtomicU64>,
    /// The value of `commits` this connection's cache is good for.
    seen: Cell<u64>,
    /// Held for as long as the image is open for writing; released by the kernel on any exit.
    /// Shared by sibling connections (see [`Image::open_sibling`]).
    lock: Option<Arc<WriterLock>>,
    /// As opened, for reconnecting (see [`Image::recover`]).
    durability: Durability,
    /// The retry key the next transaction records (see [`keys`]).
    request_key: Option<String>,
    /// The key a transaction committed since it was expected.
    committed_key: Option<String>,
}

impl Image {
    /// Creates a new image file from genesis. Refuses if one exists.
    pub fn create(path: &Path, durability: Durability) -> Result<Image, ImageError> {
        if path.exists() {
            return Err(ImageError::AlreadyExists(path.to_owned()));
        }
        Self::open_writer(path, durability)
    }

    /// Opens an existing image for writing.
    pub fn open(path: &Path, durability: Durability) -> Result<Image, ImageError> {
        if !path.exists() {
            return Err(ImageError::NotFound(path.to_owned()));
        }
        Self::open_writer(path, durability)
    }

    /// Opens an image for writing, creating it from genesis if there is none.
    pub fn open_or_create(path: &Path, durability: Durability) -> Result<Image, ImageError> {
        Self::open_writer(path, durability)
    }

    fn open_writer(path: &Path, durability: Durability) -> Result<Image, ImageError> {
        // Lock first: two processes must never both migrate or write.
        let lock = WriterLock::acquire(path)?;
        let conn = Connection::open(path)?;
        let mut image = Image {
            conn: Some(conn),
            path: Some(path.to_owned()),
            access: Access::Write,
            cache: Some(cache::ObjectCache::default()),
            commits: Arc::default(),
            seen: Cell::new(0),
            lock: Some(Arc::new(lock)),
            durability,
            request_key: None,
            committed_key: None,
        };
        image.configure(durability)?;
        image.bring_to_life()?;
        Ok(image)
    }

    /// Opens an image read-only, without the writer lock: works while a writer runs.
    pub fn open_read_only(path: &Path) -> Result<Image, ImageError> {
        if !path.exists() {
            return Err(ImageError::NotFound(path.to_owned()));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let found = schema::version(&conn)?;
        let known = schema::latest_version();
        if found > known {
            return Err(ImageError::NewerSchema { found, known });
        }
        if found < known {
            return Err(ImageError::OlderSchema { found, known });
        }
        Ok(Image {
            conn: Some(conn),
            path: Some(path.to_owned()),
            access: Access::Read,
            cache: None,
            commits: Arc::default(),
            seen: Cell::new(0),
            lock: None,
            durability: Durability::Full,
            request_key: None,
            committed_key: None,
        })
    }

    /// Another connection to this image for another thread (a server's worker), sharing the
    /// writer lock and the commit count that keeps every connection's cache honest.
    pub fn open_sibling(&self, durability: Durability) -> Result<Image, ImageError> {
        let (Some(path), Some(lock)) = (&self.path, &self.lock) else {
            return Err(ImageError::ReadOnly);
        };
        let mut image = Image {
            conn: Some(Connection::open(path)?),
            path: Some(path.clone()),
            access: Access::Write,
            cache: Some(cache::ObjectCache::default()),
            commits: Arc::clone(&self.commits),
            seen: Cell::new(trusted(self.commits.load(Ordering::Acquire))),
            lock: Some(Arc::clone(lock)),
            durability,
            request_key: None,
            committed_key: None,
        };
        image.configure(durability)?;
        Ok(image)
    }

    /// A private image in memory, from genesis: for tests and throwaway work.
    pub fn in_memory() -> Result<Image, ImageError> {
        let mut image = Image {
            conn: Some(Connection::open_in_memory()?),
            path: None,
            access: Access::Write,
            cache: Some(cache::ObjectCache::default()),
            commits: Arc::default(),
            seen: Cell::new(0),
            lock: None,
            durability: Durability::Normal,
            request_key: None,
            committed_key: None,
        };
        image.configure(Durability::Normal)?;
        image.bring_to_life()?;
        Ok(image)
    }

    /// Reopens the connection if a transaction took it down with it (a panic while it was open:
    /// SQLite rolled that transaction back when the connection closed). A no-op otherwise.
    pub fn recover(&mut self) -> Result<(), ImageError> {
        if self.conn.is_some() {
            return Ok(());
        }
        let Some(path) = &self.path else {
            return Err(ImageError::InTransaction);
        };
        self.conn = Some(Connection::open(path)?);
        // The transaction that panicked held the cache too.
        if self.access == Access::Write {
            self.cache = Some(cache::ObjectCache::default());
        }
        self.configure(self.durability)
    }

    /// The connection, unless a transaction holds it (only possible re-entrantly).
    fn conn(&self) -> Result<&Connection, ImageError> {
        self.conn.as_ref().ok_or(ImageError::InTransaction)
    }

    fn configure(&mut self, durability: Durability) -> Result<(), ImageError> {
        self.durability = durability;
        let conn = self.conn()?;
        if self.path.is_some() {
            // A fresh file only (the page size is fixed once the first table exists): small pages,
            // because a commit rewrites a handful of pages into the WAL and syncs them.
            let fresh: bool =
                conn.query_row("SELECT count(*) = 0 FROM sqlite_schema", [], |r| r.get(0))?;
            if fresh {
                conn.pragma_update(None, "page_size", 1024)?;
            }
            let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(ImageError::Corrupt(format!(
                    "could not switch to WAL (got {mode})"
                )));
            }
        }
        let sync = match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync)?;
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        Ok(())
    }

    /// Migrates the schema and, for a brand-new file, writes genesis.
    fn bring_to_life(&mut self) -> Result<(), ImageError> {
        schema::migrate(self.conn.as_mut().ok_or(ImageError::InTransaction)?)?;
        let empty: bool =
            self.conn()?
                .query_row("SELECT NOT EXISTS (SELECT 1 FROM transactions)", [], |r| {
                    r.get(0)
                })?;
        if empty {
            self.transact(GENESIS_ACTOR, "genesis: object and lobby", |tx| {
                let object = tx.create_object(&[], Some("object"), Map::new())?;
                tx.create_object(&[object], Some("lobby"), Map::new())?;
                Ok::<_, ImageError>(())
            })?;
        }
        Ok(())
    }

    /// Commits made so far through this connection and its siblings, counted before and after
    /// each `COMMIT` (odd while one is under way): a read that started at an even count and
    /// ended at the same count is still true while the count stays there.
    pub fn commit_count(&self) -> u64 {
        self.commits.load(Ordering::Acquire)
    }

    /// The shared commit counter itself, for whoever keeps answers to reads (the server).
    pub fn commit_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.commits)
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Runs `work` in one immediate transaction by `actor`, with `note` in the log. Commits only
    /// if `work` succeeds and every touched object satisfies its schema; otherwise nothing of it
    /// is written.
    pub fn transact<T, E>(
        &mut self,
        actor: &str,
        note: &str,
        work: impl FnOnce(&mut Tx) -> Result<T, E>,
    ) -> Result<(T, TxId), E>
    where
        E: From<ImageError>,
    {
        if self.access != Access::Write {
            return Err(ImageError::ReadOnly.into());
        }
        let conn = self.conn.take().ok_or(ImageError::InTransaction)?;
        let mut tx = Tx {
            conn: Some(conn),
            id: TxId(0),
            actor: actor.to_owned(),
            note: note.to_owned(),
            row: false,
            seq: 0,
            touched: BTreeSet::new(),
            savepoints: 0,
            discard_if_unchanged: false,
            cache: None,
        };
        // The odd stretch of the count around this transaction's `COMMIT`, once it commits.
        let commits = Arc::clone(&self.commits);
        let mut committing = None;
        let mut claimed = None;
        let outcome = tx.begin().map_err(E::from).and_then(|()| {
            // The write lock is held from here on: nobody else commits until this transaction
            // ends, so the cache, fresh now, stays fresh, and the transaction may read through
            // it (for the objects it has not written).
            tx.cache = self.take_fresh_cache();
            let value = work(&mut tx)?;
            if tx.discard_if_unchanged && tx.seq == 0 {
                // Nothing to keep: the connection is rolled back below, and no empty
                // transaction clutters the log.
                return Ok(value);
            }
            tx.guard_touched()?;
            tx.ensure_row()?;
            // A retry key goes with the changes it applied: both commit, or neither.
            if let Some(key) = self.request_key.take() {
                keys::claim(tx.conn()?, &key, tx.id.0)?;
                claimed = Some(key);
            }
            committing = Some(CommitWindow::open(&commits));
            tx.conn()?
                .prepare_cached("COMMIT")
                .and_then(|mut commit| commit.execute([]))
                .map_err(ImageError::from)?;
            Ok(value)
        });
        self.cache = tx.cache.take();
        // Even again, whether COMMIT succeeded or not.
        let window = committing.map(CommitWindow::close);
        // The connection comes back whatever happened; an open transaction is rolled back.
        let Some(conn) = tx.conn.take() else {
            return Err(ImageError::Corrupt("a transaction lost its connection".into()).into());
        };
        if !conn.is_autocommit() {
            let _ = conn
                .prepare_cached("ROLLBACK")
                .and_then(|mut r| r.execute([]));
        }
        self.conn = Some(conn);
        let committed = outcome.is_ok() && !(tx.discard_if_unchanged && tx.seq == 0);
        if committed {
            self.committed_key = claimed;
            if let Some(cache) = &self.cache {
                cache.invalidate(tx.touched.iter().copied());
            }
            if let Some((before, after)) = window
                && before == self.seen.get()
                && after == before + 1
            {
                // Nobody else committed meanwhile: this cache stays good (less what we touched).
                self.seen.set(after + 1);
            }
        }
        outcome.map(|value| (value, tx.id))
    }

    fn db(&self) -> Result<Db<'_>, ImageError> {
        Ok(Db(self.conn()?))
    }

    pub fn resolve(&self, r: &ObjRef) -> Result<Oid, ImageError> {
        self.db()?.resolve(r)
    }

    /// The committed object graph, through the cache when this image has one.
    fn graph(&self) -> Result<Cached<'_>, ImageError> {
        Ok(Cached {
            db: self.db()?,
            cache: self.cache.as_ref(),
            written: None,
        })
    }

    /// Empties the cache if a sibling committed since it was filled.
    fn refresh_cache(&self) {
        if let Some(cache) = &self.cache {
            let commits = self.commits.load(Ordering::Acquire);
            if commits != self.seen.get() {
                cache.clear();
                self.seen.set(trusted(commits));
            }
        }
    }

    /// The cache, fresh, for a transaction that holds the write lock (it gives it back).
    fn take_fresh_cache(&mut self) -> Option<cache::ObjectCache> {
        self.refresh_cache();
        self.cache.take()
    }

    pub fn lookup(&self, receiver: Oid, selector: &str) -> Result<Option<Found>, ImageError> {
        self.refresh_cache();
        if let Some(answer) = self
            .cache
            .as_ref()
            .and_then(|c| c.lookup_chain(receiver, selector))
        {
            return Ok(answer.map(|(holder, slot)| Found { holder, slot }));
        }
        Ok(object::lookup(&self.graph()?, receiver, selector)?)
    }

    /// Dispatches a message (only looks it up: nothing runs here): a value slot answers its value,
    /// a method slot says which method to run (the caller runs it, with the arguments); no slot
    /// anywhere on the delegation path is [`Dispatch::DoesNotUnderstand`].
    pub fn dispatch(&self, receiver: Oid, selector: &str) -> Result<Dispatch, ImageError> {
        // A slot found means the receiver exists; only a miss needs asking whether it does.
        let found = self.lookup(receiver, selector)?;
        if found.is_none() {
            self.db()?.existing(receiver)?;
        }
        outcome(found, receiver, selector)
    }

    /// A slot's value, found through delegation like a send.
    pub fn get(&self, receiver: Oid, slot: &str) -> Result<Value, ImageError> {
        match self.lookup(receiver, slot)? {
            Some(Found {
                slot: Slot::Value(v),
                ..
            }) => Ok(v),
            Some(Found {
                slot: Slot::Method(_),
                ..
            }) => Err(ImageError::HoldsMethod {
                oid: receiver,
                slot: slot.to_owned(),
            }),
            None => Err(ImageError::NoSuchSlot {
                oid: receiver,
                slot: slot.to_owned(),
            }),
        }
    }

    pub fn parents(&self, oid: Oid) -> Result<Vec<Oid>, ImageError> {
        let db = self.db()?;
        db.existing(oid)?;
        db.parents(oid)
    }

    /// The object now, or as of transaction `at`.
    pub fn describe(&self, oid: Oid, at: Option<TxId>) -> Result<ObjectView, ImageError> {
        let state = match at {
            None => self.db()?.state(oid)?,
            Some(at) => {
                if at.0 < 1 || at > self.newest_tx()? {
                    return Err(ImageError::NoSuchTransaction(at));
                }
                replay::object_as_of(self.conn()?, oid, at)?
            }
        };
        let state = state.ok_or(ImageError::NoSuchObject(ObjRef::Id(oid.0)))?;
        Ok(ObjectView::from_state(oid, state))
    }

    pub fn newest_tx(&self) -> Result<TxId, ImageError> {
        Ok(TxId(self.conn()?.query_row(
            "SELECT COALESCE(MAX(tx), 0) FROM transactions",
            [],
            |r| r.get(0),
        )?))
    }

    pub fn history(&self, filter: &HistoryFilter) -> Result<Vec<Transaction>, ImageError> {
        log::history(self.conn()?, filter)
    }

    /// What differs between transaction `from` and `until` (see [`log::diff`]). Both must be
    /// transactions of this image (`0`: the empty image before the first); the protocol refuses
    /// `from` later than `until`.
    pub fn diff(&self, from: TxId, until: TxId) -> Result<Vec<ObjectDiff>, ImageError> {
        let newest = self.newest_tx()?;
        for tx in [from, until] {
            if tx.0 < 0 || tx > newest {
                return Err(ImageError::NoSuchTransaction(tx));
            }
        }
        log::diff(self.conn()?, from.min(until), until.max(from))
    }

    /// Rebuilds the state from the log up to `until` (default: the newest transaction) in a
    /// fresh database and hashes it; at the newest transaction, compares with the live image.
    pub fn replay(&self, until: Option<TxId>) -> Result<ReplayReport, ImageError> {
        // One read transaction: the log, the newest id and the live tables from one snapshot,
        // whatever other connections commit meanwhile.
        let conn = self.conn()?;
        conn.execute_batch("BEGIN")?;
        let report = self.replay_in_snapshot(until);
        let _ = conn.execute_batch("COMMIT");
        report
    }

    fn replay_in_snapshot(&self, until: Option<TxId>) -> Result<ReplayReport, ImageError> {
        let newest = self.newest_tx()?;
        let until = until.unwrap_or(newest);
        if until.0 < 1 || until > newest {
            return Err(ImageError::NoSuchTransaction(until));
        }
        let replayed = replay::replay_until(self.conn()?, until)?;
        let state_hash = replay::hash(&replayed);
        let mut report = ReplayReport {
            tx: until,
            state_hash,
            live_hash: None,
            matches: None,
            first_difference: None,
        };
        if until == newest {
            let live = replay::dump(self.conn()?)?;
            let live_hash = replay::hash(&live);
            let matches = live_hash == report.state_hash;
            if !matches {
                report.first_difference = replay::first_difference(&live, &replayed);
            }
            report.live_hash = Some(live_hash);
            report.matches = Some(matches);
        }
        Ok(report)
    }

    /// The methods installed now (every method slot), optionally on one object only.
    pub fn methods(&self, object: Option<Oid>) -> Result<Vec<MethodRecord>, ImageError> {
        methods::installed(self.conn()?, object)
    }

    /// Every version of `oid.selector`, oldest first (installed on that object itself).
    pub fn method_versions(
        &self,
        oid: Oid,
        selector: &str,
    ) -> Result<Vec<MethodRecord>, ImageError> {
        methods::versions(self.conn()?, oid, selector)
    }

    /// The object with this name, if any.
    pub fn named(&self, name: &str) -> Result<Option<Oid>, ImageError> {
        self.db()?.named(name)
    }

    /// Appends one event to a cycle's transcript, committed on its own (outside any
    /// transaction); answers the event as stored, with its sequence number and time.
    pub fn append_cycle_event(
        &mut self,
        cycle: Oid,
        kind: &str,
        data: &Value,
    ) -> Result<Value, ImageError> {
        if self.access != Access::Write {
            return Err(ImageError::ReadOnly);
        }
        let conn = self.conn()?;
        let (seq, at): (i64, String) = conn
            .prepare_cached(
                "INSERT INTO cycle_events (cycle, seq, at, kind, data)
                 VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM cycle_events WHERE cycle = ?1),
                         strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), ?2, ?3)
                 RETURNING seq, at",
            )?
            .query_row(params![cycle.0, kind, data.to_string()], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        Ok(serde_json::json!({"cycle": cycle, "seq": seq, "at": at, "kind": kind, "data": data}))
    }

    /// A cycle's transcript, oldest first.
    pub fn cycle_events(&self, cycle: Oid) -> Result<Vec<Value>, ImageError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT seq, at, kind, data FROM cycle_events WHERE cycle = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map([cycle.0], |r| {
            let data: String = r.get(3)?;
            Ok(serde_json::json!({
                "seq": r.get::<_, i64>(0)?,
                "at": r.get::<_, String>(1)?,
                "kind": r.get::<_, String>(2)?,
                "data": serde_json::from_str::<Value>(&data).unwrap_or(Value::String(data)),
            }))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The objects whose parents include `parent`, oldest first.
    pub fn children_of(&self, parent: Oid) -> Result<Vec<Oid>, ImageError> {
        let conn = self.conn()?;
        let mut stmt =
            conn.prepare_cached("SELECT DISTINCT oid FROM parents WHERE parent = ?1 ORDER BY oid")?;
        let rows = stmt.query_map([parent.0], |r| Ok(Oid(r.get(0)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A sealed blob's row.
    pub fn blob(&self, id: BlobId) -> Result<BlobRecord, ImageError> {
        blobs::record(self.conn()?, id)
    }

    /// Reads a sealed blob as one stream, one checked chunk at a time.
    pub fn blob_reader(&self, id: BlobId) -> Result<BlobReader<'_>, ImageError> {
        BlobReader::open(self.conn()?, id)
    }

    pub fn method_record(&self, id: MethodId) -> Result<MethodRecord, ImageError> {
        methods::by_id(self.conn()?, id)
    }

    pub fn method_source_and_report(&self, id: MethodId) -> Result<(String, Value), ImageError> {
        methods::source_and_report(self.conn()?, id)
    }

    /// The object's own slot `name` (no delegation).
    pub fn own_slot(&self, oid: Oid, name: &str) -> Result<Option<Slot>, ImageError> {
        self.db()?.own_slot(oid, name)
    }

    /// The live image's canonical state hash.
    pub fn state_hash(&self) -> Result<String, ImageError> {
        Ok(replay::hash(&replay::dump(self.conn()?)?))
    }
}
