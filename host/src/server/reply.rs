//! A request's reply handle: exactly one reply per request, whatever happens to it.
//!
//! A transport makes one [`Reply`] per request it hands in, with a way to deliver bytes back to
//! that client; whoever ends up answering (the service at once, a worker, an installer, the
//! cognition thread, the mind's relay) consumes it with [`Reply::ok`], [`Reply::fail`] or
//! [`Reply::send`]. A handle dropped unanswered (a queue closed under it, a thread that panicked,
//! a bug) still answers, with `internal`: no client ever waits for a reply that will not come.
//! Answering frees what the request held of the host's budget, and a reply past the budget's
//! size is sent as `too-large` instead.

use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::load::Load;
use crate::protocol::envelope;
use crate::protocol::{Code, Failure};

/// How a transport gets the bytes of one reply back to its client.
pub type Deliver = Box<dyn FnOnce(Vec<u8>) + Send>;

/// The one reply a request gets.
pub struct Reply {
    id: Value,
    deliver: Option<Deliver>,
    /// What the request holds of the host's budget until it is answered.
    held: Option<Held>,
    /// The largest reply sent as it is.
    limit: usize,
}

struct Held {
    load: Arc<Mutex<Load>>,
    client: Vec<u8>,
    size: usize,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("id", &self.id)
            .field("answered", &self.deliver.is_none())
            .finish()
    }
}

impl Reply {
    /// A reply to the request with this `id`, at most `limit` bytes, delivered by `deliver`.
    pub fn new(id: Value, limit: usize, deliver: Deliver) -> Reply {
        Reply {
            id,
            deliver: Some(deliver),
            held: None,
            limit,
        }
    }

    pub fn id(&self) -> &Value {
        &self.id
    }

    /// From now until it is answered, the request counts in `load` (taken already).
    pub(super) fn hold(&mut self, load: Arc<Mutex<Load>>, client: Vec<u8>, size: usize) {
        self.held = Some(Held { load, client, size });
    }

    /// Answers with a result that is JSON text already.
    pub fn ok_text(self, result: &str) {
        let body = envelope::ok(&self.id, result);
        self.send(body);
    }

    /// Answers with a result.
    pub fn ok(self, result: &impl serde::Serialize) {
        match serde_json::to_string(result) {
            Ok(text) => self.ok_text(&text),
            Err(e) => self.fail(&Failure::new(
                Code::Internal,
                format!("the answer could not be encoded: {e}"),
            )),
        }
    }

    pub fn fail(self, failure: &Failure) {
        let body = envelope::failed(&self.id, failure);
        self.send(body);
    }

    /// Answers with a whole encoded reply.
    pub fn send(mut self, body: Vec<u8>) {
        self.finish(body);
    }

    fn finish(&mut self, body: Vec<u8>) {
        let Some(deliver) = self.deliver.take() else {
            return;
        };
        if let Some(held) = self.held.take() {
            match held.load.lock() {
                Ok(mut load) => load.done(&held.client, held.size),
                Err(poisoned) => poisoned.into_inner().done(&held.client, held.size),
            }
        }
        deliver(envelope::bounded(body, &self.id, self.limit));
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if self.deliver.is_some() {
            tracing::error!("a request was about to go unanswered; it is answered `internal`");
            let failure = Failure::new(
                Code::Internal,
                "the host lost track of this request before answering it (a bug: please report it); it may or may not have been applied",
            );
            let body = envelope::failed(&self.id, &failure);
            self.finish(body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn reply(id: i64) -> (Reply, mpsc::Receiver<Vec<u8>>) {
        let (tx, rx) = mpsc::channel();
        let reply = Reply::new(
            Value::from(id),
            1 << 20,
            Box::new(move |body| {
                let _ = tx.send(body);
            }),
        );
        (reply, rx)
    }

    fn read(rx: &mpsc::Receiver<Vec<u8>>) -> Vec<Value> {
        rx.try_iter()
            .map(|b| serde_json::from_slice(&b).expect("json"))
            .collect()
    }

    #[test]
    fn an_answered_request_gets_its_reply_once_and_frees_what_it_held() {
        let load = Arc::new(Mutex::new(Load::new(super::super::load::Budget::default())));
        let (mut r, rx) = reply(4);
        load.lock().expect("load").take(b"c", 10).expect("room");
        r.hold(Arc::clone(&load), b"c".to_vec(), 10);
        r.ok(&serde_json::json!({"n": 1}));
        let replies = read(&rx);
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0]["id"], 4);
        assert_eq!(replies[0]["result"]["n"], 1);
        assert_eq!(load.lock().expect("load").in_flight(), 0);
    }

    #[test]
    fn a_request_dropped_unanswered_is_answered_internal_even_in_a_panicking_thread() {
        let (r, rx) = reply(9);
        drop(r);
        let replies = read(&rx);
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0]["id"], 9);
        assert_eq!(replies[0]["error"]["code"], "internal");
        // A queue that closes with jobs in it drops them: each is answered.
        let (jobs, queue) = mpsc::channel::<Reply>();
        let (a, rx_a) = reply(1);
        let (b, rx_b) = reply(2);
        jobs.send(a).expect("queued");
        jobs.send(b).expect("queued");
        drop(queue);
        drop(jobs);
        assert_eq!(read(&rx_a).len() + read(&rx_b).len(), 2);
        // A thread that panics holding one answers it as it unwinds.
        let (c, rx_c) = reply(3);
        let _ = std::thread::spawn(move || {
            let _held = c;
            panic!("a worker crashed");
        })
        .join();
        assert_eq!(read(&rx_c)[0]["error"]["code"], "internal");
    }
}
