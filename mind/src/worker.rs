//! The inference thread: it owns the engine, takes requests from a queue one at a time, and
//! sends text back through a channel as it is generated. Whoever asked holds a [`Pending`]:
//! waiting on it never blocks anything else, and dropping it (a client gone), its deadline or
//! [`MindHandle::stop`] cancels the generation at the next token.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::Instant;

use super::MindError;
use super::engine::{Engine, GenerateRequest, Generation};
use super::weights::MindInfo;

/// What the inference thread sends back for one request.
#[derive(Debug)]
pub enum Event {
    /// A piece of text, final.
    Text(String),
    Done(Result<Generation, MindError>),
}

struct Queued {
    request: GenerateRequest,
    deadline: Option<Instant>,
    cancel: Arc<AtomicBool>,
    events: Sender<Event>,
}

/// The handle to a running mind: cheap to clone, shared by every worker.
#[derive(Debug, Clone)]
pub struct MindHandle {
    jobs: Sender<Queued>,
    info: Arc<MindInfo>,
    stopping: Arc<AtomicBool>,
}

/// The thread itself; join it after [`MindHandle::stop`].
#[derive(Debug)]
pub struct MindThread {
    handle: Option<JoinHandle<()>>,
}

impl MindThread {
    pub fn join(mut self) {
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl MindHandle {
    /// Starts the inference thread with `load`, which runs on that thread (the engine never
    /// crosses threads). Returns once the model is loaded, or with the reason it failed.
    pub fn start(
        info: MindInfo,
        load: impl FnOnce() -> Result<Engine, MindError> + Send + 'static,
    ) -> Result<(MindHandle, MindThread), MindError> {
        let (jobs, queue) = mpsc::channel::<Queued>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let stopping = Arc::new(AtomicBool::new(false));
        let stop_flag = stopping.clone();
        let handle = std::thread::Builder::new()
            .name("batos-mind".into())
            .spawn(move || {
                let mut engine = match load() {
                    Ok(engine) => {
                        let _ = ready_tx.send(Ok(()));
                        engine
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                serve(&mut engine, &queue, &stop_flag);
            })
            .map_err(|e| MindError::Inference(format!("cannot start the mind's thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok((
                MindHandle {
                    jobs,
                    info: Arc::new(info),
                    stopping,
                },
                MindThread {
                    handle: Some(handle),
                },
            )),
            Ok(Err(e)) => {
                let _ = handle.join();
                Err(e)
            }
            Err(_) => {
                let _ = handle.join();
                Err(MindError::Stopped)
            }
        }
    }

    pub fn info(&self) -> &MindInfo {
        &self.info
    }

    /// Queues a generation. `deadline`, when given, cancels it once passed.
    pub fn generate(&self, request: GenerateRequest, deadline: Option<Instant>) -> Pending {
        let (events, receiver) = mpsc::channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let job = Queued {
            request,
            deadline,
            cancel: cancel.clone(),
            events,
        };
        let failed = self.jobs.send(job).is_err();
        Pending {
            receiver,
            cancel,
            failed,
        }
    }

    /// Cancels whatever is running or queued, and makes the thread finish.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
    }
}

fn serve(engine: &mut Engine, queue: &Receiver<Queued>, stopping: &AtomicBool) {
    while let Ok(job) = queue.recv() {
        if stopping.load(Ordering::Acquire) {
            let _ = job.events.send(Event::Done(Err(MindError::Stopped)));
            continue;
        }
        let events = job.events.clone();
        let mut on_text = |piece: &str| {
            let gone = !piece.is_empty() && events.send(Event::Text(piece.to_owned())).is_err();
            let late = job.deadline.is_some_and(|d| Instant::now() >= d);
            if gone
                || late
                || job.cancel.load(Ordering::Acquire)
                || stopping.load(Ordering::Acquire)
            {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        // A panic in candle must not take the mind down with it: that request fails alone.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            engine.generate(&job.request, &mut on_text)
        }))
        .unwrap_or_else(|_| Err(MindError::Inference("the model panicked".into())));
        let _ = job.events.send(Event::Done(result));
    }
}

/// A queued or running generation.
#[derive(Debug)]
pub struct Pending {
    receiver: Receiver<Event>,
    cancel: Arc<AtomicBool>,
    failed: bool,
}

impl Pending {
    /// Blocks until the generation ends, giving each piece of text to `on_text` as it comes.
    pub fn wait_streaming(self, on_text: &mut dyn FnMut(&str)) -> Result<Generation, MindError> {
        if self.failed {
            return Err(MindError::Stopped);
        }
        loop {
            match self.receiver.recv() {
                Ok(Event::Text(piece)) => on_text(&piece),
                Ok(Event::Done(result)) => return result,
                Err(_) => return Err(MindError::Stopped),
            }
        }
    }

    /// Blocks until the generation ends.
    pub fn wait(self) -> Result<Generation, MindError> {
        self.wait_streaming(&mut |_| {})
    }

    /// Asks the generation to stop at its next token.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Release);
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Release);
    }
}
