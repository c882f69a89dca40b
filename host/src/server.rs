//! The host: a ZeroMQ ROUTER serving the protocol to many clients at once.
//!
//! One socket thread owns the ROUTER (a libzmq socket is used from one thread only) and is the
//! event loop: it polls the ROUTER and an inproc PULL socket on which workers hand back replies,
//! and never touches SQLite, wasm or the compiler. Requests go to a pool of worker threads over a
//! channel; each worker has its own connection to the image (siblings sharing the writer lock), so
//! reads run concurrently and writes are serialised by SQLite (`BEGIN IMMEDIATE` with a busy
//! timeout). `ping` is answered by the socket thread itself, so it is never stuck behind a long
//! method. Replies mirror the request's envelope (DEALER: none; REQ: the empty delimiter), are sent
//! without blocking, and a reply to a vanished or stalled client is logged and dropped
//! (`ROUTER_MANDATORY`, high-water marks) rather than stalling everybody else.
//!
//! Lifecycle: on the shutdown flag (SIGINT/SIGTERM) the loop stops taking new requests (they get
//! `shutting-down`), waits up to the grace period for in-flight ones, answers what is still queued
//! with `shutting-down`, joins the workers (every open transaction is committed or rolled back by
//! then), and returns; dropping the image closes it and releases the lock.

pub mod client;
pub mod curve;
pub mod load;

use crate::protocol::Code;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cognition::{self, CognitionError, Journal, Mission, Outcome};
use crate::image::keys::{self, Recorded};
use crate::image::{Durability, Image, ImageError};
use crate::method::{MethodError, Methods};
use crate::mind::scripted::ScriptedMind;
use crate::mind::{self, Completer, MindError, MindSpec, Pending};
use crate::object::Oid;
use crate::protocol::{self, Executed, Failure, Request};

/// What `batos serve` is told.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub image: PathBuf,
    pub bind: String,
    pub workers: usize,
    pub durability: Durability,
    /// Larger messages are refused by libzmq, which drops that connection.
    pub max_message_bytes: i64,
    /// How long in-flight requests may finish after a shutdown signal.
    pub grace: Duration,
    /// Which mind to run (`--mind`).
    pub mind: MindSpec,
    /// Where inference runs (`cpu`, `cuda`).
    pub device: String,
    /// How long a `generate` may run before it is cancelled.
    pub generate_timeout: Duration,
    /// How methods compile: how many at once, the jail, the bounds.
    pub forge: crate::forge::ForgeLimits,
    /// What the host holds for its clients (requests in flight, bytes, replies, the read cache).
    pub budget: load::Budget,
    /// Serve with ZeroMQ CURVE (needed for a bind beyond loopback).
    pub curve: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Method(#[from] MethodError),
    #[error("ZeroMQ: {what}: {source}")]
    Zmq { what: String, source: zmq::Error },
    #[error("cannot bind {endpoint}: {source} (is another host listening there?)")]
    Bind {
        endpoint: String,
        source: zmq::Error,
    },
    #[error(transparent)]
    Mind(#[from] MindError),
    #[error(transparent)]
    Cognition(#[from] CognitionError),
    #[error("cannot start a worker: {0}")]
    Worker(std::io::Error),
    #[error(transparent)]
    Access(#[from] crate::access::AccessError),
    #[error(transparent)]
    Genesis(#[from] crate::genesis::GenesisError),
    #[error(
        "refusing to serve {0} without CURVE: anyone who reaches it could try tokens; pass --curve (keys beside the image, clients on its allow-list), or bind to loopback"
    )]
    Exposed(String),
    #[error(transparent)]
    Curve(#[from] curve::CurveError),
}

fn zmq_err(what: &str) -> impl FnOnce(zmq::Error) -> ServerError + '_ {
    move |source| ServerError::Zmq {
        what: what.to_owned(),
        source,
    }
}

/// Cycles (distinct receivers and selectors) waiting for the mind, at most: past this a message
/// nobody understands is answered `busy`.
const CYCLES_WAITING: usize = 64;

/// Installs waiting for the compiler, at most: past this an install is answered `busy`.
const INSTALL_QUEUE: usize = 32;

/// A request on its way to a worker: who asked, the envelope to mirror, the payload.
struct Job {
    identity: Vec<u8>,
    envelope: Vec<Vec<u8>>,
    payload: Vec<u8>,
}

/// Serves until `shutdown` turns true, then drains and returns.
pub fn run(options: ServeOptions, shutdown: Arc<AtomicBool>) -> Result<(), ServerError> {
    // Like Redis's protected mode: beyond loopback only with CURVE, before anything is opened.
    if !options.curve && !curve::is_loopback(&options.bind) {
        return Err(ServerError::Exposed(options.bind.clone()));
    }
    let methods = Arc::new(
        Methods::new(
            crate::forge::default_cache_dir(),
            crate::sandbox::Limits::default(),
        )
        .with_forge_limits(options.forge.clone()),
    );
    // The forge (and the one-time SDK build) at start: an operator reads here whether compiles
    // are jailed, refused, or unjailed by their choice, before any client asks for one.
    match methods.forge() {
        Ok(forge) => tracing::info!("{}", forge.jail().describe()),
        Err(e) => tracing::warn!("methods cannot be compiled here: {e}"),
    }
    let mut primary = if options.image.exists() {
        Image::open(&options.image, options.durability)?
    } else {
        if options.mind == MindSpec::Image {
            tracing::info!("importing the default mind");
        }
        let mut shown = 0;
        let (image, _) = crate::genesis::create_image(
            &options.image,
            options.durability,
            &methods,
            &options.mind,
            "genesis",
            &mut |done, total| {
                let tenth = (done * 10).checked_div(total).unwrap_or(10);
                if tenth > shown {
                    shown = tenth;
                    tracing::info!("importing the default mind: {}%", tenth * 10);
                }
            },
        )?;
        tracing::info!("created {} from genesis", options.image.display());
        image
    };
    // The mind loads on its own thread, straight from its blob; it owns the model from then on.
    let (mind, mind_thread) = match &options.mind {
        MindSpec::None | MindSpec::Scripted(_) => (None, None),
        MindSpec::Image => {
            let device = mind::device(&options.device)?;
            let started = Instant::now();
            match mind::start(&options.image, device)? {
                Some((handle, thread)) => {
                    tracing::info!(
                        "mind {} ({}, {} parameters) loaded from the image in {:.2} s",
                        handle.info().name,
                        handle.info().quantization,
                        handle.info().parameters,
                        started.elapsed().as_secs_f64()
                    );
                    (Some(handle), Some(thread))
                }
                None => {
                    tracing::info!(
                        "this image has no mind (`batos mind import FILE.gguf` gives it one)"
                    );
                    (None, None)
                }
            }
        }
    };
    // Cognition: cycles a crashed host left open are failed first; then, with a mind, the
    // personas and states exist and a cognition thread writes missing methods.
    let journal = Journal::beside(Some(&options.image));
    let recovered = cognition::recover(&mut primary, &journal)?;
    if recovered > 0 {
        tracing::info!("{recovered} cycle(s) left unfinished by an earlier host are marked failed");
    }
    let completer: Option<Arc<dyn Completer>> = match (&options.mind, &mind) {
        (MindSpec::Scripted(path), _) => {
            let scripted = ScriptedMind::load(path)?;
            tracing::info!("mind {} (a test facility)", scripted.label());
            Some(Arc::new(scripted))
        }
        (_, Some(handle)) => Some(Arc::new(handle.clone())),
        _ => None,
    };
    if completer.is_some() {
        cognition::ensure_objects(&mut primary)?;
    }
    // Replies a dead host committed but never recorded: a retry learns they were applied.
    let lost = primary.mark_lost_replies()?;
    if lost > 0 {
        tracing::info!(
            "{lost} keyed request(s) applied by an earlier host lost their replies; retries are told so"
        );
    }
    // Who may ask: the image's tokens, beside it (made now for an image that has none).
    let tokens = crate::access::Tokens::ensure(&options.image)?;
    let newest = Arc::new(AtomicI64::new(primary.newest_tx()?.0));
    let mut reads = ReadCache::new(
        primary.commit_counter(),
        options.budget.read_cache_bytes,
        options.budget.reply_bytes,
    );
    let mut load = load::Load::new(options.budget.clone());
    // The absolute path, so a client can tell whether this is the image it means.
    let image_name = std::fs::canonicalize(&options.image)
        .unwrap_or_else(|_| options.image.clone())
        .display()
        .to_string();

    let context = zmq::Context::new();
    let zap_stop = Arc::new(AtomicBool::new(false));
    let mut zap = None;
    let router = context.socket(zmq::ROUTER).map_err(zmq_err("socket"))?;
    if options.curve {
        let keys = curve::Curve::ensure(&options.image)?;
        zap = Some(keys.authenticate(&context, Arc::clone(&zap_stop))?);
        keys.serve(&router)?;
        tracing::info!(
            "CURVE on: the host's public key is {} (in {}); clients allowed: {}",
            keys.public_z85,
            curve::directory(&options.image)
                .join("server.public")
                .display(),
            keys.clients.display()
        );
    }
    router
        .set_maxmsgsize(options.max_message_bytes)
        .map_err(zmq_err("ZMQ_MAXMSGSIZE"))?;
    router
        .set_router_mandatory(true)
        .map_err(zmq_err("ZMQ_ROUTER_MANDATORY"))?;
    // Per client: replies waiting for a client that does not read (past this they are dropped),
    // and messages libzmq holds before the socket thread reads them (it reads without pause).
    router.set_sndhwm(16).map_err(zmq_err("ZMQ_SNDHWM"))?;
    router.set_rcvhwm(4).map_err(zmq_err("ZMQ_RCVHWM"))?;
    router.set_linger(0).map_err(zmq_err("ZMQ_LINGER"))?;
    router
        .bind(&options.bind)
        .map_err(|source| ServerError::Bind {
            endpoint: options.bind.clone(),
            source,
        })?;
    let replies_endpoint = format!("inproc://batos-replies-{}", std::process::id());
    let replies = context.socket(zmq::PULL).map_err(zmq_err("socket"))?;
    replies
        .bind(&replies_endpoint)
        .map_err(zmq_err("bind replies"))?;

    let (jobs, queue) = mpsc::channel::<Job>();
    // Set when the grace period is over: work still queued is answered `shutting-down`.
    let abandon = Arc::new(AtomicBool::new(false));
    let queue = Arc::new(Mutex::new(queue));
    let cognizer = completer.as_ref().map(|_| Arc::new(Cognizer::default()));
    let (missions, mission_queue) = mpsc::channel::<Key>();
    let thinker = match (&completer, &cognizer) {
        (Some(completer), Some(cognizer)) => {
            let push = context.socket(zmq::PUSH).map_err(zmq_err("socket"))?;
            push.connect(&replies_endpoint)
                .map_err(zmq_err("connect replies"))?;
            let thinker = Thinker {
                image: primary.open_sibling(options.durability)?,
                methods: Arc::clone(&methods),
                mind: Arc::clone(completer),
                journal: journal.clone(),
                stop: Arc::clone(&abandon),
                cognizer: Arc::clone(cognizer),
                replies: push,
            };
            Some(
                std::thread::Builder::new()
                    .name("batos-cognition".into())
                    .spawn(move || thinker.run(&mission_queue))
                    .map_err(ServerError::Worker)?,
            )
        }
        _ => None,
    };
    let mut workers = Vec::new();
    // The compile queue: installs wait here for one of the installers (as many as compiles may
    // run at once), each with its own connection, so a slow or hostile compile holds no worker.
    let (install_jobs, install_queue) = mpsc::sync_channel::<Job>(INSTALL_QUEUE);
    let install_queue = Arc::new(Mutex::new(install_queue));
    for n in 0..options.forge.concurrent.max(1) {
        let push = context.socket(zmq::PUSH).map_err(zmq_err("socket"))?;
        push.connect(&replies_endpoint)
            .map_err(zmq_err("connect replies"))?;
        let installer = Worker {
            image: primary.open_sibling(options.durability)?,
            methods: Arc::clone(&methods),
            queue: Arc::clone(&install_queue),
            replies: push,
            newest: Arc::clone(&newest),
            abandon: Arc::clone(&abandon),
            cognition: None,
            installs: None,
        };
        let handle = std::thread::Builder::new()
            .name(format!("batos-installer-{n}"))
            .spawn(move || installer.run())
            .map_err(ServerError::Worker)?;
        workers.push(handle);
    }
    for n in 0..options.workers.max(1) {
        let image = primary.open_sibling(options.durability)?;
        let push = context.socket(zmq::PUSH).map_err(zmq_err("socket"))?;
        push.connect(&replies_endpoint)
            .map_err(zmq_err("connect replies"))?;
        let worker = Worker {
            image,
            methods: Arc::clone(&methods),
            queue: Arc::clone(&queue),
            replies: push,
            newest: Arc::clone(&newest),
            abandon: Arc::clone(&abandon),
            cognition: cognizer.as_ref().map(|c| (Arc::clone(c), missions.clone())),
            installs: Some(install_jobs.clone()),
        };
        let handle = std::thread::Builder::new()
            .name(format!("batos-worker-{n}"))
            .spawn(move || worker.run())
            .map_err(ServerError::Worker)?;
        workers.push(handle);
    }
    // Only workers hold the compile queue's sender: it closes when the last of them stops.
    drop(install_jobs);
    // Generations go to the mind's thread, not to a worker; one relay waits on them in order
    // (the mind runs them in order) and hands each reply back like a worker does.
    let (relay_jobs, relay_queue) = mpsc::channel::<(Job, Pending)>();
    let relay = {
        let push = context.socket(zmq::PUSH).map_err(zmq_err("socket"))?;
        push.connect(&replies_endpoint)
            .map_err(zmq_err("connect replies"))?;
        let abandon = Arc::clone(&abandon);
        std::thread::Builder::new()
            .name("batos-mind-relay".into())
            .spawn(move || relay_generations(&relay_queue, &push, &abandon))
            .map_err(ServerError::Worker)?
    };
    tracing::info!(
        target: crate::cli::READY_TARGET,
        "serving {} on {} with {} workers and {} installers (pid {})",
        image_name,
        options.bind,
        options.workers.max(1),
        options.forge.concurrent.max(1),
        std::process::id()
    );

    let mut draining_since: Option<Instant> = None;
    loop {
        if draining_since.is_none() && shutdown.load(Ordering::SeqCst) {
            tracing::info!("shutting down: {} request(s) in flight", load.in_flight());
            draining_since = Some(Instant::now());
        }
        if let Some(since) = draining_since
            && (load.in_flight() == 0 || since.elapsed() > options.grace)
        {
            break;
        }
        // The loop reads every request as it comes, whatever is in flight: past a bound it
        // answers `busy` (see `load`), so libzmq never holds a backlog for it.
        let mut items = [
            router.as_poll_item(zmq::POLLIN),
            replies.as_poll_item(zmq::POLLIN),
        ];
        match zmq::poll(&mut items, 50) {
            Ok(_) => {}
            Err(zmq::Error::EINTR) => continue,
            Err(e) => return Err(zmq_err("poll")(e)),
        }
        let (requests_ready, replies_ready) = (items[0].is_readable(), items[1].is_readable());
        if replies_ready {
            while let Ok(mut frames) = replies.recv_multipart(zmq::DONTWAIT) {
                let header = frames.remove(0);
                let (size, memo) = read_header(&header);
                if let Some(identity) = frames.first() {
                    load.done(identity, size);
                }
                reads.remember(memo);
                bound_reply(&mut frames, load.budget().reply_bytes);
                deliver(&router, frames);
            }
        }
        if requests_ready {
            while let Ok(frames) = router.recv_multipart(zmq::DONTWAIT) {
                if let Err(refused) = load.check_message(&frames) {
                    // Not a request of ours to mirror: the answer goes to the sender alone.
                    if let Some(identity) = frames.first() {
                        let reply = failure_reply(b"", &refused);
                        deliver(&router, vec![identity.clone(), reply]);
                    }
                    continue;
                }
                let Some(job) = split(frames) else { continue };
                if draining_since.is_some() {
                    let reply = failure_reply(
                        &job.payload,
                        &Failure::new(Code::ShuttingDown, "the host is shutting down"),
                    );
                    deliver(&router, job.reply_frames(reply));
                    continue;
                }
                let is_ping = match crate::access::admit(&tokens, &job.payload) {
                    Ok(admitted) => admitted.ping,
                    Err(refused) => {
                        deliver(
                            &router,
                            job.reply_frames(failure_reply(&job.payload, &refused)),
                        );
                        continue;
                    }
                };
                // Every ping, however spelt, is answered here: an unauthenticated request never
                // reaches a worker.
                if is_ping {
                    let reply = ping_reply(&job.payload, &image_name, &newest);
                    deliver(&router, job.reply_frames(reply));
                    continue;
                }
                if let Some(reply) = reads.answer(&job.payload) {
                    deliver(&router, job.reply_frames(reply));
                    continue;
                }
                if let Err(busy) = load.take(&job.identity, job.payload.len()) {
                    deliver(
                        &router,
                        job.reply_frames(failure_reply(&job.payload, &busy)),
                    );
                    continue;
                }
                if let Some(mind) = &mind
                    && let Some(request) = generation(&job.payload)
                {
                    let pending =
                        mind.generate(request, Some(Instant::now() + options.generate_timeout));
                    if let Err(mpsc::SendError((job, _))) = relay_jobs.send((job, pending)) {
                        load.done(&job.identity, job.payload.len());
                        let failure = Failure::new(Code::Internal, "the mind's relay is gone");
                        deliver(
                            &router,
                            job.reply_frames(failure_reply(&job.payload, &failure)),
                        );
                    }
                    continue;
                }
                if let Err(mpsc::SendError(job)) = jobs.send(job) {
                    load.done(&job.identity, job.payload.len());
                    let reply = failure_reply(
                        &job.payload,
                        &Failure::new(Code::Internal, "no worker is left"),
                    );
                    deliver(&router, job.reply_frames(reply));
                }
            }
        }
    }
    // No more jobs: workers answer what is still queued with `shutting-down` and exit. Their
    // replies keep flowing out (so none of them blocks on a full pipe), and whoever asks
    // meanwhile is told the host is shutting down.
    abandon.store(true, Ordering::SeqCst);
    drop(jobs);
    drop(relay_jobs);
    drop(missions);
    if let Some(mind) = &mind {
        // A generation still running stops at its next token.
        mind.stop();
    }
    while !(workers.iter().all(|w| w.is_finished())
        && relay.is_finished()
        && thinker.as_ref().is_none_or(|t| t.is_finished()))
    {
        let mut items = [
            router.as_poll_item(zmq::POLLIN),
            replies.as_poll_item(zmq::POLLIN),
        ];
        if zmq::poll(&mut items, 10).is_err() {
            continue;
        }
        while let Ok(mut frames) = replies.recv_multipart(zmq::DONTWAIT) {
            frames.remove(0);
            bound_reply(&mut frames, load.budget().reply_bytes);
            deliver(&router, frames);
        }
        while let Ok(frames) = router.recv_multipart(zmq::DONTWAIT) {
            if let Some(job) = split(frames) {
                let failure = Failure::new(Code::ShuttingDown, "the host is shutting down");
                deliver(
                    &router,
                    job.reply_frames(failure_reply(&job.payload, &failure)),
                );
            }
        }
    }
    for worker in workers {
        let _ = worker.join();
    }
    let _ = relay.join();
    if let Some(thinker) = thinker {
        let _ = thinker.join();
    }
    // Every handle to the mind must go before its thread can see its queue close.
    drop(completer);
    drop(mind);
    if let Some(thread) = mind_thread {
        thread.join();
    }
    while let Ok(mut frames) = replies.recv_multipart(zmq::DONTWAIT) {
        frames.remove(0);
        bound_reply(&mut frames, load.budget().reply_bytes);
        deliver(&router, frames);
    }
    zap_stop.store(true, Ordering::SeqCst);
    if let Some(zap) = zap {
        let _ = zap.join();
    }
    drop(primary);
    tracing::info!("stopped; the image is closed and the lock released");
    Ok(())
}

impl Job {
    fn reply_frames(&self, reply: Vec<u8>) -> Vec<Vec<u8>> {
        let mut frames = Vec::with_capacity(self.envelope.len() + 2);
        frames.push(self.identity.clone());
        frames.extend(self.envelope.iter().cloned());
        frames.push(reply);
        frames
    }
}

/// [identity, envelope…, payload]: DEALER sends no envelope, REQ an empty delimiter.
fn split(mut frames: Vec<Vec<u8>>) -> Option<Job> {
    if frames.len() < 2 {
        return None;
    }
    let identity = frames.remove(0);
    let payload = frames.pop()?;
    Some(Job {
        identity,
        envelope: frames,
        payload,
    })
}

/// Sends without blocking. A client that vanished (ROUTER_MANDATORY) or stopped reading (its
/// queue is full) loses its reply; nobody else waits for it.
fn deliver(router: &zmq::Socket, frames: Vec<Vec<u8>>) {
    if let Err(e) = router.send_multipart(frames.iter(), zmq::DONTWAIT) {
        let who = frames.first().map(hex::encode).unwrap_or_default();
        let why = match e {
            zmq::Error::EHOSTUNREACH => "the client is gone",
            zmq::Error::EAGAIN => "the client is not reading its replies",
            _ => "send failed",
        };
        tracing::warn!("reply to client {who} dropped: {why} ({e})");
    }
}

/// The request, if `payload` is a well-formed `generate` (anything else goes to a worker, which
/// answers errors the usual way).
fn generation(payload: &[u8]) -> Option<mind::GenerateRequest> {
    if !payload.windows(8).any(|w| w == b"generate") {
        return None;
    }
    let value: Value = serde_json::from_slice(payload).ok()?;
    match Request::decode(&value) {
        Ok(Request::Generate(request)) => Some(request),
        _ => None,
    }
}

/// Waits on each generation in the order the mind runs them and hands back its reply.
fn relay_generations(
    queue: &mpsc::Receiver<(Job, Pending)>,
    push: &zmq::Socket,
    abandon: &AtomicBool,
) {
    while let Ok((job, pending)) = queue.recv() {
        let outcome = pending.wait();
        let reply = if abandon.load(Ordering::SeqCst) {
            failure_reply(
                &job.payload,
                &Failure::new(Code::ShuttingDown, "the host is shutting down"),
            )
        } else {
            match outcome {
                Ok(generation) => ok_reply(&job.payload, &generation),
                Err(e) => failure_reply(&job.payload, &Failure::from(e)),
            }
        };
        hand_back(push, &job, Vec::new(), reply, "the mind's relay");
    }
}

/// Hands a reply back to the socket thread, after a header: the request's size (8 bytes, so the
/// socket thread can free what it counted) and `memo` (what its read cache may keep, or
/// nothing), on the inproc socket every answering thread has.
fn hand_back(socket: &zmq::Socket, job: &Job, memo: Vec<u8>, reply: Vec<u8>, who: &str) {
    let mut frames = job.reply_frames(reply);
    let mut header = (job.payload.len() as u64).to_le_bytes().to_vec();
    header.extend(memo);
    frames.insert(0, header);
    if let Err(e) = socket.send_multipart(frames.iter(), 0) {
        tracing::warn!("{who} could not hand back a reply: {e}");
    }
}

/// A reply's header: the request's size and the read cache's memo.
fn read_header(header: &[u8]) -> (usize, &[u8]) {
    match header.split_first_chunk::<8>() {
        Some((size, memo)) => (u64::from_le_bytes(*size) as usize, memo),
        None => (0, &[]),
    }
}

/// A reply larger than the budget becomes a `too-large` failure (with the request's id).
fn bound_reply(frames: &mut [Vec<u8>], limit: usize) {
    let Some(reply) = frames.last_mut() else {
        return;
    };
    if reply.len() <= limit {
        return;
    }
    let id = request_id(reply);
    let failure = Failure::new(
        Code::TooLarge,
        format!(
            "the reply would be {} bytes; the host sends at most {limit} (--max-reply-bytes): ask for less (a history `limit`, one slot at a time)",
            reply.len()
        ),
    );
    *reply = json!({"id": id, "ok": false, "error": failure.to_json()})
        .to_string()
        .into_bytes();
}

/// The request's `id`, echoed in its reply (null when there is none or the payload is not JSON).
/// Only `id` is built: the rest of a (possibly megabyte) payload is skipped, not made a `Value`.
fn request_id(payload: &[u8]) -> Value {
    #[derive(serde::Deserialize)]
    struct Id {
        #[serde(default)]
        id: Value,
    }
    // serde reads a struct from an array too; only an object has an id.
    if payload.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Value::Null;
    }
    serde_json::from_slice::<Id>(payload)
        .map(|i| i.id)
        .unwrap_or(Value::Null)
}

fn ok_reply(payload: &[u8], result: &impl serde::Serialize) -> Vec<u8> {
    json!({"id": request_id(payload), "ok": true, "result": result})
        .to_string()
        .into_bytes()
}

/// `ping` straight from the socket thread, so it never waits behind long work (admission has
/// already read the op).
fn ping_reply(payload: &[u8], image: &str, newest: &AtomicI64) -> Vec<u8> {
    let result =
        json!({"version": protocol::VERSION, "image": image, "tx": newest.load(Ordering::Acquire)});
    json!({"id": request_id(payload), "ok": true, "result": result})
        .to_string()
        .into_bytes()
}

fn failure_reply(payload: &[u8], failure: &Failure) -> Vec<u8> {
    json!({"id": request_id(payload), "ok": false, "error": failure.to_json()})
        .to_string()
        .into_bytes()
}

struct Worker {
    image: Image,
    methods: Arc<Methods>,
    queue: Arc<Mutex<mpsc::Receiver<Job>>>,
    replies: zmq::Socket,
    newest: Arc<AtomicI64>,
    abandon: Arc<AtomicBool>,
    /// Where messages nobody understands go, when a mind runs.
    cognition: Option<(Arc<Cognizer>, mpsc::Sender<Key>)>,
    /// Where installs go (the compile queue's installers); `None` for an installer itself.
    installs: Option<mpsc::SyncSender<Job>>,
}

impl Worker {
    fn run(mut self) {
        loop {
            let job = match self.queue.lock() {
                Ok(queue) => queue.recv(),
                Err(_) => return,
            };
            let Ok(job) = job else { return };
            let mut memo = Vec::new();
            let reply = if self.abandon.load(Ordering::SeqCst) {
                failure_reply(
                    &job.payload,
                    &Failure::new(Code::ShuttingDown, "the host is shutting down"),
                )
            } else {
                let actor = format!("client:{}", hex::encode(&job.identity));
                let before = self.image.commit_count();
                let answer = answer_with(
                    &mut self.image,
                    &self.methods,
                    &job.payload,
                    &actor,
                    self.cognition.is_some(),
                    self.installs.is_some(),
                );
                let (reply, read) = match answer {
                    Answer::Reply(reply, read) => (reply, read),
                    Answer::Install => {
                        let Some(installs) = &self.installs else {
                            continue;
                        };
                        match installs.try_send(job) {
                            Ok(()) => continue,
                            Err(mpsc::TrySendError::Full(job)) => {
                                let failure = Failure::new(
                                    Code::Busy,
                                    format!(
                                        "{INSTALL_QUEUE} installs are already waiting for the compiler: retry later"
                                    ),
                                );
                                let reply = failure_reply(&job.payload, &failure);
                                hand_back(&self.replies, &job, Vec::new(), reply, "a worker");
                                continue;
                            }
                            Err(mpsc::TrySendError::Disconnected(job)) => {
                                let failure =
                                    Failure::new(Code::ShuttingDown, "the host is shutting down");
                                let reply = failure_reply(&job.payload, &failure);
                                hand_back(&self.replies, &job, Vec::new(), reply, "a worker");
                                continue;
                            }
                        }
                    }
                    Answer::Missing(mission)
                        if cognition::Config::read(&self.image).is_ok_and(|c| !c.synthesis) =>
                    {
                        // Synthesis is off: answer now rather than queue behind a running cycle
                        // (a trap as the trap it was).
                        let failure = match &mission.repair {
                            Some(repair) => Failure::new(repair.code, repair.error.clone()),
                            None => Failure::new(
                                Code::DoesNotUnderstand,
                                cognition::failure_message(&mission, &Outcome::Off),
                            ),
                        };
                        (failure_reply(&job.payload, &failure), None)
                    }
                    Answer::Missing(mission) => {
                        let Some((cognizer, queue)) = &self.cognition else {
                            continue;
                        };
                        // The cognition thread answers this one when its cycle ends; one it
                        // cannot take is answered here.
                        let (job, failure) = match cognizer.submit(queue, job, mission) {
                            Ok(()) => continue,
                            Err(Unsubmitted::Full(job)) => (
                                job,
                                Failure::new(
                                    Code::Busy,
                                    format!(
                                        "{CYCLES_WAITING} cognitive cycles are already waiting for the mind: retry later"
                                    ),
                                ),
                            ),
                            Err(Unsubmitted::Closed(job)) => (
                                job,
                                Failure::new(
                                    Code::ShuttingDown,
                                    "the host is shutting down: no cycle can start",
                                ),
                            ),
                            Err(Unsubmitted::OtherExamples(job)) => (
                                job,
                                Failure::new(
                                    Code::Busy,
                                    "a cycle for this message is running, held to other examples than this send's: retry when it ends",
                                ),
                            ),
                        };
                        let reply = failure_reply(&job.payload, &failure);
                        hand_back(&self.replies, &job, Vec::new(), reply, "a worker");
                        continue;
                    }
                };
                // A read's result is worth keeping only if no commit happened while it ran, nor
                // was under way when it started (an odd count: see `Image::commit_count`).
                if let Some((key, result)) = read
                    && before.is_multiple_of(2)
                    && self.image.commit_count() == before
                {
                    memo = format!("{before}\n{key}\n{result}").into_bytes();
                }
                reply
            };
            hand_back(&self.replies, &job, memo, reply, "a worker");
            // After the reply is on its way: `ping` reports the newest transaction.
            if let Ok(tx) = self.image.newest_tx() {
                self.newest.fetch_max(tx.0, Ordering::AcqRel);
            }
        }
    }
}

/// Reads whose answers depend only on the committed image (no methods run): the socket thread may
/// answer them again, unchanged, until the next commit.
const KEPT_READS: &[&str] = &["get", "describe", "methods", "method", "history", "diff"];

/// The key a read's answer is kept under: the request without its `id`, canonical JSON.
fn read_key(request: &Value) -> Option<String> {
    let op = request.get("op")?.as_str()?;
    if !KEPT_READS.contains(&op) {
        return None;
    }
    let mut request = request.as_object()?.clone();
    // Not part of what is read: who asked (admitted already), and under which retry key.
    for envelope in ["id", "token", "key"] {
        request.remove(envelope);
    }
    Some(Value::Object(request).to_string())
}

/// Answers to reads, kept by the socket thread while the image's commit count stays the same.
/// Workers hand each read's result back with the count it was read at; any commit empties this.
/// Only memory is touched here: the socket thread still never runs SQLite.
struct ReadCache {
    commits: Arc<std::sync::atomic::AtomicU64>,
    valid_at: u64,
    results: std::collections::HashMap<String, String>,
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

    fn new(commits: Arc<std::sync::atomic::AtomicU64>, budget: usize, reply_bytes: usize) -> Self {
        ReadCache {
            valid_at: commits.load(Ordering::Acquire),
            commits,
            results: std::collections::HashMap::new(),
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

    fn answer(&mut self, payload: &[u8]) -> Option<Vec<u8>> {
        self.current();
        if self.results.is_empty() {
            return None;
        }
        let request: Value = serde_json::from_slice(payload).ok()?;
        let result = self.results.get(&read_key(&request)?)?;
        let id = request.get("id").cloned().unwrap_or(Value::Null);
        Some(format!("{{\"id\":{id},\"ok\":true,\"result\":{result}}}").into_bytes())
    }

    /// Keeps a worker's memo (`count\nkey\nresult`) if nothing was committed since it was read.
    fn remember(&mut self, memo: &[u8]) {
        let Ok(memo) = std::str::from_utf8(memo) else {
            return;
        };
        let mut parts = memo.splitn(3, '\n');
        let (Some(count), Some(key), Some(result)) = (parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        if count.parse::<u64>().ok() != Some(self.current()) {
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

/// One request, start to finish: decode, execute, encode. Never panics on input.
pub fn answer(image: &mut Image, methods: &Methods, payload: &[u8], actor: &str) -> Vec<u8> {
    match answer_with(image, methods, payload, actor, false, false) {
        Answer::Reply(reply, _) => reply,
        // Without cognition no send becomes a mission, nor an install a queued compile.
        Answer::Missing(_) | Answer::Install => {
            failure_reply(payload, &Failure::new(Code::Internal, "no cognition here"))
        }
    }
}

/// What a worker does with a request.
enum Answer {
    /// Reply now (and, for a read, what the socket thread may keep).
    Reply(Vec<u8>, Option<(String, String)>),
    /// A send nobody understood, for cognition.
    Missing(Mission),
    /// An install, for the compile queue (a compile never holds a worker).
    Install,
}

/// One request for a worker: the reply and, for a successful read, the key and result the
/// socket thread may keep; with `cognition`, a send that finds no slot becomes a mission instead.
fn answer_with(
    image: &mut Image,
    methods: &Methods,
    payload: &[u8],
    actor: &str,
    cognition: bool,
    installs: bool,
) -> Answer {
    let value: Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(e) => {
            let failure = Failure::new(Code::BadRequest, format!("the request is not JSON: {e}"));
            return Answer::Reply(failure_reply(payload, &failure), None);
        }
    };
    let id = value.get("id").cloned().unwrap_or(Value::Null);
    let key = match retry_key(&value) {
        Ok(key) => key,
        Err(failure) => return Answer::Reply(failure_reply(payload, &failure), None),
    };
    if let Some(key) = &key {
        match image.recorded(key) {
            // Applied before: the reply it got, again; nothing runs twice.
            Ok(Some(Recorded {
                reply: Some(reply), ..
            })) => return Answer::Reply(replayed(&id, &reply), None),
            Ok(Some(Recorded { tx, reply: None })) => {
                let failure = Failure::new(
                    Code::Busy,
                    format!(
                        "the request with this key was applied in tx {tx} and is being answered: retry to get its reply"
                    ),
                );
                return Answer::Reply(failure_reply(payload, &failure), None);
            }
            Ok(None) => {}
            Err(e) => return Answer::Reply(failure_reply(payload, &Failure::from(e)), None),
        }
    }
    let request = Request::decode(&value);
    if installs && matches!(request, Ok(Request::Install { .. })) {
        return Answer::Install;
    }
    image.expect_key(key);
    let outcome = request.and_then(|request| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            protocol::execute(image, methods, request, actor)
        }))
        .unwrap_or_else(|_| {
            Err(Failure::new(
                Code::Internal,
                "the request crashed its worker; it was rolled back",
            ))
        })
    });
    let committed_key = image.take_committed_key();
    // A panic mid-transaction takes the connection with it; the next request needs one.
    if let Err(e) = image.recover() {
        tracing::warn!("a worker could not reopen the image: {e}");
    }
    // The reply as a retry of the same key will get it (before it is sent: an acknowledged
    // request's reply is always on record).
    let record = |image: &Image, body: String| {
        if let Some(key) = &committed_key
            && let Err(e) = image.record_reply(key, &body)
        {
            tracing::warn!("the reply to a keyed request was not recorded: {e}");
        }
    };
    let outcome = match outcome {
        // Nothing understood it, or its method trapped: with a mind, a cycle takes it on.
        Ok(Executed::DoesNotUnderstand { mission, .. } | Executed::Trapped { mission, .. })
            if cognition =>
        {
            return Answer::Missing(mission);
        }
        Ok(executed) => executed.into_result(),
        Err(failure) => Err(failure),
    };
    match outcome {
        Ok(result) => {
            let text = result.to_string();
            record(image, format!("{{\"ok\":true,\"result\":{text}}}"));
            let reply = format!("{{\"id\":{id},\"ok\":true,\"result\":{text}}}").into_bytes();
            Answer::Reply(reply, read_key(&value).map(|key| (key, text)))
        }
        Err(failure) => {
            record(
                image,
                json!({"ok": false, "error": failure.to_json()}).to_string(),
            );
            let reply = json!({"id": id, "ok": false, "error": failure.to_json()});
            Answer::Reply(reply.to_string().into_bytes(), None)
        }
    }
}

/// The request's retry key, if it has one (a non-empty string of at most
/// [`keys::MAX_KEY_BYTES`]).
fn retry_key(request: &Value) -> Result<Option<String>, Failure> {
    match request.get("key") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(key)) if !key.is_empty() && key.len() <= keys::MAX_KEY_BYTES => {
            Ok(Some(key.clone()))
        }
        Some(_) => Err(Failure::new(
            Code::BadRequest,
            format!(
                "`key` must be a non-empty string of at most {} bytes",
                keys::MAX_KEY_BYTES
            ),
        )),
    }
}

/// A recorded reply, sent again under this request's id.
fn replayed(id: &Value, recorded: &str) -> Vec<u8> {
    let mut reply = serde_json::from_str::<Value>(recorded).unwrap_or_else(|_| json!({"ok": false, "error": {"code": "internal", "message": "the recorded reply is damaged"}}));
    reply["id"] = id.clone();
    reply["replayed"] = json!(true);
    reply.to_string().into_bytes()
}

/// A receiver and a selector: messages with the same key share one cycle.
type Key = (Oid, String);

/// The messages waiting on cycles, by key. The first waiter of a key opened its cycle; the
/// others joined it.
#[derive(Default)]
struct Cognizer {
    waiting: Mutex<std::collections::HashMap<Key, Vec<(Job, Mission)>>>,
}

/// A job the cognizer did not take, handed back to be answered.
enum Unsubmitted {
    /// [`CYCLES_WAITING`] cycles wait already, or the waiting list's lock is poisoned: `busy`.
    Full(Job),
    /// No cognition thread takes cycles any more: `shutting-down`.
    Closed(Job),
    /// A cycle for the same message runs, held to other examples than this send's: joining it
    /// would leave this send's examples unchecked, so it is `busy` until that cycle ends.
    OtherExamples(Job),
}

impl Cognizer {
    /// Joins the cycle for this message's key, or opens one. A job it cannot take is handed
    /// back, never dropped: whoever submitted it answers it.
    fn submit(
        &self,
        queue: &mpsc::Sender<Key>,
        job: Job,
        mission: Mission,
    ) -> Result<(), Unsubmitted> {
        let key = (mission.receiver, mission.selector.clone());
        let Ok(mut waiting) = self.waiting.lock() else {
            return Err(Unsubmitted::Full(job));
        };
        if !waiting.contains_key(&key) && waiting.len() >= CYCLES_WAITING {
            return Err(Unsubmitted::Full(job));
        }
        let first = !waiting.contains_key(&key);
        if let Some(running) = waiting.get(&key).and_then(|w| w.first())
            && !mission.examples.is_empty()
            && running.1.examples != mission.examples
        {
            return Err(Unsubmitted::OtherExamples(job));
        }
        if first && queue.send(key.clone()).is_err() {
            return Err(Unsubmitted::Closed(job));
        }
        waiting.entry(key).or_default().push((job, mission));
        Ok(())
    }

    fn first(&self, key: &Key) -> Option<Mission> {
        let waiting = self.waiting.lock().ok()?;
        waiting.get(key)?.first().map(|(_, m)| m.clone())
    }

    fn take(&self, key: &Key) -> Vec<(Job, Mission)> {
        self.waiting
            .lock()
            .ok()
            .and_then(|mut w| w.remove(key))
            .unwrap_or_default()
    }
}

/// The cognition thread: runs one cycle at a time (the mind thinks one thought at a time) and
/// answers every message that waited on it.
struct Thinker {
    image: Image,
    methods: Arc<Methods>,
    mind: Arc<dyn Completer>,
    journal: Journal,
    stop: Arc<AtomicBool>,
    cognizer: Arc<Cognizer>,
    replies: zmq::Socket,
}

impl Thinker {
    fn run(mut self, queue: &mpsc::Receiver<Key>) {
        while let Ok(key) = queue.recv() {
            let Some(mission) = self.cognizer.first(&key) else {
                continue;
            };
            let outcome = if self.stop.load(Ordering::SeqCst) {
                Err(Failure::new(
                    Code::ShuttingDown,
                    "the host is shutting down",
                ))
            } else {
                let mut cycle = cognition::Cycle {
                    image: &mut self.image,
                    methods: &self.methods,
                    mind: self.mind.as_ref(),
                    journal: &self.journal,
                    stop: &self.stop,
                };
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cycle.run(&mission)))
                    .unwrap_or_else(|_| Err(CognitionError::Crashed))
                    .map_err(Failure::from)
            };
            if let Err(e) = self.image.recover() {
                tracing::warn!("cognition could not reopen the image: {e}");
            }
            for (n, (job, waiter)) in self.cognizer.take(&key).into_iter().enumerate() {
                // Every waiter gets exactly one reply, even if sending it its answer panics.
                let reply = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.reply(n, &job, &waiter, &outcome)
                }))
                .unwrap_or_else(|_| {
                    failure_reply(
                        &job.payload,
                        &Failure::new(
                            Code::Internal,
                            "answering this message after its cycle crashed; it was rolled back",
                        ),
                    )
                });
                if let Err(e) = self.image.recover() {
                    tracing::warn!("cognition could not reopen the image: {e}");
                }
                hand_back(&self.replies, &job, Vec::new(), reply, "cognition");
            }
        }
    }

    fn reply(
        &mut self,
        n: usize,
        job: &Job,
        waiter: &Mission,
        outcome: &Result<Outcome, Failure>,
    ) -> Vec<u8> {
        let ok = |value: &Value| ok_reply(&job.payload, value);
        match outcome {
            // The message that opened the cycle was answered inside it, with the install.
            Ok(Outcome::Answered { value, .. }) if n == 0 => ok(value),
            Ok(Outcome::Refused { message, .. }) if n == 0 => failure_reply(
                &job.payload,
                &Failure::new(Code::MethodError, message.clone()),
            ),
            // Those that joined it are sent now, to the method just installed.
            Ok(Outcome::Answered { .. } | Outcome::Refused { .. }) => {
                match self.methods.send(
                    &mut self.image,
                    waiter.receiver,
                    &waiter.selector,
                    waiter.args.clone(),
                    &waiter.actor,
                ) {
                    Ok(crate::method::Sent::Value(v)) => ok(&v),
                    Ok(crate::method::Sent::Ran(report)) => ok(&report.value),
                    Ok(crate::method::Sent::DoesNotUnderstand { .. }) => failure_reply(
                        &job.payload,
                        &Failure::new(
                            Code::DoesNotUnderstand,
                            "the method vanished after its cycle",
                        ),
                    ),
                    Err(e) => failure_reply(&job.payload, &Failure::from(e)),
                }
            }
            Ok(other) => failure_reply(
                &job.payload,
                &Failure::new(
                    // A failed repair answers the trap it was opened for.
                    waiter
                        .repair
                        .as_ref()
                        .map_or(Code::DoesNotUnderstand, |r| r.code),
                    cognition::failure_message(waiter, other),
                ),
            ),
            Err(failure) => failure_reply(&job.payload, failure),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(n: u8) -> Job {
        Job {
            identity: vec![n],
            envelope: Vec::new(),
            payload: format!("{{\"id\": {n}, \"op\": \"send\"}}").into_bytes(),
        }
    }

    fn mission(selector: &str) -> Mission {
        Mission {
            receiver: Oid(2),
            selector: selector.into(),
            args: Vec::new(),
            intent: None,
            examples: Vec::new(),
            actor: "test".into(),
            repair: None,
        }
    }

    /// Every submitted job is either waiting on a cycle or handed back to be answered: none is
    /// dropped when the cognition thread is gone, the queue is full or the lock is poisoned.
    #[test]
    fn a_job_the_cognizer_cannot_take_is_handed_back_never_dropped() {
        let cognizer = Cognizer::default();
        let (queue, cycles) = mpsc::channel();
        assert!(cognizer.submit(&queue, job(1), mission("a")).is_ok());
        // Joins the waiting cycle: no second key is queued.
        assert!(cognizer.submit(&queue, job(2), mission("a")).is_ok());
        assert_eq!(cycles.try_recv().ok(), Some((Oid(2), "a".to_owned())));
        assert!(cycles.try_recv().is_err());
        // A send with other examples does not join: its examples would go unchecked.
        let mut other = mission("a");
        other.examples = vec![
            serde_json::from_value(serde_json::json!({"args": [], "answer": 1})).expect("example"),
        ];
        assert!(matches!(
            cognizer.submit(&queue, job(9), other),
            Err(Unsubmitted::OtherExamples(_))
        ));
        assert_eq!(cognizer.take(&(Oid(2), "a".to_owned())).len(), 2);
        // The cognition thread is gone: handed back as closed, and nothing is left waiting.
        drop(cycles);
        match cognizer.submit(&queue, job(3), mission("b")) {
            Err(Unsubmitted::Closed(job)) => assert_eq!(job.identity, vec![3]),
            _ => panic!("a job for a closed queue must come back"),
        }
        assert!(cognizer.first(&(Oid(2), "b".to_owned())).is_none());
        // Full: CYCLES_WAITING keys wait already.
        let cognizer = Cognizer::default();
        let (queue, _cycles) = mpsc::channel();
        for n in 0..CYCLES_WAITING {
            assert!(
                cognizer
                    .submit(&queue, job(0), mission(&format!("s{n}")))
                    .is_ok()
            );
        }
        assert!(matches!(
            cognizer.submit(&queue, job(4), mission("one more")),
            Err(Unsubmitted::Full(_))
        ));
        // A poisoned lock: handed back too.
        let poisoned = Arc::new(Cognizer::default());
        let holder = Arc::clone(&poisoned);
        let _ = std::thread::spawn(move || {
            let _guard = holder.waiting.lock();
            panic!("poison the lock");
        })
        .join();
        assert!(matches!(
            poisoned.submit(&queue, job(5), mission("c")),
            Err(Unsubmitted::Full(_))
        ));
    }
}
