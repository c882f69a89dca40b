//! The forge: one method's Rust source to a WebAssembly component.
//!
//! The guest SDK (`guest-sdk/`, embedded in this binary) is built once per toolchain for
//! `wasm32-wasip2` into the cache directory; then each method is one bare `rustc` run against the
//! prebuilt SDK (no cargo project per method), in a private temporary directory, with a cleared
//! environment, a time limit and an output size limit. The method's source goes in unchanged (so
//! diagnostics keep its line numbers) with the SDK's glue appended. Results are cached by the
//! hash of the source, the SDK and the compiler.

pub mod jail;

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub use jail::Jail;

/// The SDK's files, as this binary was built with them.
const SDK_FILES: &[(&str, &str)] = &[
    (
        "guest-sdk/Cargo.toml",
        include_str!("../../guest-sdk/Cargo.toml"),
    ),
    (
        "guest-sdk/Cargo.lock",
        include_str!("../../guest-sdk/Cargo.lock"),
    ),
    (
        "guest-sdk/src/lib.rs",
        include_str!("../../guest-sdk/src/lib.rs"),
    ),
    ("wit/batos.wit", include_str!("../../wit/batos.wit")),
];

/// How every method is compiled. A 256 KiB wasm stack (the toolchain's default is 1 MiB) keeps the
/// memory a call touches small, which is most of what a fresh instance costs; part of the cache key.
const CODEGEN_FLAGS: &[&str] = &[
    "-C",
    "opt-level=1",
    "-C",
    "debuginfo=0",
    "-C",
    "strip=symbols",
    "-C",
    "link-arg=-zstack-size=65536",
];

/// Appended to every method: the export of `run` as the contract's `invoke`.
const GLUE: &str = include_str!("../../guest-sdk/glue.rs");

#[derive(Debug, Clone)]
pub struct ForgeLimits {
    /// How long one `rustc` may run.
    pub compile_time: Duration,
    /// The largest component accepted.
    pub max_wasm_bytes: u64,
    /// How much of the compiler's diagnostics is kept.
    pub max_diagnostics_bytes: usize,
    /// The largest source accepted.
    pub max_source_bytes: usize,
    /// The address space one compile may map (rustc and its linker, each).
    pub address_space_bytes: u64,
    /// The largest file a compile may write.
    pub file_bytes: u64,
    /// How many compiles run at once; the rest wait their turn (cached results never wait).
    pub concurrent: usize,
    /// Compile with the host's own access when no jail can be made (`--unjailed-compiles`).
    pub allow_unjailed: bool,
    /// Told of the guest SDK's one-time build (the host shows progress); without one, the
    /// build's start and end are logged.
    pub on_sdk_build: Option<SdkHook>,
}

/// A step of the guest SDK's one-time build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdkBuild {
    Started,
    Done,
    Failed,
}

/// Whoever shows the SDK build's progress.
#[derive(Clone)]
pub struct SdkHook(pub std::sync::Arc<dyn Fn(SdkBuild) + Send + Sync>);

impl std::fmt::Debug for SdkHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SdkHook")
    }
}

impl Default for ForgeLimits {
    fn default() -> Self {
        ForgeLimits {
            compile_time: Duration::from_secs(60),
            max_wasm_bytes: 16 << 20,
            max_diagnostics_bytes: 32 << 10,
            max_source_bytes: 256 << 10,
            address_space_bytes: 3 << 29,
            file_bytes: 64 << 20,
            concurrent: default_concurrent_compiles(),
            allow_unjailed: std::env::var_os("BATOS_UNJAILED_COMPILES").is_some_and(|v| v == "1"),
            on_sdk_build: None,
        }
    }
}

/// One compile per two cores (at least one): compiles never take every core from the workers.
pub fn default_concurrent_compiles() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get() / 2)
        .unwrap_or(1)
        .max(1)
}

#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    #[error("the method does not compile:\n{diagnostics}")]
    CompileFailed {
        diagnostics: String,
        /// rustc's JSON diagnostics that carry machine-applicable suggestions, one per line.
        suggestions: String,
    },
    #[error("compiling took longer than {0:?}")]
    Timeout(Duration),
    #[error("the method source is {size} bytes, more than the limit of {limit}")]
    SourceTooLarge { size: usize, limit: usize },
    #[error("the compiled component is {size} bytes, more than the limit of {limit}")]
    OutputTooLarge { size: u64, limit: u64 },
    #[error("{0}")]
    NoJail(String),
    #[error("no Rust toolchain for methods: {0}")]
    Toolchain(String),
    #[error("building the guest SDK failed:\n{0}")]
    Sdk(String),
    #[error("forge file error at {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ForgeError + '_ {
    move |source| ForgeError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A compiled method.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub wasm: Vec<u8>,
    /// SHA-256 of the component, hex.
    pub sha256: String,
    /// Wall time of the compile (near zero when cached).
    pub millis: f64,
    pub cached: bool,
    /// Warnings the compiler printed, if any.
    pub warnings: String,
}

/// The toolchain, the prebuilt SDK and the cache.
#[derive(Debug)]
pub struct Forge {
    sysroot: PathBuf,
    rustc_version: String,
    /// `.../wasm32-wasip2/release` (holds `libbatos_sdk.rlib` and `deps/`).
    sdk_dir: PathBuf,
    /// Hash of SDK sources and compiler: part of every cache key.
    sdk_key: String,
    cache: PathBuf,
    limits: ForgeLimits,
    jail: Jail,
    turns: Turns,
}

/// At most `max` compiles at once; the others wait here (a counting semaphore).
#[derive(Debug)]
struct Turns {
    running: Mutex<usize>,
    freed: Condvar,
    max: usize,
}

/// A compile's turn; the next waiter goes when it is dropped.
struct Turn<'a>(&'a Turns);

impl Turns {
    fn take(&self) -> Turn<'_> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        while *running >= self.max {
            running = self.freed.wait(running).unwrap_or_else(|p| p.into_inner());
        }
        *running += 1;
        Turn(self)
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut running = self.0.running.lock().unwrap_or_else(|p| p.into_inner());
        *running = running.saturating_sub(1);
        self.0.freed.notify_one();
    }
}

/// Where batos keeps build products that are not image data: `$BATOS_CACHE`, else
/// `$XDG_CACHE_HOME/batos`, else `~/.cache/batos`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BATOS_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("batos");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("batos")
}

impl Forge {
    /// Finds the toolchain and builds the SDK if this toolchain has not built it yet (the first
    /// time takes a minute; later opens are instant).
    pub fn open(cache: &Path, limits: ForgeLimits) -> Result<Forge, ForgeError> {
        let sysroot = run_text(Command::new("rustc").args(["--print", "sysroot"]))
            .map_err(|e| ForgeError::Toolchain(format!("`rustc --print sysroot` failed: {e}")))?;
        let sysroot = PathBuf::from(sysroot.trim());
        if !sysroot.join("lib/rustlib/wasm32-wasip2").exists() {
            return Err(ForgeError::Toolchain(
                "the wasm32-wasip2 target is missing: run `rustup target add wasm32-wasip2` (scripts/setup does)".into(),
            ));
        }
        let rustc_version = run_text(Command::new(sysroot.join("bin/rustc")).arg("-vV"))
            .map_err(|e| ForgeError::Toolchain(format!("`rustc -vV` failed: {e}")))?;
        let mut hasher = Sha256::new();
        for (name, text) in SDK_FILES {
            hasher.update(name.as_bytes());
            hasher.update(text.as_bytes());
        }
        hasher.update(GLUE.as_bytes());
        hasher.update(rustc_version.as_bytes());
        hasher.update(CODEGEN_FLAGS.join(" ").as_bytes());
        let sdk_key = hex::encode(&hasher.finalize()[..8]);
        let root = cache.join("sdk").join(&sdk_key);
        let target = root.join("target");
        let sdk_dir = target.join("wasm32-wasip2/release");
        let jail = Jail::detect(&sysroot, limits.allow_unjailed);
        let turns = Turns {
            running: Mutex::new(0),
            freed: Condvar::new(),
            max: limits.concurrent.max(1),
        };
        let forge = Forge {
            jail,
            turns,
            sysroot,
            rustc_version,
            sdk_dir,
            sdk_key,
            cache: cache.to_owned(),
            limits,
        };
        forge.build_sdk(&root)?;
        Ok(forge)
    }

    fn sdk_step(&self, step: SdkBuild) {
        match &self.limits.on_sdk_build {
            Some(hook) => (hook.0)(step),
            None => tracing::info!("the guest SDK's one-time build: {step:?}"),
        }
    }

    fn build_sdk(&self, root: &Path) -> Result<(), ForgeError> {
        let done = root.join("built");
        if done.exists() {
            return Ok(());
        }
        fs::create_dir_all(root).map_err(io(root))?;
        // One builder at a time across processes; the others wait, then find it built.
        let lock_path = root.join("lock");
        let lock = File::create(&lock_path).map_err(io(&lock_path))?;
        lock.lock().map_err(io(&lock_path))?;
        if done.exists() {
            return Ok(());
        }
        let src = root.join("src");
        for (name, text) in SDK_FILES {
            let path = src.join(name);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(io(parent))?;
            }
            fs::write(&path, text).map_err(io(&path))?;
        }
        self.sdk_step(SdkBuild::Started);
        let output = Command::new("cargo")
            .args([
                "build",
                "--locked",
                "--release",
                "--target",
                "wasm32-wasip2",
            ])
            .current_dir(src.join("guest-sdk"))
            .env("CARGO_TARGET_DIR", root.join("target"))
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| ForgeError::Toolchain(format!("cannot run cargo: {e}")));
        let output = match output {
            Ok(output) => output,
            Err(e) => {
                self.sdk_step(SdkBuild::Failed);
                return Err(e);
            }
        };
        self.sdk_step(if output.status.success() {
            SdkBuild::Done
        } else {
            SdkBuild::Failed
        });
        if !output.status.success() {
            return Err(ForgeError::Sdk(
                String::from_utf8_lossy(&output.stderr).into_owned(),
            ));
        }
        if !self.sdk_dir.join("libbatos_sdk.rlib").exists() {
            return Err(ForgeError::Sdk(
                "cargo succeeded but libbatos_sdk.rlib is missing".into(),
            ));
        }
        fs::write(&done, &self.rustc_version).map_err(io(&done))?;
        Ok(())
    }

    /// Where compiles run.
    pub fn jail(&self) -> &Jail {
        &self.jail
    }

    pub fn rustc_version(&self) -> &str {
        self.rustc_version.lines().next().unwrap_or_default()
    }

    /// Compiles one method source. The source gate is the caller's business (see `method`).
    pub fn compile(&self, source: &str) -> Result<Compiled, ForgeError> {
        if source.len() > self.limits.max_source_bytes {
            return Err(ForgeError::SourceTooLarge {
                size: source.len(),
                limit: self.limits.max_source_bytes,
            });
        }
        let started = Instant::now();
        let key = {
            let mut h = Sha256::new();
            h.update(self.sdk_key.as_bytes());
            h.update(source.as_bytes());
            hex::encode(h.finalize())
        };
        let cached = self.cache.join("methods").join(format!("{key}.wasm"));
        if let Ok(wasm) = fs::read(&cached) {
            return Ok(Compiled {
                sha256: hex::encode(Sha256::digest(&wasm)),
                wasm,
                millis: started.elapsed().as_secs_f64() * 1000.0,
                cached: true,
                warnings: String::new(),
            });
        }
        if let Jail::Refused(_) = &self.jail {
            return Err(ForgeError::NoJail(self.jail.describe()));
        }
        let _turn = self.turns.take();
        let started = Instant::now();
        let tmp_root = self.cache.join("tmp");
        fs::create_dir_all(&tmp_root).map_err(io(&tmp_root))?;
        let dir = tempfile::Builder::new()
            .prefix("forge-")
            .tempdir_in(&tmp_root)
            .map_err(io(&tmp_root))?;
        let src = dir.path().join("method.rs");
        fs::write(&src, format!("{source}\n{GLUE}")).map_err(io(&src))?;
        let diagnostics_path = dir.path().join("diagnostics.txt");
        // Read and write: the diagnostics are read back through this same descriptor.
        let diagnostics_file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&diagnostics_path)
            .map_err(io(&diagnostics_path))?;
        // Read back through this descriptor, never by name: the job's directory is writable
        // from inside the jail, so the name could be made to point anywhere.
        let mut diagnostics_back = diagnostics_file
            .try_clone()
            .map_err(io(&diagnostics_path))?;
        let sdk_root = self
            .sdk_dir
            .parent()
            .and_then(Path::parent)
            .unwrap_or(&self.sdk_dir);
        let mounts = jail::Mounts {
            sysroot: &self.sysroot,
            sdk: sdk_root,
            job: dir.path(),
        };
        let bounds = jail::Bounds {
            address_space_bytes: self.limits.address_space_bytes,
            cpu_seconds: self.limits.compile_time.as_secs().max(1),
            file_bytes: self.limits.file_bytes,
        };
        let sdk = jail::SDK;
        let mut args: Vec<String> = [
            "--edition",
            "2024",
            "--crate-type",
            "cdylib",
            "--crate-name",
            "method",
            "--target",
            "wasm32-wasip2",
            "--color",
            "never",
            // Machine-readable, so that rustc's machine-applicable suggestions can be applied
            // (cognition's fixes); the text a user reads is each diagnostic's `rendered` form.
            "--error-format",
            "json",
            "--cap-lints",
            "warn",
        ]
        .iter()
        .chain(CODEGEN_FLAGS)
        .chain(&["-A", "unused-variables", "-A", "dead-code"])
        .map(|a| (*a).to_owned())
        .collect();
        args.extend([
            "--extern".to_owned(),
            format!("batos_sdk={sdk}/wasm32-wasip2/release/libbatos_sdk.rlib"),
            format!("-Ldependency={sdk}/wasm32-wasip2/release/deps"),
            format!("-Ldependency={sdk}/release/deps"),
            "method.rs".to_owned(),
            "-o".to_owned(),
            format!("{}/method.wasm", jail::JOB),
        ]);
        let out = dir.path().join("method.wasm");
        let mut child = self
            .jail
            .command(&mounts, &bounds, &args)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(diagnostics_file)
            .spawn()
            .map_err(|e| ForgeError::Toolchain(format!("cannot run rustc: {e}")))?;
        let status = loop {
            if let Some(status) = child.try_wait().map_err(io(&src))? {
                break status;
            }
            if started.elapsed() > self.limits.compile_time {
                kill_group(&mut child);
                return Err(ForgeError::Timeout(self.limits.compile_time));
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let (diagnostics, suggestions) = {
            use std::io::Seek;
            let _ = diagnostics_back.seek(std::io::SeekFrom::Start(0));
            self.read_diagnostics(&mut diagnostics_back, dir.path())
        };
        if !status.success() {
            return Err(ForgeError::CompileFailed {
                diagnostics,
                suggestions,
            });
        }
        // The component by name, but only a regular file (not a link the jail's side made).
        let meta = fs::symlink_metadata(&out).map_err(io(&out))?;
        if !meta.file_type().is_file() {
            return Err(ForgeError::CompileFailed {
                diagnostics: "the compiler's output is not a regular file".into(),
                suggestions: String::new(),
            });
        }
        let size = meta.len();
        if size > self.limits.max_wasm_bytes {
            return Err(ForgeError::OutputTooLarge {
                size,
                limit: self.limits.max_wasm_bytes,
            });
        }
        let wasm = fs::read(&out).map_err(io(&out))?;
        if let Some(parent) = cached.parent() {
            let _ = fs::create_dir_all(parent);
            // Write then rename: a reader never sees half a component.
            // A name of its own: two processes compiling the same source never share a file.
            let partial = cached.with_extension(format!("{}.partial", std::process::id()));
            if fs::write(&partial, &wasm).is_ok() {
                let _ = fs::rename(&partial, &cached);
            }
        }
        Ok(Compiled {
            sha256: hex::encode(Sha256::digest(&wasm)),
            wasm,
            millis: started.elapsed().as_secs_f64() * 1000.0,
            cached: false,
            warnings: diagnostics,
        })
    }

    /// The compiler's output, bounded, with the private directory's path taken out: the text a
    /// user reads (each JSON diagnostic's rendered form, any other line as it is) and the JSON
    /// lines that carry suggestions (for cognition's fixes).
    fn read_diagnostics(&self, file: &mut File, dir: &Path) -> (String, String) {
        let mut bytes = Vec::new();
        let limit = self.limits.max_diagnostics_bytes as u64;
        // JSON takes several times the rendered text's bytes.
        let raw_limit = limit.saturating_mul(JSON_BYTES_PER_TEXT_BYTE);
        let _ = file.take(raw_limit + 1).read_to_end(&mut bytes);
        let mut truncated = bytes.len() as u64 > raw_limit;
        bytes.truncate(raw_limit as usize);
        if truncated {
            // The line the cut went through is half a JSON diagnostic: never shown as text.
            let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            bytes.truncate(whole);
        }
        // Lossy: a cut inside a multi-byte character must not lose the whole text. No host path
        // reaches a client: the job's directory goes, the toolchain and the SDK show as the
        // jail names them (an unjailed rustc quotes the host's paths), the cache and home go.
        let mut raw = String::from_utf8_lossy(&bytes)
            .replace(&format!("{}/", dir.display()), "")
            .replace(&format!("{}/", jail::JOB), "")
            .replace(&self.sysroot.display().to_string(), jail::SYSROOT)
            .replace(&self.cache.display().to_string(), "$BATOS_CACHE");
        if let Some(home) = std::env::var_os("HOME").filter(|h| h.len() > 1) {
            raw = raw.replace(&*home.to_string_lossy(), "~");
        }
        let mut text = String::new();
        let mut suggestions = String::new();
        for line in raw.lines() {
            match serde_json::from_str::<serde_json::Value>(line) {
                Ok(diagnostic) if diagnostic.get("$message_type").is_some() => {
                    if let Some(rendered) = diagnostic.get("rendered").and_then(|r| r.as_str()) {
                        text.push_str(rendered);
                    }
                    if line.contains("\"suggestion_applicability\":\"MachineApplicable\"") {
                        suggestions.push_str(line);
                        suggestions.push('\n');
                    }
                }
                _ => {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
        if text.len() as u64 > limit {
            let mut cut = limit as usize;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            truncated = true;
        }
        if truncated {
            text.push_str("\n[… diagnostics truncated]");
        }
        (text, suggestions)
    }
}

/// How many bytes of rustc's JSON diagnostics are read per byte of rendered text kept.
const JSON_BYTES_PER_TEXT_BYTE: u64 = 8;

/// Kills a compile and everything it started (its process group), and reaps it.
fn kill_group(child: &mut std::process::Child) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn run_text(command: &mut Command) -> Result<String, String> {
    let output = command.output().map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
