//! The prompt prefix cache: the KV state of recent prompts, so that a prompt beginning as an
//! earlier one did (a persona's system message, the contract) starts from that state instead of
//! reading those tokens again.
//!
//! Exact by construction: a causal model's keys and values at position `p` depend only on the
//! tokens up to `p`, so the first `n` positions saved after any prompt are the state of every
//! prompt that shares those `n` tokens. Entries are kept newest first within a byte budget.

use super::llama::KvState;

/// Prompts shorter than this are not worth a copy of their state.
pub const MIN_TOKENS: usize = 32;
/// The cache's bytes at most (the 1.5B model holds about 57 KiB per position).
pub const BUDGET_BYTES: usize = 256 << 20;
/// Entries at most.
pub const MAX_ENTRIES: usize = 8;

#[derive(Debug)]
struct Entry {
    tokens: Vec<u32>,
    state: KvState,
}

/// Saved prompt states, newest first.
#[derive(Debug, Default)]
pub struct PrefixCache {
    entries: Vec<Entry>,
}

/// How many leading tokens `a` and `b` share.
pub fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl PrefixCache {
    /// The saved state sharing the longest prefix with `prompt`, and that length.
    pub fn best(&mut self, prompt: &[u32]) -> Option<(&KvState, usize)> {
        let (at, shared) = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i, common_prefix(&e.tokens, prompt)))
            .max_by_key(|&(i, shared)| (shared, std::cmp::Reverse(i)))?;
        if shared == 0 {
            return None;
        }
        // Used: it becomes the newest.
        let entry = self.entries.remove(at);
        self.entries.insert(0, entry);
        Some((&self.entries[0].state, shared))
    }

    /// Keeps `state`, the state after `tokens`, evicting the oldest entries past the budget. An
    /// entry whose tokens begin `tokens` is replaced (the new one covers it).
    pub fn insert(&mut self, tokens: Vec<u32>, state: KvState) {
        if tokens.len() < MIN_TOKENS || state.bytes() > BUDGET_BYTES {
            return;
        }
        self.entries
            .retain(|e| common_prefix(&e.tokens, &tokens) < e.tokens.len());
        self.entries.insert(0, Entry { tokens, state });
        self.entries.truncate(MAX_ENTRIES);
        let mut total = 0;
        self.entries.retain(|e| {
            total += e.state.bytes();
            total <= BUDGET_BYTES
        });
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::common_prefix;

    #[test]
    fn common_prefixes_are_counted_from_the_start() {
        assert_eq!(common_prefix(&[1, 2, 3], &[1, 2, 4]), 2);
        assert_eq!(common_prefix(&[1, 2], &[1, 2, 3]), 2);
        assert_eq!(common_prefix(&[], &[1]), 0);
        assert_eq!(common_prefix(&[5], &[1]), 0);
    }
}
