//! The commit window: the sibling connections' shared commit count, odd while a `COMMIT` is
//! under way (a sequence lock for every cache that may have read around it).

use super::*;

/// The `seen` a cache filled at commit count `count` may keep. An odd count means a sibling's
/// commit is under way and what the cache loads may predate it: such a cache is good only until
/// the next check, whatever the count then (no count equals `u64::MAX`).
pub(crate) fn trusted(count: u64) -> u64 {
    if count.is_multiple_of(2) {
        count
    } else {
        u64::MAX
    }
}

/// The odd stretch of the commit count around one `COMMIT` (see [`Image`]'s `commits`): opened
/// just before it, closed just after it whatever happened (a panic included, by `Drop`), and
/// never two at once. Opening waits for the previous committer to close its window: that
/// `COMMIT` has already returned (this transaction holds the write lock), so the wait is a few
/// instructions unless that thread was descheduled in between. Without the wait, a second commit
/// could run at an even count while the first one's closing increment was still to come.
#[derive(Debug)]
pub(crate) struct CommitWindow {
    pub(crate) commits: Arc<AtomicU64>,
    /// The (even) count it opened at.
    pub(crate) before: u64,
    pub(crate) closed: bool,
}

impl CommitWindow {
    pub(crate) fn open(commits: &Arc<AtomicU64>) -> CommitWindow {
        loop {
            let now = commits.load(Ordering::Acquire);
            if now.is_multiple_of(2)
                && commits
                    .compare_exchange_weak(now, now + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                return CommitWindow {
                    commits: Arc::clone(commits),
                    before: now,
                    closed: false,
                };
            }
            std::thread::yield_now();
        }
    }

    /// Closes the window: the count it opened at and the count just before closing.
    pub(crate) fn close(mut self) -> (u64, u64) {
        self.closed = true;
        (self.before, self.commits.fetch_add(1, Ordering::AcqRel))
    }
}

impl Drop for CommitWindow {
    fn drop(&mut self) {
        if !self.closed {
            self.commits.fetch_add(1, Ordering::AcqRel);
        }
    }
}
