//! Retry keys: a request that carries `"key"` is applied at most once.
//!
//! The key is written in the same transaction as the request's changes (so a crash either keeps
//! both or neither), and the reply right after the commit. A retry of a key already applied gets
//! the recorded reply instead of running again. A reply lost between the commit and its
//! recording (the host died in that instant) is marked at the next start: a retry is then told
//! the request was applied, in which transaction, and that its reply is gone. Keys older than
//! [`WINDOW_SECS`] are pruned.

use rusqlite::{OptionalExtension, params};

use super::{Image, ImageError};

/// How long a key is remembered.
pub const WINDOW_SECS: f64 = 24.0 * 3600.0;

/// The longest key accepted.
pub const MAX_KEY_BYTES: usize = 128;

/// What a key's earlier request left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub tx: i64,
    /// The reply (`{"ok": …, "result" | "error": …}`) as it was sent; `None` while the request
    /// that committed is still answering.
    pub reply: Option<String>,
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Inside a transaction, before `COMMIT`: the key goes with the changes. A key someone else
/// applied meanwhile is a conflict (this transaction rolls back).
pub(super) fn claim(conn: &rusqlite::Connection, key: &str, tx: i64) -> Result<(), ImageError> {
    let at = now();
    conn.prepare_cached("DELETE FROM request_keys WHERE at < ?1")?
        .execute(params![at - WINDOW_SECS])?;
    let inserted = conn
        .prepare_cached("INSERT OR IGNORE INTO request_keys (key, tx, at) VALUES (?1, ?2, ?3)")?
        .execute(params![key, tx, at])?;
    if inserted == 0 {
        return Err(ImageError::KeyApplied(key.to_owned()));
    }
    Ok(())
}

impl Image {
    /// The next transaction of this connection records `key` (see [`keys`](self)).
    pub fn expect_key(&mut self, key: Option<String>) {
        self.request_key = key;
        self.committed_key = None;
    }

    /// The key a transaction committed since [`Image::expect_key`], if one did.
    pub fn take_committed_key(&mut self) -> Option<String> {
        self.request_key = None;
        self.committed_key.take()
    }

    /// What an earlier request with `key` left, if one was applied.
    pub fn recorded(&self, key: &str) -> Result<Option<Recorded>, ImageError> {
        Ok(self
            .conn()?
            .prepare_cached("SELECT tx, reply FROM request_keys WHERE key = ?1")?
            .query_row(params![key], |r| {
                Ok(Recorded {
                    tx: r.get(0)?,
                    reply: r.get(1)?,
                })
            })
            .optional()?)
    }

    /// The reply to the request that committed `key`.
    pub fn record_reply(&self, key: &str, reply: &str) -> Result<(), ImageError> {
        self.conn()?
            .prepare_cached("UPDATE request_keys SET reply = ?2 WHERE key = ?1 AND reply IS NULL")?
            .execute(params![key, reply])?;
        Ok(())
    }

    /// At start, with no request in flight: replies a dead host never recorded are marked lost.
    /// Answers how many there were.
    pub fn mark_lost_replies(&self) -> Result<usize, ImageError> {
        Ok(self
            .conn()?
            .prepare_cached(
                "UPDATE request_keys SET reply = json_object('ok', json('true'), 'result', \
                 json_object('tx', tx, 'applied', json('true'), 'reply_lost', json('true'))) \
                 WHERE reply IS NULL",
            )?
            .execute([])?)
    }
}
