//! A worker: one connection to the image, taking decoded requests from the pool's queue and
//! answering each. Installs go on to the compile queue (an installer is a worker without one),
//! and a send nobody understands (or whose method trapped) goes to cognition when a mind runs.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, mpsc};

use super::cognizer::{CYCLES_WAITING, Cognizer, Key, Unsubmitted};
use super::service::{Job, Shared};
use super::{INSTALL_QUEUE, reply::Reply};
use crate::cognition::{self, Mission, Outcome};
use crate::image::Image;
use crate::image::keys::Recorded;
use crate::method::Runtime;
use crate::protocol::envelope;
use crate::protocol::{self, Code, Executed, Failure, Request};

pub(super) struct Worker {
    pub image: Image,
    pub methods: Arc<Runtime>,
    pub queue: Arc<Mutex<mpsc::Receiver<Job>>>,
    pub shared: Arc<Shared>,
    /// Where messages nobody understands go, when a mind runs.
    pub cognition: Option<(Arc<Cognizer>, mpsc::Sender<Key>)>,
    /// Where installs go (the compile queue's installers); `None` for an installer itself.
    pub installs: Option<mpsc::SyncSender<Job>>,
}

impl Worker {
    pub fn run(mut self) {
        loop {
            let job = match self.queue.lock() {
                Ok(queue) => queue.recv(),
                Err(_) => return,
            };
            let Ok(job) = job else { return };
            if self.shared.abandon.load(Ordering::SeqCst) {
                job.reply.fail(&Failure::new(
                    Code::ShuttingDown,
                    "the host is shutting down",
                ));
                continue;
            }
            self.answer(job);
            // After the reply is on its way: `ping` reports the newest transaction.
            if let Ok(tx) = self.image.newest_tx() {
                self.shared.newest.fetch_max(tx.0, Ordering::AcqRel);
            }
        }
    }

    /// One request: a retry's recorded reply, an install for the compile queue, or execute it (a panic rolls it back), record the
    /// reply of a keyed request that committed, offer a read's result to the read cache, and
    /// answer.
    fn answer(&mut self, job: Job) {
        // A retry of a request already applied is answered here, an install too.
        let Some(job) = self.replayed(job) else {
            return;
        };
        if let Some(installs) = &self.installs
            && matches!(job.request, Request::Install { .. })
        {
            return match installs.try_send(job) {
                Ok(()) => {}
                Err(mpsc::TrySendError::Full(job)) => job.reply.fail(&Failure::new(
                    Code::Busy,
                    format!(
                        "{INSTALL_QUEUE} installs are already waiting for the compiler: retry later"
                    ),
                )),
                Err(mpsc::TrySendError::Disconnected(job)) => job.reply.fail(&Failure::new(
                    Code::ShuttingDown,
                    "the host is shutting down",
                )),
            };
        }
        let Job {
            request,
            key,
            read_key,
            actor,
            reply,
        } = job;
        let before = self.image.commit_count();
        self.image.expect_key(key);
        let executed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            protocol::execute(&mut self.image, &self.methods, request, &actor)
        }))
        .unwrap_or_else(|_| {
            Err(Failure::new(
                Code::Internal,
                "the request crashed its worker; it was rolled back",
            ))
        });
        let committed_key = self.image.take_committed_key();
        // A panic mid-transaction takes the connection with it; the next request needs one.
        if let Err(e) = self.image.recover() {
            tracing::warn!("a worker could not reopen the image: {e}");
        }
        let result = match executed {
            // Nothing understood it, or its method trapped: with a mind, a cycle takes it on.
            Ok(Executed::DoesNotUnderstand { mission, .. } | Executed::Trapped { mission, .. })
                if self.cognition.is_some() =>
            {
                return self.hand_to_cognition(mission, reply);
            }
            Ok(executed) => executed.into_result().map(|value| value.to_string()),
            Err(failure) => Err(failure),
        };
        // The reply as a retry of the same key will get it, recorded before it is sent: an
        // acknowledged request's reply is always on record.
        if let Some(key) = &committed_key
            && let Err(e) = self.image.record_reply(key, &envelope::recorded(&result))
        {
            tracing::warn!("the reply to a keyed request was not recorded: {e}");
        }
        match result {
            Ok(text) => {
                // A read's result is worth keeping only if no commit happened while it ran, nor
                // was under way when it started (an odd count: see `Image::commit_count`).
                if let Some(read_key) = &read_key
                    && before.is_multiple_of(2)
                    && self.image.commit_count() == before
                    && let Ok(mut reads) = self.shared.reads.lock()
                {
                    reads.remember(before, read_key, &text);
                }
                reply.ok_text(&text);
            }
            Err(failure) => reply.fail(&failure),
        }
    }

    /// The job back, unless its retry key was applied before: then it is answered with the
    /// reply it got (nothing runs twice), or `busy` while that reply is being recorded.
    fn replayed(&mut self, job: Job) -> Option<Job> {
        let Some(key) = &job.key else {
            return Some(job);
        };
        match self.image.recorded(key) {
            Ok(Some(Recorded {
                reply: Some(recorded),
                ..
            })) => {
                let body = envelope::replayed(job.reply.id(), &recorded);
                job.reply.send(body);
            }
            Ok(Some(Recorded { tx, reply: None })) => job.reply.fail(&Failure::new(
                Code::Busy,
                format!(
                    "the request with this key was applied in tx {tx} and is being answered: retry to get its reply"
                ),
            )),
            Ok(None) => return Some(job),
            Err(e) => job.reply.fail(&Failure::from(e)),
        }
        None
    }

    /// A message for a cycle: queued for the cognition thread, which answers it when its cycle
    /// ends; one it cannot take is answered here.
    fn hand_to_cognition(&mut self, mission: Mission, reply: Reply) {
        if cognition::Config::read(&self.image).is_ok_and(|c| !c.synthesis) {
            // Synthesis is off: answer now rather than queue behind a running cycle (a trap as
            // the trap it was).
            let failure = match &mission.repair {
                Some(repair) => Failure::new(repair.code, repair.error.clone()),
                None => Failure::new(
                    Code::DoesNotUnderstand,
                    cognition::failure_message(&mission, &Outcome::Off),
                ),
            };
            return reply.fail(&failure);
        }
        let Some((cognizer, queue)) = &self.cognition else {
            return reply.fail(&Failure::new(
                Code::DoesNotUnderstand,
                cognition::failure_message(&mission, &Outcome::Off),
            ));
        };
        let (reply, failure) = match cognizer.submit(queue, reply, mission) {
            Ok(()) => return,
            Err(Unsubmitted::Full(reply)) => (
                reply,
                Failure::new(
                    Code::Busy,
                    format!(
                        "{CYCLES_WAITING} cognitive cycles are already waiting for the mind: retry later"
                    ),
                ),
            ),
            Err(Unsubmitted::Closed(reply)) => (
                reply,
                Failure::new(
                    Code::ShuttingDown,
                    "the host is shutting down: no cycle can start",
                ),
            ),
            Err(Unsubmitted::OtherExamples(reply)) => (
                reply,
                Failure::new(
                    Code::Busy,
                    "a cycle for this message is running, held to other examples than this send's: retry when it ends",
                ),
            ),
        };
        reply.fail(&failure);
    }
}
