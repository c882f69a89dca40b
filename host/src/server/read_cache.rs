//! Answers to reads, kept while the image's commit count stays the same.
//!
//! A worker that answered a kept read (see [`crate::protocol::envelope::KEPT_READS`]) offers its
//! result with the commit count it was read at; any commit empties the cache. Only memory is
//! touched here: whoever asks the cache never runs SQLite.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct ReadCache {
    commits: Arc<AtomicU64>,
    valid_at: u64,
    results: HashMap<String, String>,
    /// The bytes of keys and results held, and at most how many.
    bytes: usize,
    budget: usize,
    /// The largest result kept: an eighth of the budget, and never one larger than a reply may be
    /// (a cached answer must not get round `--max-reply-bytes`).
    largest: usize,
}

impl ReadCache {
    /// At most this many answers; past it (or past its bytes) the cache starts over.
    const MAX: usize = 4096;

    pub fn new(commits: Arc<AtomicU64>, budget: usize, reply_bytes: usize) -> Self {
        ReadCache {
            valid_at: commits.load(Ordering::Acquire),
            commits,
            results: HashMap::new(),
            bytes: 0,
            budget,
            largest: (budget / 8).min(reply_bytes.saturating_sub(256)),
        }
    }

    fn current(&mut self) -> u64 {
        let now = self.commits.load(Ordering::Acquire);
        if now != self.valid_at {
            self.results.clear();
            self.bytes = 0;
            self.valid_at = now;
        }
        now
    }

    /// The kept result (JSON text) of the read kept under `key`, if nothing was committed since.
    pub fn answer(&mut self, key: &str) -> Option<String> {
        self.current();
        self.results.get(key).cloned()
    }

    /// Keeps a read's result if nothing was committed since it was read at `count`.
    pub fn remember(&mut self, count: u64, key: &str, result: &str) {
        if count != self.current() {
            return;
        }
        let size = key.len() + result.len();
        if size > self.largest {
            return;
        }
        if self.results.len() >= Self::MAX || self.bytes + size > self.budget {
            self.results.clear();
            self.bytes = 0;
        }
        if let Some(old) = self.results.insert(key.to_owned(), result.to_owned()) {
            self.bytes = self.bytes.saturating_sub(key.len() + old.len());
        }
        self.bytes += size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_empties_the_cache_and_a_stale_read_is_not_kept() {
        let commits = Arc::new(AtomicU64::new(2));
        let mut cache = ReadCache::new(Arc::clone(&commits), 1 << 20, 1 << 20);
        cache.remember(2, "k", "1");
        assert_eq!(cache.answer("k").as_deref(), Some("1"));
        commits.store(4, Ordering::Release);
        assert_eq!(cache.answer("k"), None);
        // Read before the commit: not kept.
        cache.remember(2, "k", "1");
        assert_eq!(cache.answer("k"), None);
        // Too large for a reply: never kept.
        let mut small = ReadCache::new(Arc::clone(&commits), 1 << 20, 300);
        small.remember(4, "k", &"x".repeat(100));
        assert_eq!(small.answer("k"), None);
    }
}
