//! The ZeroMQ transport: a ROUTER socket's frames in, replies out. It knows nothing of the image,
//! the mind or cognition: each request's payload goes to [`Service::submit`] with a way back.
//!
//! One socket thread owns the ROUTER (a libzmq socket is used from one thread only) and is the
//! event loop: it reads every request as it comes (a bound reached is answered `busy` by the
//! service, so libzmq never holds a backlog for it) and sends the replies that answering threads
//! hand back. Those come through a channel, with a doorbell on an inproc socket to wake the poll
//! (never blocking whoever answers, the socket thread included). Replies mirror the request's
//! envelope (DEALER: none; REQ: the empty delimiter) and are sent without blocking. A client
//! that does not read its replies as fast as it asks keeps them in its own backlog here, sent in
//! order as it reads, up to [`CLIENT_BACKLOG_BYTES`]; past that (or once it is gone) its replies
//! are logged and dropped, and nobody else waits for it.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::curve;
use super::service::Service;
use crate::protocol::envelope;
use crate::protocol::{Code, Failure};

/// The replies one client may leave unread here, in bytes, before later ones are dropped.
pub const CLIENT_BACKLOG_BYTES: usize = 64 << 20;

/// All clients' unread replies together, at most, past each client's first
/// [`CLIENT_RESERVE_BYTES`] (so clients that never read cannot take the room a client that
/// merely pipelines needs).
pub const TOTAL_BACKLOG_BYTES: usize = 256 << 20;

/// What every client may leave unread whatever the others hold.
pub const CLIENT_RESERVE_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("ZeroMQ: {what}: {source}")]
    Zmq { what: String, source: zmq::Error },
    #[error("cannot bind {endpoint}: {source} (is another host listening there?)")]
    Bind {
        endpoint: String,
        source: zmq::Error,
    },
    #[error(transparent)]
    Curve(#[from] curve::CurveError),
}

fn zmq_err(what: &str) -> impl FnOnce(zmq::Error) -> TransportError + '_ {
    move |source| TransportError::Zmq {
        what: what.to_owned(),
        source,
    }
}

/// What the ZeroMQ transport is told.
#[derive(Debug, Clone)]
pub struct Listen<'a> {
    pub image: &'a Path,
    pub bind: &'a str,
    pub curve: bool,
    /// Larger messages are refused by libzmq, which drops that connection.
    pub max_message_bytes: i64,
    /// Larger requests (every frame together) are answered `too-large`.
    pub message_bytes: usize,
}

/// A reply on its way out: [identity, envelope…, payload].
type Frames = Vec<Vec<u8>>;

/// Where answering threads leave replies for the socket thread.
struct Outbox {
    replies: mpsc::Sender<Frames>,
    /// One frame wakes the socket thread's poll; a full doorbell means it is awake already.
    doorbell: Mutex<zmq::Socket>,
}

impl Outbox {
    fn post(&self, frames: Frames) {
        if self.replies.send(frames).is_err() {
            tracing::warn!("a reply was dropped: the ZeroMQ transport has closed");
            return;
        }
        let doorbell = match self.doorbell.lock() {
            Ok(doorbell) => doorbell,
            Err(poisoned) => poisoned.into_inner(),
        };
        // EAGAIN: rings not yet read are waiting, so the socket thread will look anyway.
        let _ = doorbell.send(&[][..], zmq::DONTWAIT);
    }
}

/// The ZeroMQ transport, bound.
pub struct ZeroMq {
    router: zmq::Socket,
    doorbell: zmq::Socket,
    replies: mpsc::Receiver<Frames>,
    outbox: Arc<Outbox>,
    backlog: Backlog,
    message_bytes: usize,
    zap: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
    // Last: the context outlives its sockets.
    _context: zmq::Context,
}

impl std::fmt::Debug for ZeroMq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZeroMq")
            .field("backlog_bytes", &self.backlog.total)
            .finish_non_exhaustive()
    }
}

impl ZeroMq {
    /// Binds the ROUTER (with CURVE when asked) and the inproc doorbell.
    pub fn bind(listen: &Listen<'_>) -> Result<ZeroMq, TransportError> {
        let context = zmq::Context::new();
        let router = context.socket(zmq::ROUTER).map_err(zmq_err("socket"))?;
        let mut zap = None;
        if listen.curve {
            let keys = curve::Curve::ensure(listen.image)?;
            let stop = Arc::new(AtomicBool::new(false));
            zap = Some((
                Arc::clone(&stop),
                keys.authenticate(&context, Arc::clone(&stop))?,
            ));
            keys.serve(&router)?;
            tracing::info!(
                "CURVE on: the host's public key is {} (in {}); clients allowed: {}",
                keys.public_z85,
                curve::directory(listen.image)
                    .join("server.public")
                    .display(),
                keys.clients.display()
            );
        }
        router
            .set_maxmsgsize(listen.max_message_bytes)
            .map_err(zmq_err("ZMQ_MAXMSGSIZE"))?;
        router
            .set_router_mandatory(true)
            .map_err(zmq_err("ZMQ_ROUTER_MANDATORY"))?;
        // Per client: replies libzmq holds for a client that does not read (past this they wait
        // in the backlog), and messages it holds before the socket thread reads them (it reads
        // without pause).
        router.set_sndhwm(16).map_err(zmq_err("ZMQ_SNDHWM"))?;
        router.set_rcvhwm(4).map_err(zmq_err("ZMQ_RCVHWM"))?;
        router.set_linger(0).map_err(zmq_err("ZMQ_LINGER"))?;
        router
            .bind(listen.bind)
            .map_err(|source| TransportError::Bind {
                endpoint: listen.bind.to_owned(),
                source,
            })?;
        let endpoint = format!("inproc://batos-doorbell-{}", std::process::id());
        let doorbell = context.socket(zmq::PULL).map_err(zmq_err("socket"))?;
        doorbell
            .bind(&endpoint)
            .map_err(zmq_err("bind the doorbell"))?;
        let ring = context.socket(zmq::PUSH).map_err(zmq_err("socket"))?;
        ring.set_sndhwm(4).map_err(zmq_err("ZMQ_SNDHWM"))?;
        ring.connect(&endpoint)
            .map_err(zmq_err("connect the doorbell"))?;
        let (post, replies) = mpsc::channel();
        Ok(ZeroMq {
            router,
            doorbell,
            replies,
            outbox: Arc::new(Outbox {
                replies: post,
                doorbell: Mutex::new(ring),
            }),
            backlog: Backlog::default(),
            message_bytes: listen.message_bytes,
            zap,
            _context: context,
        })
    }

    /// Serves until `stop()` says so: one turn of the loop at least every 50 ms.
    pub fn serve(
        &mut self,
        service: &Service,
        mut stop: impl FnMut() -> bool,
    ) -> Result<(), TransportError> {
        while !stop() {
            self.turn(service)?;
        }
        Ok(())
    }

    /// One turn: wait for a request or a reply (briefly, if replies wait in a backlog), read
    /// every request that came, send every reply that is ready.
    fn turn(&mut self, service: &Service) -> Result<(), TransportError> {
        let wait = if self.backlog.is_empty() { 50 } else { 2 };
        let mut items = [
            self.router.as_poll_item(zmq::POLLIN),
            self.doorbell.as_poll_item(zmq::POLLIN),
        ];
        match zmq::poll(&mut items, wait) {
            Ok(_) => {}
            Err(zmq::Error::EINTR) => return Ok(()),
            Err(e) => return Err(zmq_err("poll")(e)),
        }
        let requests_ready = items[0].is_readable();
        while self.doorbell.recv_bytes(zmq::DONTWAIT).is_ok() {}
        self.backlog.flush(&self.router);
        self.send_posted();
        if requests_ready {
            while let Ok(frames) = self.router.recv_multipart(zmq::DONTWAIT) {
                self.take(service, frames);
                // Replies answered at once (pings, kept reads, refusals) go out as they come.
                self.send_posted();
            }
        }
        Ok(())
    }

    /// One message from a client: a request for the service, or one refused here.
    fn take(&mut self, service: &Service, mut frames: Frames) {
        if frames.len() < 2 {
            return;
        }
        if let Err(refused) = check_message(&frames, self.message_bytes) {
            // Not a request of ours to mirror: the answer goes to the sender alone, after REQ's
            // empty delimiter when it sent one (a REQ socket drops a reply without it).
            let reply = envelope::failed(&serde_json::Value::Null, &refused);
            let req = frames.len() > 2 && frames[1].is_empty();
            frames.truncate(if req { 2 } else { 1 });
            frames.push(reply);
            self.backlog.deliver(&self.router, frames);
            return;
        }
        let Some(payload) = frames.pop() else { return };
        // What the reply goes back under: the identity, then the envelope as it came.
        let route = frames;
        let outbox = Arc::clone(&self.outbox);
        let client = route[0].clone();
        service.submit(
            &client,
            &payload,
            Box::new(move |reply| {
                let mut frames = route;
                frames.push(reply);
                outbox.post(frames);
            }),
        );
    }

    /// Sends the replies posted since the last look (after what their clients have waiting).
    fn send_posted(&mut self) {
        while let Ok(frames) = self.replies.try_recv() {
            self.backlog.deliver(&self.router, frames);
        }
    }

    /// Keeps sending replies (new requests are the service's to refuse) until `done()`, then
    /// gives a backlog up to `linger` to be read.
    pub fn drain(
        &mut self,
        service: &Service,
        mut done: impl FnMut() -> bool,
        linger: Duration,
    ) -> Result<(), TransportError> {
        while !done() {
            self.turn(service)?;
        }
        self.backlog.flush(&self.router);
        self.send_posted();
        let since = Instant::now();
        while !self.backlog.is_empty() && since.elapsed() < linger {
            self.turn(service)?;
        }
        if !self.backlog.is_empty() {
            tracing::warn!(
                "{} bytes of replies were never read by their clients",
                self.backlog.total
            );
        }
        Ok(())
    }
}

impl ZeroMq {
    /// Closes the socket, giving libzmq up to `linger` to hand over the replies it still holds.
    pub fn close(self, linger: Duration) {
        let millis = i32::try_from(linger.as_millis()).unwrap_or(i32::MAX);
        if let Err(e) = self.router.set_linger(millis) {
            tracing::warn!("ZeroMQ: ZMQ_LINGER at close: {e}");
        }
    }
}

impl Drop for ZeroMq {
    fn drop(&mut self) {
        if let Some((stop, zap)) = self.zap.take() {
            stop.store(true, Ordering::SeqCst);
            let _ = zap.join();
        }
    }
}

/// Whether a message of these frames may be read at all: a request is its client's identity,
/// at most two envelope frames (REQ's empty delimiter) and one payload.
fn check_message(frames: &[Vec<u8>], message_bytes: usize) -> Result<(), Failure> {
    if frames.len() > MAX_FRAMES {
        return Err(Failure::new(
            Code::TooLarge,
            format!(
                "a request is one frame (after the envelope); this message has {} frames",
                frames.len().saturating_sub(1)
            ),
        ));
    }
    // The client's request, not the identity ROUTER put before it.
    let total: usize = frames.iter().skip(1).map(Vec::len).sum();
    if total > message_bytes {
        return Err(Failure::new(
            Code::TooLarge,
            format!(
                "the message is {total} bytes; the host takes at most {message_bytes} (--max-message-bytes)"
            ),
        ));
    }
    Ok(())
}

/// A request is its client's identity, at most two envelope frames (REQ's empty delimiter) and
/// one payload.
pub const MAX_FRAMES: usize = 4;

/// Replies waiting for clients that read slower than they ask, in order, per client.
#[derive(Debug, Default)]
struct Backlog {
    clients: HashMap<Vec<u8>, (VecDeque<Frames>, usize)>,
    total: usize,
}

impl Backlog {
    fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Sends now, or after the replies this client has waiting already.
    fn deliver(&mut self, router: &zmq::Socket, frames: Frames) {
        let Some(identity) = frames.first().cloned() else {
            return;
        };
        if !self.clients.contains_key(&identity) {
            match router.send_multipart(frames.iter(), zmq::DONTWAIT) {
                Ok(()) => return,
                Err(zmq::Error::EAGAIN) => {}
                Err(e) => return dropped(&identity, e),
            }
        }
        let size: usize = frames.iter().map(Vec::len).sum();
        let (waiting, bytes) = self.clients.entry(identity.clone()).or_default();
        let within_reserve = *bytes + size <= CLIENT_RESERVE_BYTES;
        if *bytes + size > CLIENT_BACKLOG_BYTES
            || (!within_reserve && self.total + size > TOTAL_BACKLOG_BYTES)
        {
            tracing::warn!(
                "reply to client {} dropped: it has {} bytes of replies unread",
                hex::encode(&identity),
                bytes
            );
            if waiting.is_empty() {
                self.clients.remove(&identity);
            }
            return;
        }
        waiting.push_back(frames);
        *bytes += size;
        self.total += size;
    }

    /// Sends what each client's socket takes now, oldest first.
    fn flush(&mut self, router: &zmq::Socket) {
        let mut sent = 0;
        self.clients.retain(|identity, (waiting, bytes)| {
            while let Some(frames) = waiting.front() {
                match router.send_multipart(frames.iter(), zmq::DONTWAIT) {
                    Ok(()) => {}
                    Err(zmq::Error::EAGAIN) => return true,
                    Err(e) => {
                        dropped(identity, e);
                        sent += *bytes;
                        return false;
                    }
                }
                let size: usize = frames.iter().map(Vec::len).sum();
                *bytes -= size;
                sent += size;
                waiting.pop_front();
            }
            false
        });
        self.total -= sent;
    }
}

/// A reply that cannot be sent (the client is gone): logged, and nobody waits for it.
fn dropped(identity: &[u8], e: zmq::Error) {
    let why = match e {
        zmq::Error::EHOSTUNREACH => "the client is gone",
        _ => "send failed",
    };
    tracing::warn!(
        "reply to client {} dropped: {why} ({e})",
        hex::encode(identity)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_bounded_in_frames_and_bytes() {
        assert!(check_message(&[vec![1], vec![], vec![0; 90]], 100).is_ok());
        // Exactly the limit is taken: the identity does not count.
        assert!(check_message(&[vec![1; 5], vec![0; 100]], 100).is_ok());
        assert!(check_message(&vec![vec![0; 1]; 16], 100).is_err());
        assert!(check_message(&[vec![1], vec![0; 60], vec![0; 60]], 100).is_err());
    }
}
