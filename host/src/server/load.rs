//! What the host holds for its clients, bounded in requests and in bytes.
//!
//! The socket thread reads every request as it arrives (it never stops reading, so libzmq's
//! queues stay short) and decides here whether to take it: a request past any bound is answered
//! `busy` at once, and costs nothing more. The bounds: requests in flight in all, per client, and
//! the bytes of the requests in flight. (A message's own size and frame count are its
//! transport's to bound.)

use crate::protocol::Code;
use std::collections::HashMap;

use crate::protocol::Failure;

/// The bounds, with their defaults (see `batos serve --help`).
#[derive(Debug, Clone)]
pub struct Budget {
    /// Requests handed to workers and not yet answered, at most.
    pub in_flight: usize,
    /// Of those, at most this many from one client.
    pub per_client: usize,
    /// The bytes of the requests in flight, at most.
    pub queued_bytes: usize,
    /// The largest request message: every frame together.
    pub message_bytes: usize,
    /// The largest reply; a larger one is answered `too-large` instead.
    pub reply_bytes: usize,
    /// What the read cache may hold.
    pub read_cache_bytes: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            in_flight: 1024,
            per_client: 64,
            queued_bytes: 64 << 20,
            message_bytes: 1 << 20,
            reply_bytes: 16 << 20,
            read_cache_bytes: 64 << 20,
        }
    }
}

/// The requests in flight.
#[derive(Debug)]
pub struct Load {
    budget: Budget,
    in_flight: usize,
    bytes: usize,
    clients: HashMap<Vec<u8>, usize>,
}

impl Load {
    pub fn new(budget: Budget) -> Self {
        Load {
            budget,
            in_flight: 0,
            bytes: 0,
            clients: HashMap::new(),
        }
    }

    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Takes a request of `size` bytes from `client`, or says why not (`busy`: retry later).
    pub fn take(&mut self, client: &[u8], size: usize) -> Result<(), Failure> {
        let mine = self.clients.get(client).copied().unwrap_or(0);
        let why = if self.in_flight >= self.budget.in_flight {
            Some(format!("{} requests are in flight", self.in_flight))
        } else if mine >= self.budget.per_client {
            Some(format!(
                "this client has {mine} requests in flight (at most {}): read the replies first",
                self.budget.per_client
            ))
        } else if self.bytes + size > self.budget.queued_bytes {
            Some(format!(
                "{} bytes of requests are in flight (at most {})",
                self.bytes, self.budget.queued_bytes
            ))
        } else {
            None
        };
        if let Some(why) = why {
            return Err(Failure::new(
                Code::Busy,
                format!("the host is busy: {why}; retry later"),
            ));
        }
        self.in_flight += 1;
        self.bytes += size;
        *self.clients.entry(client.to_vec()).or_default() += 1;
        Ok(())
    }

    /// A request taken earlier has been answered.
    pub fn done(&mut self, client: &[u8], size: usize) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(size);
        if let Some(n) = self.clients.get_mut(client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.clients.remove(client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bound_answers_busy_and_answers_free_it() {
        let mut load = Load::new(Budget {
            in_flight: 3,
            per_client: 2,
            queued_bytes: 100,
            ..Budget::default()
        });
        assert!(load.take(b"a", 10).is_ok());
        assert!(load.take(b"a", 10).is_ok());
        assert_eq!(load.take(b"a", 10).map_err(|f| f.code), Err(Code::Busy));
        assert_eq!(load.take(b"b", 90).map_err(|f| f.code), Err(Code::Busy));
        assert!(load.take(b"b", 10).is_ok());
        assert_eq!(load.take(b"c", 1).map_err(|f| f.code), Err(Code::Busy));
        load.done(b"a", 10);
        load.done(b"a", 10);
        assert!(load.take(b"c", 70).is_ok());
        assert_eq!(load.in_flight(), 2);
        assert!(
            !load.clients.contains_key(b"a".as_slice()),
            "a client with nothing in flight costs nothing"
        );
    }
}
