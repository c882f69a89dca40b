//! The state of one method call's store, and the host functions the contract imports.
//!
//! A call owns the open transaction (lent by the caller) for as long as it runs, records every
//! object it writes and every object it notifies, and checks both against its limits. Nested sends
//! run in a fresh store of their own, inside a savepoint of the same transaction.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Result as WasmResult};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{host, persistence};
use super::{Call, Sandbox, SandboxError};
use batos_image::Tx;
use batos_image::object::{Dispatch, Oid, Slot};

/// Why the host aborted a call from inside a host function (carried through the trap).
#[derive(Debug, thiserror::Error)]
pub enum HostAbort {
    #[error("the call ran past its deadline")]
    Timeout,
    #[error("sends nested deeper than {0}")]
    TooDeep(usize),
    #[error("the image failed under the call: {0}")]
    Image(#[from] batos_image::ImageError),
}

/// Store state: plain data, one per invocation.
pub struct MethodState {
    /// The caller's open transaction, lent for the call's duration.
    pub tx: Tx,
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    /// Captured, bounded stdout and stderr (never the host's).
    pub stdout: MemoryOutputPipe,
    pub stderr: MemoryOutputPipe,
    /// Objects whose slots this call set or removed: each must be notified before `Ok`.
    pub writes: BTreeSet<Oid>,
    /// Objects this call passed to `notify-changed`.
    pub notified: BTreeSet<Oid>,
    /// Lines from `log`, bounded.
    pub log: Vec<String>,
    log_bytes: usize,
    /// How many sends deep this call is (0: sent by a client).
    pub depth: usize,
    pub deadline: Instant,
    memory_limit: usize,
    /// Set when the guest asked for more memory than allowed: the trap is `out-of-memory`.
    pub memory_exceeded: bool,
    /// For nested sends.
    sandbox: Arc<Sandbox>,
}

impl MethodState {
    pub fn new(tx: Tx, call: &Call, sandbox: Arc<Sandbox>) -> Self {
        let limits = sandbox.limits();
        let stdout = MemoryOutputPipe::new(limits.output_bytes);
        let stderr = MemoryOutputPipe::new(limits.output_bytes);
        // No preopened directories, no network, no environment, no arguments, no inherited stdio.
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build();
        MethodState {
            tx,
            wasi,
            table: ResourceTable::new(),
            stdout,
            stderr,
            writes: BTreeSet::new(),
            notified: BTreeSet::new(),
            log: Vec::new(),
            log_bytes: 0,
            depth: call.depth,
            deadline: call.deadline,
            memory_limit: limits.memory_bytes,
            memory_exceeded: false,
            sandbox,
        }
    }

    fn check_deadline(&self) -> WasmResult<()> {
        if Instant::now() > self.deadline {
            return Err(wasmtime::Error::new(HostAbort::Timeout));
        }
        Ok(())
    }

    /// Runs one write in a savepoint with the Data Guardian checking the object at once, so a
    /// refused write answers the guest `Err` and leaves nothing behind.
    fn guarded_write(
        &mut self,
        oid: Oid,
        write: impl FnOnce(&mut Tx) -> Result<(), batos_image::ImageError>,
    ) -> WasmResult<Result<(), String>> {
        self.check_deadline()?;
        let savepoint = self.tx.savepoint().map_err(abort)?;
        match write(&mut self.tx).and_then(|()| self.tx.guard_object(oid)) {
            Ok(()) => {
                self.tx.release(savepoint).map_err(abort)?;
                self.writes.insert(oid);
                Ok(Ok(()))
            }
            Err(e) => {
                self.tx.rollback_to(savepoint).map_err(abort)?;
                Ok(Err(e.to_string()))
            }
        }
    }

    /// Refuses writing a value over a method: methods change by installing.
    fn refuse_method_slot(&self, oid: Oid, slot: &str) -> WasmResult<Option<String>> {
        Ok(match self.tx.own_slot(oid, slot).map_err(abort)? {
            Some(Slot::Method(_)) => Some(format!(
                "slot `{slot}` of object {oid} holds a method; methods change by `batos install`"
            )),
            _ => None,
        })
    }
}

impl std::fmt::Debug for MethodState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MethodState")
            .field("depth", &self.depth)
            .field("writes", &self.writes)
            .field("notified", &self.notified)
            .finish_non_exhaustive()
    }
}

fn abort(e: batos_image::ImageError) -> wasmtime::Error {
    wasmtime::Error::new(HostAbort::Image(e))
}

impl WasiView for MethodState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl ResourceLimiter for MethodState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> WasmResult<bool> {
        if desired > self.memory_limit {
            self.memory_exceeded = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> WasmResult<bool> {
        Ok(desired <= 100_000)
    }
}

fn oid(id: u64) -> Oid {
    Oid(i64::try_from(id).unwrap_or(i64::MAX))
}

impl host::Host for MethodState {
    fn get_slot(&mut self, obj: u64, slot: String) -> WasmResult<Option<String>> {
        self.check_deadline()?;
        // No object, no slots: the lookup itself answers none, without a query of its own.
        Ok(match self.tx.lookup(oid(obj), &slot).map_err(abort)? {
            Some(found) => match found.slot {
                Slot::Value(v) => Some(v.to_string()),
                Slot::Method(_) => None,
            },
            None => None,
        })
    }

    fn set_slot(
        &mut self,
        obj: u64,
        slot: String,
        value: String,
    ) -> WasmResult<Result<(), String>> {
        let target = oid(obj);
        let value: Value = match serde_json::from_str(&value) {
            Ok(v) => v,
            Err(e) => return Ok(Err(format!("set `{slot}`: the value is not JSON: {e}"))),
        };
        if let Some(refusal) = self.refuse_method_slot(target, &slot)? {
            return Ok(Err(refusal));
        }
        self.guarded_write(target, |tx| tx.set_slot(target, &slot, Slot::Value(value)))
    }

    fn remove_slot(&mut self, obj: u64, slot: String) -> WasmResult<Result<(), String>> {
        let target = oid(obj);
        if let Some(refusal) = self.refuse_method_slot(target, &slot)? {
            return Ok(Err(refusal));
        }
        self.guarded_write(target, |tx| tx.remove_slot(target, &slot))
    }

    fn parents(&mut self, obj: u64) -> WasmResult<Vec<u64>> {
        self.check_deadline()?;
        Ok(self
            .tx
            .parents(oid(obj))
            .map(|ps| ps.into_iter().map(|p| p.0 as u64).collect())
            .unwrap_or_default())
    }

    fn create(&mut self, proto: u64, slots: String) -> WasmResult<Result<u64, String>> {
        self.check_deadline()?;
        let slots = match serde_json::from_str::<Value>(&slots) {
            Ok(Value::Object(map)) => map,
            Ok(other) => {
                return Ok(Err(format!(
                    "create: slots must be a JSON object, not {other}"
                )));
            }
            Err(e) => return Ok(Err(format!("create: slots are not JSON: {e}"))),
        };
        let savepoint = self.tx.savepoint().map_err(abort)?;
        let created = self
            .tx
            .create_object(&[oid(proto)], None, slots)
            .and_then(|new| self.tx.guard_object(new).map(|()| new));
        match created {
            Ok(new) => {
                self.tx.release(savepoint).map_err(abort)?;
                // A new object is a change: it must be notified before `Ok` like a write.
                self.writes.insert(new);
                Ok(Ok(new.0 as u64))
            }
            Err(e) => {
                self.tx.rollback_to(savepoint).map_err(abort)?;
                Ok(Err(e.to_string()))
            }
        }
    }

    fn send(
        &mut self,
        obj: u64,
        selector: String,
        args: String,
    ) -> WasmResult<Result<String, String>> {
        self.check_deadline()?;
        let max = self.sandbox.limits().max_depth;
        if self.depth + 1 > max {
            return Err(wasmtime::Error::new(HostAbort::TooDeep(max)));
        }
        let args: Vec<Value> = match serde_json::from_str(&args) {
            Ok(Value::Array(items)) => items,
            _ => return Ok(Err(format!("send `{selector}`: args must be a JSON array"))),
        };
        let receiver = oid(obj);
        if self.tx.resolve(&receiver.into()).is_err() {
            return Ok(Err(format!("send `{selector}`: no object {receiver}")));
        }
        match self.tx.dispatch(receiver, &selector).map_err(abort)? {
            Dispatch::Answer(v) => Ok(Ok(v.to_string())),
            Dispatch::DoesNotUnderstand { receiver, selector } => Ok(Err(format!(
                "object {receiver} does not understand `{selector}`"
            ))),
            Dispatch::Method { method, .. } => {
                let call = Call {
                    method,
                    receiver,
                    args,
                    depth: self.depth + 1,
                    deadline: self.deadline,
                };
                let sandbox = Arc::clone(&self.sandbox);
                match sandbox.invoke(&mut self.tx, call) {
                    Ok(report) => Ok(Ok(report.value.to_string())),
                    // The deadline and the image failing end the whole call, not just this send.
                    Err(SandboxError::Timeout { .. }) => {
                        Err(wasmtime::Error::new(HostAbort::Timeout))
                    }
                    Err(SandboxError::Image(e)) => Err(abort(e)),
                    Err(SandboxError::TooDeep { max }) => {
                        Err(wasmtime::Error::new(HostAbort::TooDeep(max)))
                    }
                    Err(other) => Ok(Err(other.to_string())),
                }
            }
        }
    }

    fn named(&mut self, name: String) -> WasmResult<Option<u64>> {
        self.check_deadline()?;
        Ok(self.tx.named(&name).map_err(abort)?.map(|o| o.0 as u64))
    }

    fn log(&mut self, line: String) -> WasmResult<()> {
        const MAX_LOG_BYTES: usize = 64 * 1024;
        if self.log_bytes + line.len() <= MAX_LOG_BYTES {
            self.log_bytes += line.len();
            self.log.push(line);
        }
        Ok(())
    }
}

impl persistence::Host for MethodState {
    fn notify_changed(&mut self, obj: u64) -> WasmResult<()> {
        self.notified.insert(oid(obj));
        Ok(())
    }
}
