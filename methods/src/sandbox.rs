//! The sandbox: installed methods run in wasmtime, one fresh store per call.
//!
//! One [`Engine`] (fuel metering on, so a runaway loop traps with `out-of-fuel`), one [`Linker`]
//! that grants the contract's two interfaces and a minimal WASI (io, cli without args or
//! environment, clocks, random: no filesystem, no sockets), and an `InstancePre` cached per
//! installed method. Each call gets a fresh [`Store`] with its own fuel, a memory limit, captured
//! and bounded stdout/stderr, and the caller's transaction; a deadline bounds time spent in host
//! calls and nested sends. A call runs inside a savepoint: whatever fails (a trap, a guest error,
//! a covenant violation) undoes that call's writes, and only those.

mod bindings;
mod state;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store, Trap};

use crate::guardian::component::{self as component_gate, Shape};
use batos_image::object::{MethodId, Oid};
use batos_image::{ImageError, Tx};
use bindings::{Method, MethodPre};
pub use state::{HostAbort, MethodState};

/// What bounds one call.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Fuel per store (about one unit per wasm instruction).
    pub fuel: u64,
    /// Linear memory per store.
    pub memory_bytes: usize,
    /// How deep sends may nest.
    pub max_depth: usize,
    /// Wall-clock time for a whole call, nested sends included.
    pub time: Duration,
    /// Captured stdout and stderr, each.
    pub output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 200_000_000,
            memory_bytes: 64 << 20,
            max_depth: 16,
            time: Duration::from_secs(10),
            output_bytes: 64 << 10,
        }
    }
}

/// One call to run.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: MethodId,
    /// `self`: the object the message was sent to (not the one the method was found on).
    pub receiver: Oid,
    pub args: Vec<Value>,
    /// 0 for a client's send; nested sends count up.
    pub depth: usize,
    pub deadline: Instant,
}

impl Call {
    pub fn new(method: MethodId, receiver: Oid, args: Vec<Value>, limits: &Limits) -> Self {
        Call {
            method,
            receiver,
            args,
            depth: 0,
            deadline: Instant::now() + limits.time,
        }
    }
}

/// What a successful call produced besides its answer.
#[derive(Debug, Clone, Serialize)]
pub struct CallReport {
    pub value: Value,
    pub log: Vec<String>,
    pub stdout: String,
    pub stderr: String,
    pub fuel_used: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The method returned `Err(message)`.
    #[error("{message}")]
    MethodError { message: String },
    #[error("the method trapped: {message}{}", tail(stderr))]
    Trap { message: String, stderr: String },
    #[error("the method ran out of fuel ({fuel} units): it loops too long")]
    OutOfFuel { fuel: u64 },
    #[error("the method asked for more than {limit} bytes of memory")]
    OutOfMemory { limit: usize },
    #[error("the call ran past its time limit of {limit:?}")]
    Timeout { limit: Duration },
    #[error("sends nested deeper than {max}")]
    TooDeep { max: usize },
    #[error(
        "covenant violation: the method changed object(s) {} without notify_changed(); everything it did is rolled back",
        .unnotified.iter().map(Oid::to_string).collect::<Vec<_>>().join(", ")
    )]
    CovenantViolation { unnotified: Vec<Oid> },
    #[error("the method answered something that is not JSON: {0}")]
    BadAnswer(String),
    #[error("the component cannot run here: {0}")]
    Instantiate(String),
    #[error("the component is refused: {}", .0.join("; "))]
    Refused(Vec<String>),
    #[error(transparent)]
    Image(#[from] ImageError),
}

fn tail(stderr: &str) -> String {
    let text = stderr.trim();
    if text.is_empty() {
        return String::new();
    }
    let start = text.len().saturating_sub(2000);
    let start = (start..=text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    format!(" (stderr: {})", &text[start..])
}

/// Compiled functions by cranelift's cache key (the function's code, not its place). Methods
/// share most of their code (std, serde_json, the guest SDK), so once one method has been
/// compiled, the next compiles only the functions that are its own.
#[derive(Debug, Default)]
struct FunctionCache {
    entries: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
    bytes: std::sync::atomic::AtomicUsize,
}

/// What the function cache may hold; past this, functions compile without being kept.
const FUNCTION_CACHE_BYTES: usize = 256 << 20;

impl wasmtime::CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
        let entries = self.entries.lock().ok()?;
        entries.get(key).cloned().map(std::borrow::Cow::Owned)
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        use std::sync::atomic::Ordering;
        let size = key.len() + value.len();
        if self.bytes.load(Ordering::Relaxed) + size > FUNCTION_CACHE_BYTES {
            return false;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return false;
        };
        if entries.insert(key.to_vec(), value).is_none() {
            self.bytes.fetch_add(size, Ordering::Relaxed);
        }
        true
    }
}

/// The engine, the linker and the methods ready to instantiate.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<MethodState>,
    limits: Limits,
    /// Linked and type-checked methods, by id (method rows never change, so never stale).
    ready: Mutex<HashMap<MethodId, MethodPre<MethodState>>>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    pub fn new(limits: Limits) -> Result<Arc<Sandbox>, SandboxError> {
        let mut config = Config::new();
        config.consume_fuel(true);
        // rustc has already optimised the wasm (LLVM, opt-level 1); cranelift's own passes on top
        // cost about 40 ms of every install (277 -> 234 ms) and bought nothing measurable: a
        // compute loop run to fuel exhaustion (200M units) took no longer without them.
        config.cranelift_opt_level(wasmtime::OptLevel::None);
        config
            .enable_incremental_compilation(Arc::new(FunctionCache::default()))
            .map_err(|e| SandboxError::Instantiate(e.to_string()))?;
        config.wasm_component_model(true);
        // Calls reuse pre-reserved instance slots and memories instead of mapping fresh ones:
        // instantiation per call is the sandbox's hot path. Enough slots for the nesting limit
        // times a few concurrent calls; memories no larger than a call may use.
        let slots = u32::try_from(limits.max_depth.max(1) * 8).unwrap_or(128);
        let mut pooling = wasmtime::PoolingAllocationConfig::default();
        pooling
            .total_component_instances(slots)
            .total_core_instances(slots * 4)
            .total_memories(slots * 2)
            .total_tables(slots * 4)
            .total_stacks(slots)
            .max_memory_size(limits.memory_bytes)
            // A call touches a few hundred KiB; keeping that resident between calls saves the
            // page faults and madvise calls that otherwise dominate a short call.
            .linear_memory_keep_resident(128 << 10)
            .table_keep_resident(64 << 10);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pooling));
        config.memory_reservation(limits.memory_bytes as u64);
        config.memory_guard_size(64 << 10);
        let engine = Engine::new(&config).map_err(|e| SandboxError::Instantiate(e.to_string()))?;
        let mut linker = Linker::<MethodState>::new(&engine);
        link_granted_wasi(&mut linker).map_err(|e| SandboxError::Instantiate(e.to_string()))?;
        Method::add_to_linker::<MethodState, HasSelf<MethodState>>(&mut linker, |s| s)
            .map_err(|e| SandboxError::Instantiate(e.to_string()))?;
        Ok(Arc::new(Sandbox {
            engine,
            linker,
            limits,
            ready: Mutex::new(HashMap::new()),
        }))
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles a component to native code and reads its shape (gate 2 runs on the shape).
    pub fn load(&self, wasm: &[u8]) -> Result<(Component, Shape), SandboxError> {
        let component = Component::new(&self.engine, wasm).map_err(|e| {
            SandboxError::Refused(vec![format!("not a valid WebAssembly component: {e}")])
        })?;
        let shape = component_gate::shape(&self.engine, &component);
        Ok((component, shape))
    }

    /// Links a checked component; the result is what calls instantiate from.
    fn prepare(&self, component: &Component) -> Result<MethodPre<MethodState>, SandboxError> {
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| SandboxError::Instantiate(format!("{e:#}")))?;
        MethodPre::new(pre).map_err(|e| SandboxError::Instantiate(format!("{e:#}")))
    }

    /// Keeps a freshly installed method ready, so its first call does not compile again.
    pub fn remember(&self, method: MethodId, component: &Component) -> Result<(), SandboxError> {
        let pre = self.prepare(component)?;
        if let Ok(mut ready) = self.ready.lock() {
            ready.insert(method, pre);
        }
        Ok(())
    }

    /// Drops a prepared method (a trial's, whose id a rolled-back transaction frees again).
    pub fn forget(&self, method: MethodId) {
        if let Ok(mut ready) = self.ready.lock() {
            ready.remove(&method);
        }
    }

    fn ready(&self, tx: &Tx, method: MethodId) -> Result<MethodPre<MethodState>, SandboxError> {
        if let Some(pre) = self.ready.lock().ok().and_then(|r| r.get(&method).cloned()) {
            return Ok(pre);
        }
        let wasm = tx.method_wasm(method)?;
        let (component, shape) = self.load(&wasm)?;
        // Gate 2 again at load: the image file may have been edited since installation.
        component_gate::check(&shape).map_err(SandboxError::Refused)?;
        let pre = self.prepare(&component)?;
        if let Ok(mut ready) = self.ready.lock() {
            ready.insert(method, pre.clone());
        }
        Ok(pre)
    }

    /// Runs one call inside `tx`. A nested call (a method's `send`) runs in a savepoint, so on
    /// any error its writes are undone and its caller goes on. A client's call (depth 0) runs in
    /// `tx` as it is: on an error its caller must abandon the transaction (`Runtime` does, by
    /// returning the error out of `Image::transact`), which undoes the call's writes with it
    /// and spares every call two statements.
    pub fn invoke(self: &Arc<Self>, tx: &mut Tx, call: Call) -> Result<CallReport, SandboxError> {
        let pre = self.ready(tx, call.method)?;
        if call.depth == 0 {
            return self.run(tx, &pre, &call);
        }
        let savepoint = tx.savepoint()?;
        let result = self.run(tx, &pre, &call);
        match &result {
            Ok(_) => tx.release(savepoint)?,
            Err(_) => tx.rollback_to(savepoint)?,
        }
        result
    }

    fn run(
        self: &Arc<Self>,
        tx: &mut Tx,
        pre: &MethodPre<MethodState>,
        call: &Call,
    ) -> Result<CallReport, SandboxError> {
        let lent = tx.lend();
        let mut store = Store::new(&self.engine, MethodState::new(lent, call, Arc::clone(self)));
        store.limiter(|state| state);
        let outcome = store
            .set_fuel(self.limits.fuel)
            .and_then(|()| pre.instantiate(&mut store))
            .and_then(|method| {
                let args = Value::Array(call.args.clone()).to_string();
                method.call_invoke(&mut store, call.receiver.0 as u64, &args)
            });
        let fuel_left = store.get_fuel().unwrap_or(0);
        let state = store.into_data();
        let MethodState {
            tx: lent,
            stdout,
            stderr,
            writes,
            notified,
            log,
            memory_exceeded,
            ..
        } = state;
        tx.restore(lent);
        let stderr = String::from_utf8_lossy(&stderr.contents()).into_owned();
        let stdout = String::from_utf8_lossy(&stdout.contents()).into_owned();
        let answer = match outcome {
            Ok(Ok(answer)) => answer,
            Ok(Err(message)) => return Err(SandboxError::MethodError { message }),
            Err(e) => return Err(self.classify(e, memory_exceeded, stderr)),
        };
        let unnotified: Vec<Oid> = writes.difference(&notified).copied().collect();
        if !unnotified.is_empty() {
            return Err(SandboxError::CovenantViolation { unnotified });
        }
        let value =
            serde_json::from_str(&answer).map_err(|e| SandboxError::BadAnswer(e.to_string()))?;
        Ok(CallReport {
            value,
            log,
            stdout,
            stderr,
            fuel_used: self.limits.fuel.saturating_sub(fuel_left),
        })
    }

    fn classify(
        &self,
        error: wasmtime::Error,
        memory_exceeded: bool,
        stderr: String,
    ) -> SandboxError {
        let error = match error.downcast::<HostAbort>() {
            Ok(HostAbort::Timeout) => {
                return SandboxError::Timeout {
                    limit: self.limits.time,
                };
            }
            Ok(HostAbort::TooDeep(max)) => return SandboxError::TooDeep { max },
            // The image's own error (delegation too deep, the disk): passed on as it is.
            Ok(HostAbort::Image(e)) => return SandboxError::Image(e),
            Err(error) => error,
        };
        if memory_exceeded {
            return SandboxError::OutOfMemory {
                limit: self.limits.memory_bytes,
            };
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => SandboxError::OutOfFuel {
                fuel: self.limits.fuel,
            },
            Some(Trap::StackOverflow) => SandboxError::Trap {
                message: "stack overflow (recursion too deep)".into(),
                stderr,
            },
            Some(trap) => SandboxError::Trap {
                message: trap.to_string(),
                stderr,
            },
            None => SandboxError::Trap {
                message: format!("{error:#}"),
                stderr,
            },
        }
    }
}

/// The WASI a Rust std guest needs and the host grants: io, cli (stdio, exit, terminals, an empty
/// environment), clocks, random. Not filesystem, not sockets: a component importing those fails
/// the component gate, and could not be instantiated anyway.
fn link_granted_wasi(linker: &mut Linker<MethodState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::cli::{WasiCli, WasiCliView as _};
    use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView as _};
    use wasmtime_wasi::p2::bindings::{cli, clocks, random, sync};
    use wasmtime_wasi::random::WasiRandom;

    struct HasIo;
    impl wasmtime::component::HasData for HasIo {
        type Data<'a> = &'a mut wasmtime::component::ResourceTable;
    }

    let l = linker;
    wasmtime_wasi::p2::bindings::io::error::add_to_linker::<MethodState, HasIo>(l, |t| {
        &mut t.table
    })?;
    sync::io::poll::add_to_linker::<MethodState, HasIo>(l, |t| &mut t.table)?;
    sync::io::streams::add_to_linker::<MethodState, HasIo>(l, |t| &mut t.table)?;
    clocks::wall_clock::add_to_linker::<MethodState, WasiClocks>(l, MethodState::clocks)?;
    clocks::monotonic_clock::add_to_linker::<MethodState, WasiClocks>(l, MethodState::clocks)?;
    random::random::add_to_linker::<MethodState, WasiRandom>(l, |t| t.wasi.random())?;
    random::insecure::add_to_linker::<MethodState, WasiRandom>(l, |t| t.wasi.random())?;
    random::insecure_seed::add_to_linker::<MethodState, WasiRandom>(l, |t| t.wasi.random())?;
    cli::exit::add_to_linker::<MethodState, WasiCli>(l, MethodState::cli)?;
    cli::environment::add_to_linker::<MethodState, WasiCli>(l, MethodState::cli)?;
    cli::stdin::add_to_linker::<MethodState, WasiCli>(l, MethodState::cli)?;
    cli::stdout::add_to_linker::<MethodState, WasiCli>(l, MethodState::cli)?;
    cli::stderr::add_to_linker::<MethodState, WasiCli>(l, MethodState::cli)?;
    cli::terminal_input::add_to_linker::<MethodState, WasiCli>(l, MethodState::cli)?;
    cli::terminal_output::add_to_linker::<MethodState, WasiCli>(l, MethodState::cli)?;
    cli::terminal_stdin::add_to_linker::<MethodState, WasiCli>(l, MethodState::cli)?;
    cli::terminal_stdout::add_to_linker::<MethodState, WasiCli>(l, MethodState::cli)?;
    cli::terminal_stderr::add_to_linker::<MethodState, WasiCli>(l, MethodState::cli)?;
    Ok(())
}
