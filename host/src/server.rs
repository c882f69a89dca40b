//! The host: the composition root that `batos serve` runs.
//!
//! [`run`] opens (or creates, from genesis) the image, starts the forge, loads the mind, fails
//! the cycles a crashed host left open, starts the [`service`] (its worker pool, installers,
//! cognition thread and the mind's relay) and binds the transport ([`zeromq`]); then it serves
//! until the shutdown flag (SIGINT/SIGTERM), and stops in order: new requests are answered
//! `shutting-down`, those in flight get up to the grace period, what is still queued is answered
//! `shutting-down`, the threads are joined (every open transaction is committed or rolled back by
//! then), the mind's thread last; dropping the image closes it and releases the lock.
//!
//! Transports know nothing of the image, the mind or cognition; the service knows nothing of
//! sockets (a test reads both modules' imports to hold this).

pub mod client;
mod cognizer;
pub mod curve;
pub mod load;
mod read_cache;
pub mod reply;
pub mod service;
mod worker;
pub mod zeromq;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::cognition::{self, CognitionError, Journal};
use crate::image::{Durability, Image, ImageError};
use crate::method::{MethodError, Runtime};
use crate::mind::scripted::ScriptedMind;
use crate::mind::{self, Completer, MindError, MindSpec};

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
    /// The model an external mind asks its engine for (`--model`).
    pub model: Option<String>,
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
    #[error(transparent)]
    Transport(#[from] zeromq::TransportError),
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
}

/// Installs waiting for the compiler, at most: past this an install is answered `busy`.
pub(crate) const INSTALL_QUEUE: usize = 32;

/// Serves until `shutdown` turns true, then drains and returns.
pub fn run(options: ServeOptions, shutdown: Arc<AtomicBool>) -> Result<(), ServerError> {
    // Like Redis's protected mode: beyond loopback only with CURVE, before anything is opened.
    if !options.curve && !curve::is_loopback(&options.bind) {
        return Err(ServerError::Exposed(options.bind.clone()));
    }
    let methods = Arc::new(
        Runtime::new(
            crate::forge::default_cache_dir(),
            crate::sandbox::Limits::default(),
        )
        .with_forge_limits(crate::forge::ForgeLimits {
            on_sdk_build: Some(crate::progress::sdk_build_spinner(
                crate::progress::Plain::Log,
            )),
            ..options.forge.clone()
        }),
    );
    // The forge (and the one-time SDK build) at start: an operator reads here whether compiles
    // are jailed, refused, or unjailed by their choice, before any client asks for one.
    match methods.forge() {
        Ok(forge) => tracing::info!("{}", forge.jail().describe()),
        Err(e) => tracing::warn!("methods cannot be compiled here: {e}"),
    }
    let mut primary = open_or_create(&options, &methods)?;
    // The `mind` object may name an external engine (`endpoint`, `model`): then `--mind image`
    // runs that instead of loading the image's own model.
    let mut options = options;
    let mut named_by_image = false;
    if options.mind == MindSpec::Image
        && let Some((endpoint, model)) = external_mind_setting(&primary)?
    {
        options.mind = MindSpec::OpenAi(endpoint);
        options.model = options.model.or(model);
        named_by_image = true;
    }
    let (mind, mind_thread) = load_mind(&options)?;
    // Cognition: cycles a crashed host left open are failed first; then, with a mind, the
    // personas and states exist and a cognition thread writes missing methods.
    let journal = Journal::beside(Some(&options.image));
    let recovered = cognition::recover(&mut primary, &journal)?;
    if recovered > 0 {
        tracing::info!("{recovered} cycle(s) left unfinished by an earlier host are marked failed");
    }
    let completer: Option<Arc<dyn Completer>> = match (&options.mind, &mind) {
        (MindSpec::OpenAi(endpoint), _) => {
            let external = mind::openai::OpenAiMind::new(
                endpoint,
                options.model.as_deref().unwrap_or(""),
                // An engine the image names gets no API key (any full token may name one).
                !named_by_image,
            )?;
            tracing::info!("mind {} (an external engine)", external.label());
            Some(Arc::new(external))
        }
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
    // The absolute path, so a client can tell whether this is the image it means.
    let image_name = std::fs::canonicalize(&options.image)
        .unwrap_or_else(|_| options.image.clone())
        .display()
        .to_string();
    let mut transport = zeromq::ZeroMq::bind(&zeromq::Listen {
        image: &options.image,
        bind: &options.bind,
        curve: options.curve,
        max_message_bytes: options.max_message_bytes,
        message_bytes: options.budget.message_bytes,
    })?;
    let (service, threads) = service::Service::start(service::Parts {
        primary: &primary,
        durability: options.durability,
        methods: Arc::clone(&methods),
        completer: completer.clone(),
        mind: mind.clone(),
        journal,
        tokens,
        image_name: image_name.clone(),
        budget: options.budget.clone(),
        workers: options.workers,
        installers: options.forge.concurrent,
        generate_timeout: options.generate_timeout,
    })?;
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
    let served = transport.serve(&service, || {
        if draining_since.is_none() && shutdown.load(Ordering::SeqCst) {
            tracing::info!(
                "shutting down: {} request(s) in flight",
                service.in_flight()
            );
            service.drain();
            draining_since = Some(Instant::now());
        }
        draining_since
            .is_some_and(|since| service.in_flight() == 0 || since.elapsed() > options.grace)
    });
    // Past the grace period: queues close, and every thread answers what it still holds with
    // `shutting-down` and stops; replies keep flowing out meanwhile (even after a transport
    // error, nothing is left unanswered before the threads are joined).
    service.abandon();
    if let Err(e) = &served {
        tracing::error!("the transport failed: {e}");
    }
    let drained = transport.drain(&service, || threads.finished(), Duration::ZERO);
    threads.join();
    // Every handle to the mind must go before its thread can see its queue close.
    drop(completer);
    drop(mind);
    if let Some(thread) = mind_thread {
        thread.join();
    }
    let linger = options.grace.min(Duration::from_secs(1));
    let flushed = transport.drain(&service, || true, linger);
    transport.close(linger);
    drop(service);
    drop(primary);
    tracing::info!("stopped; the image is closed and the lock released");
    served?;
    drained?;
    flushed?;
    Ok(())
}

/// The image, opened; or created from genesis (with its mind) when there is none.
fn open_or_create(options: &ServeOptions, methods: &Runtime) -> Result<Image, ServerError> {
    if options.image.exists() {
        return Ok(Image::open(&options.image, options.durability)?);
    }
    let mut bar =
        crate::progress::Bytes::new("importing the default mind", crate::progress::Plain::Log);
    let (image, _) = crate::genesis::create_image(
        &options.image,
        options.durability,
        methods,
        &options.mind,
        "genesis",
        &mut |done, total| bar.show(done, total),
    )?;
    bar.finish();
    tracing::info!("created {} from genesis", options.image.display());
    Ok(image)
}

/// The external engine the image's `mind` object names, if it does: its `endpoint` slot
/// (`http://HOST:PORT/v1`, or the same after `openai:`) and `model` slot. (The API key is never
/// a slot: it comes from the environment.)
fn external_mind_setting(image: &Image) -> Result<Option<(String, Option<String>)>, ServerError> {
    let Some(oid) = image.named(mind::MIND_OBJECT)? else {
        return Ok(None);
    };
    let slot = |name: &str| match image.get(oid, name) {
        Ok(serde_json::Value::String(text)) if !text.is_empty() => Some(text),
        _ => None,
    };
    Ok(slot("endpoint").map(|endpoint| {
        let endpoint = endpoint
            .strip_prefix("openai:")
            .map(str::to_owned)
            .unwrap_or(endpoint);
        (endpoint, slot("model"))
    }))
}

/// The image's own mind, loaded on its thread straight from its blob (it owns the model from
/// then on); nothing for `--mind none` or the scripted mind, or an image with no mind.
fn load_mind(
    options: &ServeOptions,
) -> Result<(Option<mind::MindHandle>, Option<mind::worker::MindThread>), ServerError> {
    if options.mind != MindSpec::Image {
        return Ok((None, None));
    }
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
            Ok((Some(handle), Some(thread)))
        }
        None => {
            tracing::info!("this image has no mind (`batos mind import FILE.gguf` gives it one)");
            Ok((None, None))
        }
    }
}

#[cfg(test)]
mod tests {
    /// The transport knows nothing of the image, the mind or cognition, and the service nothing
    /// of sockets: read from the modules' own imports, so a change that tangles them fails here.
    #[test]
    fn the_transport_and_the_service_stay_apart() {
        let transport = include_str!("server/zeromq.rs");
        for forbidden in [
            "crate::image",
            "crate::mind",
            "crate::cognition",
            "crate::method",
            "crate::sandbox",
            "crate::forge",
            "crate::access",
        ] {
            assert!(
                !transport.contains(forbidden),
                "the ZeroMQ transport uses {forbidden}"
            );
        }
        for service in [
            include_str!("server/service.rs"),
            include_str!("server/worker.rs"),
            include_str!("server/cognizer.rs"),
            include_str!("server/reply.rs"),
            include_str!("server/read_cache.rs"),
        ] {
            assert!(!service.contains("zmq"), "the service uses ZeroMQ");
        }
    }
}
