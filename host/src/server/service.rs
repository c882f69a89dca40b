//! The service: what the host does with a request, whichever transport brought it.
//!
//! A transport hands in a client's identity, the payload's bytes and a way to deliver the reply
//! ([`Service::submit`]); it knows nothing of the image, the mind or cognition, and the service
//! knows nothing of sockets. Here each payload is decoded once ([`Incoming`]), admitted by token,
//! and answered at once when it can be (`ping`, a read kept since the last commit, a refusal, a
//! bound reached: `busy`); the rest go to the worker pool, and generations to the mind's relay.
//! Every request gets exactly one [`Reply`].

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::json;

use super::cognizer::{Cognizer, Key, Thinker};
use super::load::{Budget, Load};
use super::read_cache::ReadCache;
use super::reply::{Deliver, Reply};
use super::worker::Worker;
use super::{INSTALL_QUEUE, ServerError};
use crate::access::Tokens;
use crate::cognition::Journal;
use crate::image::{Durability, Image};
use crate::method::Runtime;
use crate::mind::{Completer, MindHandle, Pending};
use crate::protocol::envelope::Incoming;
use crate::protocol::{self, Code, Failure, Request};

/// A request on its way to a worker, decoded.
#[derive(Debug)]
pub(super) struct Job {
    pub request: Request,
    /// Its retry key.
    pub key: Option<String>,
    /// For a kept read, what its answer is kept under.
    pub read_key: Option<String>,
    /// Who asked, as the image's history names them.
    pub actor: String,
    pub reply: Reply,
}

/// What workers and the service share.
#[derive(Debug)]
pub(super) struct Shared {
    /// The newest transaction a worker has seen (what `ping` reports).
    pub newest: AtomicI64,
    pub reads: Mutex<ReadCache>,
    /// Set when the grace period is over: work still queued is answered `shutting-down`.
    pub abandon: AtomicBool,
}

/// What the service needs to start.
#[derive(Debug)]
pub struct Parts<'a> {
    /// The image's first connection; each thread gets a sibling of it.
    pub primary: &'a Image,
    pub durability: Durability,
    pub methods: Arc<Runtime>,
    /// The mind that writes methods, if any.
    pub completer: Option<Arc<dyn Completer>>,
    /// The embedded mind, for `generate`.
    pub mind: Option<MindHandle>,
    pub journal: Journal,
    pub tokens: Tokens,
    /// The image's absolute path, as `ping` reports it.
    pub image_name: String,
    pub budget: Budget,
    pub workers: usize,
    pub installers: usize,
    pub generate_timeout: Duration,
}

/// The embedded mind, and the relay that answers its generations in order.
type Generations = (MindHandle, mpsc::Sender<(Reply, Pending)>);

/// The service, shared by every transport thread.
pub struct Service {
    shared: Arc<Shared>,
    tokens: Tokens,
    image_name: String,
    load: Arc<Mutex<Load>>,
    reply_bytes: usize,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    generations: Mutex<Option<Generations>>,
    generate_timeout: Duration,
    /// Set on shutdown: new requests are answered `shutting-down`.
    draining: AtomicBool,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("image", &self.image_name)
            .finish_non_exhaustive()
    }
}

/// The service's threads, joined in order at shutdown.
#[derive(Debug)]
pub struct Threads {
    workers: Vec<JoinHandle<()>>,
    relay: JoinHandle<()>,
    thinker: Option<JoinHandle<()>>,
}

impl Threads {
    /// Whether every thread has stopped (each does once its queue is closed and answered).
    pub fn finished(&self) -> bool {
        self.workers.iter().all(|w| w.is_finished())
            && self.relay.is_finished()
            && self.thinker.as_ref().is_none_or(|t| t.is_finished())
    }

    pub fn join(self) {
        for worker in self.workers {
            let _ = worker.join();
        }
        let _ = self.relay.join();
        if let Some(thinker) = self.thinker {
            let _ = thinker.join();
        }
    }
}

impl Service {
    /// Starts the worker pool, the installers, the cognition thread (with a mind) and the mind's
    /// relay.
    pub fn start(parts: Parts<'_>) -> Result<(Arc<Service>, Threads), ServerError> {
        let shared = Arc::new(Shared {
            newest: AtomicI64::new(parts.primary.newest_tx()?.0),
            reads: Mutex::new(ReadCache::new(
                parts.primary.commit_counter(),
                parts.budget.read_cache_bytes,
                parts.budget.reply_bytes,
            )),
            abandon: AtomicBool::new(false),
        });
        let spawn = |name: String, body: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name)
                .spawn(body)
                .map_err(ServerError::Worker)
        };
        // Cognition: one thread runs one cycle at a time; workers hand it what nobody understood.
        let (missions, mission_queue) = mpsc::channel::<Key>();
        let cognizer = parts
            .completer
            .as_ref()
            .map(|_| Arc::new(Cognizer::default()));
        let thinker = match (&parts.completer, &cognizer) {
            (Some(completer), Some(cognizer)) => {
                let thinker = Thinker {
                    image: parts.primary.open_sibling(parts.durability)?,
                    methods: Arc::clone(&parts.methods),
                    mind: Arc::clone(completer),
                    journal: parts.journal.clone(),
                    shared: Arc::clone(&shared),
                    cognizer: Arc::clone(cognizer),
                };
                Some(spawn(
                    "batos-cognition".into(),
                    Box::new(move || thinker.run(&mission_queue)),
                )?)
            }
            _ => None,
        };
        let mut workers = Vec::new();
        // The compile queue: installs wait here for one of the installers (as many as compiles
        // may run at once), each with its own connection, so a slow or hostile compile holds no
        // worker.
        let (install_jobs, install_queue) = mpsc::sync_channel::<Job>(INSTALL_QUEUE);
        let install_queue = Arc::new(Mutex::new(install_queue));
        for n in 0..parts.installers.max(1) {
            let installer = Worker {
                image: parts.primary.open_sibling(parts.durability)?,
                methods: Arc::clone(&parts.methods),
                queue: Arc::clone(&install_queue),
                shared: Arc::clone(&shared),
                cognition: None,
                installs: None,
            };
            workers.push(spawn(
                format!("batos-installer-{n}"),
                Box::new(move || installer.run()),
            )?);
        }
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..parts.workers.max(1) {
            let worker = Worker {
                image: parts.primary.open_sibling(parts.durability)?,
                methods: Arc::clone(&parts.methods),
                queue: Arc::clone(&queue),
                shared: Arc::clone(&shared),
                cognition: cognizer.as_ref().map(|c| (Arc::clone(c), missions.clone())),
                installs: Some(install_jobs.clone()),
            };
            workers.push(spawn(
                format!("batos-worker-{n}"),
                Box::new(move || worker.run()),
            )?);
        }
        // Only workers hold the compile queue's and the cognition queue's senders: each closes
        // when the last worker stops.
        drop(install_jobs);
        drop(missions);
        // Generations go to the mind's thread, not to a worker; one relay waits on them in order
        // (the mind runs them in order) and answers each.
        let (relay_jobs, relay_queue) = mpsc::channel::<(Reply, Pending)>();
        let relay = {
            let shared = Arc::clone(&shared);
            spawn(
                "batos-mind-relay".into(),
                Box::new(move || relay_generations(&relay_queue, &shared)),
            )?
        };
        let service = Service {
            shared,
            tokens: parts.tokens,
            image_name: parts.image_name,
            load: Arc::new(Mutex::new(Load::new(parts.budget.clone()))),
            reply_bytes: parts.budget.reply_bytes,
            jobs: Mutex::new(Some(jobs)),
            generations: Mutex::new(parts.mind.map(|mind| (mind, relay_jobs))),
            generate_timeout: parts.generate_timeout,
            draining: AtomicBool::new(false),
        };
        Ok((
            Arc::new(service),
            Threads {
                workers,
                relay,
                thinker,
            },
        ))
    }

    /// Takes one request from `client` (an identity its transport keeps apart from others'),
    /// and answers it through `deliver`, now or later, exactly once.
    pub fn submit(&self, client: &[u8], payload: &[u8], deliver: Deliver) {
        let decoded = Incoming::decode(payload);
        let id = match &decoded {
            Ok(incoming) => incoming.id.clone(),
            Err((id, _)) => id.clone(),
        };
        let mut reply = Reply::new(id, self.reply_bytes, deliver);
        if self.draining.load(Ordering::SeqCst) {
            return reply.fail(&Failure::new(
                Code::ShuttingDown,
                "the host is shutting down",
            ));
        }
        let incoming = match decoded {
            Ok(incoming) => incoming,
            Err((_, failure)) => return reply.fail(&failure),
        };
        // Nothing unauthenticated goes further; every ping, however spelt, is answered here.
        match crate::access::admit(&self.tokens, &incoming) {
            Err(refused) => return reply.fail(&refused),
            Ok(admitted) if admitted.ping => {
                return reply.ok(&json!({
                    "version": protocol::VERSION,
                    "image": self.image_name,
                    "tx": self.shared.newest.load(Ordering::Acquire),
                }));
            }
            Ok(_) => {}
        }
        let parsed = incoming.parse(payload);
        let (request, key) = match (parsed.request, incoming.key) {
            (Err(failure), _) | (_, Err(failure)) => return reply.fail(&failure),
            (Ok(request), Ok(key)) => (request, key),
        };
        // A keyed request goes to a worker, which answers a retry with its recorded reply.
        if let Some(read_key) = parsed.read_key.as_ref().filter(|_| key.is_none()) {
            let kept = match self.shared.reads.lock() {
                Ok(mut reads) => reads.answer(read_key),
                Err(_) => None,
            };
            if let Some(result) = kept {
                return reply.ok_text(&result);
            }
        }
        {
            let mut load = match self.load.lock() {
                Ok(load) => load,
                Err(poisoned) => poisoned.into_inner(),
            };
            if let Err(busy) = load.take(client, incoming.size) {
                return reply.fail(&busy);
            }
        }
        reply.hold(Arc::clone(&self.load), client.to_vec(), incoming.size);
        let request = match request {
            Request::Generate(generation) => match self.generations.lock().as_deref() {
                Ok(Some((mind, relay))) => {
                    let pending =
                        mind.generate(generation, Some(Instant::now() + self.generate_timeout));
                    if let Err(mpsc::SendError((reply, _))) = relay.send((reply, pending)) {
                        reply.fail(&Failure::new(Code::Internal, "the mind's relay is gone"));
                    }
                    return;
                }
                // No mind here: a worker answers as the command line would.
                _ => Request::Generate(generation),
            },
            other => other,
        };
        let job = Job {
            request,
            key,
            read_key: parsed.read_key,
            actor: format!("client:{}", hex::encode(client)),
            reply,
        };
        let queued = match self.jobs.lock().as_deref() {
            Ok(Some(jobs)) => jobs.send(job).map_err(|mpsc::SendError(job)| job),
            _ => Err(job),
        };
        if let Err(job) = queued {
            job.reply.fail(&Failure::new(
                Code::ShuttingDown,
                "the host is shutting down: no worker takes requests",
            ));
        }
    }

    /// Requests taken and not yet answered.
    pub fn in_flight(&self) -> usize {
        match self.load.lock() {
            Ok(load) => load.in_flight(),
            Err(poisoned) => poisoned.into_inner().in_flight(),
        }
    }

    /// From now on new requests are answered `shutting-down`; those in flight go on.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// The grace period is over: queues close, whatever is still queued is answered
    /// `shutting-down`, and a generation still running stops at its next token. The threads
    /// stop once they have answered what they hold.
    pub fn abandon(&self) {
        self.drain();
        self.shared.abandon.store(true, Ordering::SeqCst);
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        if let Ok(mut generations) = self.generations.lock()
            && let Some((mind, _)) = generations.take()
        {
            mind.stop();
        }
    }
}

/// Waits on each generation in the order the mind runs them and answers it.
fn relay_generations(queue: &mpsc::Receiver<(Reply, Pending)>, shared: &Shared) {
    while let Ok((reply, pending)) = queue.recv() {
        let outcome = pending.wait();
        if shared.abandon.load(Ordering::SeqCst) {
            reply.fail(&Failure::new(
                Code::ShuttingDown,
                "the host is shutting down",
            ));
            continue;
        }
        match outcome {
            Ok(generation) => reply.ok(&generation),
            Err(e) => reply.fail(&Failure::from(e)),
        }
    }
}
