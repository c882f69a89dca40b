//! The cognizer and the cognition thread: messages nobody understood (or whose method trapped)
//! wait here, by receiver and selector, for the one cycle that writes (or repairs) their method;
//! the thread runs one cycle at a time and answers every message that waited on it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, mpsc};

use serde_json::Value;

use super::reply::Reply;
use super::service::Shared;
use crate::cognition::{self, CognitionError, Journal, Mission, Outcome};
use crate::image::Image;
use crate::method::Runtime;
use crate::mind::Completer;
use crate::object::Oid;
use crate::protocol::{Code, Failure};

/// Cycles (distinct receivers and selectors) waiting for the mind, at most: past this a message
/// nobody understands is answered `busy`.
pub(super) const CYCLES_WAITING: usize = 64;

/// A receiver and a selector: messages with the same key share one cycle.
pub(super) type Key = (Oid, String);

/// The messages waiting on cycles, by key. The first waiter of a key opened its cycle; the
/// others joined it.
#[derive(Debug, Default)]
pub(super) struct Cognizer {
    waiting: Mutex<std::collections::HashMap<Key, Vec<(Reply, Mission)>>>,
}

/// A message the cognizer did not take, handed back to be answered.
#[derive(Debug)]
pub(super) enum Unsubmitted {
    /// [`CYCLES_WAITING`] cycles wait already, or the waiting list's lock is poisoned: `busy`.
    Full(Reply),
    /// No cognition thread takes cycles any more: `shutting-down`.
    Closed(Reply),
    /// A cycle for the same message runs, held to other examples than this send's: joining it
    /// would leave this send's examples unchecked, so it is `busy` until that cycle ends.
    OtherExamples(Reply),
}

impl Cognizer {
    /// Joins the cycle for this message's key, or opens one. A message it cannot take is handed
    /// back, never dropped: whoever submitted it answers it.
    pub(super) fn submit(
        &self,
        queue: &mpsc::Sender<Key>,
        reply: Reply,
        mission: Mission,
    ) -> Result<(), Unsubmitted> {
        let key = (mission.receiver, mission.selector.clone());
        let Ok(mut waiting) = self.waiting.lock() else {
            return Err(Unsubmitted::Full(reply));
        };
        if !waiting.contains_key(&key) && waiting.len() >= CYCLES_WAITING {
            return Err(Unsubmitted::Full(reply));
        }
        let first = !waiting.contains_key(&key);
        if let Some(running) = waiting.get(&key).and_then(|w| w.first())
            && !mission.examples.is_empty()
            && running.1.examples != mission.examples
        {
            return Err(Unsubmitted::OtherExamples(reply));
        }
        if first && queue.send(key.clone()).is_err() {
            return Err(Unsubmitted::Closed(reply));
        }
        waiting.entry(key).or_default().push((reply, mission));
        Ok(())
    }

    fn first(&self, key: &Key) -> Option<Mission> {
        let waiting = self.waiting.lock().ok()?;
        waiting.get(key)?.first().map(|(_, m)| m.clone())
    }

    fn take(&self, key: &Key) -> Vec<(Reply, Mission)> {
        self.waiting
            .lock()
            .ok()
            .and_then(|mut w| w.remove(key))
            .unwrap_or_default()
    }
}

/// The cognition thread: runs one cycle at a time (the mind thinks one thought at a time) and
/// answers every message that waited on it.
pub(super) struct Thinker {
    pub image: Image,
    pub methods: Arc<Runtime>,
    pub mind: Arc<dyn Completer>,
    pub journal: Journal,
    pub shared: Arc<Shared>,
    pub cognizer: Arc<Cognizer>,
}

impl Thinker {
    pub(super) fn run(mut self, queue: &mpsc::Receiver<Key>) {
        while let Ok(key) = queue.recv() {
            let Some(mission) = self.cognizer.first(&key) else {
                continue;
            };
            let outcome = if self.shared.abandon.load(Ordering::SeqCst) {
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
                    stop: &self.shared.abandon,
                };
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cycle.run(&mission)))
                    .unwrap_or_else(|_| Err(CognitionError::Crashed))
                    .map_err(Failure::from)
            };
            if let Err(e) = self.image.recover() {
                tracing::warn!("cognition could not reopen the image: {e}");
            }
            for (n, (reply, waiter)) in self.cognizer.take(&key).into_iter().enumerate() {
                // Every waiter gets exactly one reply, even if sending it its answer panics.
                let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.answer(n, &waiter, &outcome)
                }))
                .unwrap_or_else(|_| {
                    Err(Failure::new(
                        Code::Internal,
                        "answering this message after its cycle crashed; it was rolled back",
                    ))
                });
                if let Err(e) = self.image.recover() {
                    tracing::warn!("cognition could not reopen the image: {e}");
                }
                match answer {
                    Ok(value) => reply.ok(&value),
                    Err(failure) => reply.fail(&failure),
                }
            }
        }
    }

    /// The answer to the `n`th message that waited on a cycle that came to `outcome`.
    fn answer(
        &mut self,
        n: usize,
        waiter: &Mission,
        outcome: &Result<Outcome, Failure>,
    ) -> Result<Value, Failure> {
        match outcome {
            // The message that opened the cycle was answered inside it, with the install.
            Ok(Outcome::Answered { value, .. }) if n == 0 => Ok(value.clone()),
            Ok(Outcome::Refused { message, .. }) if n == 0 => {
                Err(Failure::new(Code::MethodError, message.clone()))
            }
            // Those that joined it are sent now, to the method just installed.
            Ok(Outcome::Answered { .. } | Outcome::Refused { .. }) => {
                match self.methods.send(
                    &mut self.image,
                    waiter.receiver,
                    &waiter.selector,
                    waiter.args.clone(),
                    &waiter.actor,
                ) {
                    Ok(crate::method::Sent::Value(v)) => Ok(v),
                    Ok(crate::method::Sent::Ran(report)) => Ok(report.value),
                    Ok(crate::method::Sent::DoesNotUnderstand { .. }) => Err(Failure::new(
                        Code::DoesNotUnderstand,
                        "the method vanished after its cycle",
                    )),
                    Err(e) => Err(Failure::from(e)),
                }
            }
            Ok(other) => Err(Failure::new(
                // A failed repair answers the trap it was opened for.
                waiter
                    .repair
                    .as_ref()
                    .map_or(Code::DoesNotUnderstand, |r| r.code),
                cognition::failure_message(waiter, other),
            )),
            Err(failure) => Err(failure.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(n: u8) -> Reply {
        Reply::new(Value::from(n), 1 << 20, Box::new(|_| {}))
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
            Err(Unsubmitted::Closed(job)) => assert_eq!(job.id(), &Value::from(3)),
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
