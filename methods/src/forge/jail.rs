//! The compiler's jail: rustc and its linker run where they can read the toolchain, the SDK's
//! build and their own private directory, and nothing else.
//!
//! A method's source is written by a client or a model, and rustc does what a source asks at
//! compile time (`include_str!`, `#[path]`, const evaluation). The source gate refuses what it
//! can name; the jail is the guarantee. It is bubblewrap (Debian's `bubblewrap`, user
//! namespaces): new mount, pid, network, IPC, UTS and user namespaces, no capabilities, a cleared
//! environment, a fresh `/proc` that shows only the jail's own processes, and bind mounts of
//! exactly the toolchain (at `/rust`), the SDK (at `/sdk`, read-only), the shared libraries the
//! toolchain links (read-only, at their own paths) and the job's directory (at `/job`, the only
//! writable place). The paths a diagnostic can quote are these fixed ones, never the host's.
//! Around it, `prlimit` bounds address space, CPU time, file size and core dumps; the job runs in
//! its own process group, killed whole on timeout. See `docs/decisions/0013-hardening.md`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where rustc runs.
#[derive(Debug, Clone)]
pub enum Jail {
    /// In bubblewrap (the path of `bwrap`), with these shared libraries bound in.
    Bubblewrap {
        bwrap: PathBuf,
        libraries: Vec<PathBuf>,
    },
    /// With the host's own access: only when the operator said `--unjailed-compiles`.
    Unjailed,
    /// No jail could be made, and unjailed compiles were not allowed: every compile is refused.
    Refused(String),
}

/// What a jailed compile may use.
#[derive(Debug, Clone)]
pub struct Bounds {
    pub address_space_bytes: u64,
    pub cpu_seconds: u64,
    pub file_bytes: u64,
}

/// The paths the jail shows rustc, and the host paths behind them.
#[derive(Debug)]
pub struct Mounts<'a> {
    /// The toolchain's sysroot, shown as `/rust`.
    pub sysroot: &'a Path,
    /// The SDK's target directory, shown as `/sdk`.
    pub sdk: &'a Path,
    /// The job's private directory, shown as `/job` (writable).
    pub job: &'a Path,
}

/// Where the jail shows the toolchain, the SDK and the job.
pub const SYSROOT: &str = "/rust";
pub const SDK: &str = "/sdk";
pub const JOB: &str = "/job";

impl Jail {
    /// Finds bubblewrap and checks that it can make a jail here (user namespaces may be off).
    /// Without one, compiles are refused unless `allow_unjailed`.
    pub fn detect(sysroot: &Path, allow_unjailed: bool) -> Jail {
        match probe(sysroot) {
            Ok(jail) => jail,
            Err(_) if allow_unjailed => Jail::Unjailed,
            Err(why) => Jail::Refused(why),
        }
    }

    /// One line for the host's start-up log.
    pub fn describe(&self) -> String {
        match self {
            Jail::Bubblewrap { bwrap, .. } => format!(
                "compiles run jailed in bubblewrap ({}): toolchain, SDK and a private directory only, no network",
                bwrap.display()
            ),
            Jail::Unjailed => {
                "compiles run UNJAILED (--unjailed-compiles): a method's source can read what this user can".into()
            }
            Jail::Refused(why) => format!(
                "compiles are refused: no jail for the compiler ({why}); install bubblewrap (scripts/setup does) or pass --unjailed-compiles"
            ),
        }
    }

    /// The command that runs `rustc ARGS` in the jail, within `bounds`; `args` name paths as
    /// the jail shows them (see [`SYSROOT`], [`SDK`], [`JOB`]).
    pub fn command(&self, mounts: &Mounts<'_>, bounds: &Bounds, args: &[String]) -> Command {
        let mut command = Command::new("prlimit");
        command
            .arg(format!("--as={}", bounds.address_space_bytes))
            .arg(format!("--cpu={}", bounds.cpu_seconds))
            .arg(format!("--fsize={}", bounds.file_bytes))
            .arg("--core=0")
            .arg("--");
        match self {
            Jail::Bubblewrap { bwrap, libraries } => {
                command.arg(bwrap).args([
                    "--unshare-all",
                    "--die-with-parent",
                    "--new-session",
                    "--cap-drop",
                    "ALL",
                    "--clearenv",
                    "--setenv",
                    "PATH",
                    "/rust/bin",
                    "--setenv",
                    "TMPDIR",
                    JOB,
                    "--proc",
                    "/proc",
                    "--dev",
                    "/dev",
                ]);
                for library in libraries {
                    command.arg("--ro-bind").arg(library).arg(library);
                }
                command
                    .arg("--ro-bind")
                    .arg(mounts.sysroot)
                    .arg(SYSROOT)
                    .arg("--ro-bind")
                    .arg(mounts.sdk)
                    .arg(SDK)
                    .arg("--bind")
                    .arg(mounts.job)
                    .arg(JOB)
                    .args(["--chdir", JOB, "/rust/bin/rustc"])
                    .args(args);
            }
            Jail::Unjailed | Jail::Refused(_) => {
                // Unjailed, the jail's paths are the host's own: the caller maps them back.
                command
                    .arg(mounts.sysroot.join("bin/rustc"))
                    .args(args.iter().map(|a| unjailed_arg(a, mounts)))
                    .env_clear()
                    .env(
                        "PATH",
                        format!("{}:/usr/bin:/bin", mounts.sysroot.join("bin").display()),
                    )
                    .env("TMPDIR", mounts.job)
                    .current_dir(mounts.job);
            }
        }
        command
    }
}

/// An argument with the jail's paths replaced by the host's.
fn unjailed_arg(arg: &str, mounts: &Mounts<'_>) -> String {
    arg.replace(SYSROOT, &mounts.sysroot.display().to_string())
        .replace(SDK, &mounts.sdk.display().to_string())
        .replace(JOB, &mounts.job.display().to_string())
}

/// Finds `bwrap`, lists the libraries the toolchain links, and runs `true` in a jail like the
/// real one, so a host without user namespaces finds out at start, not at the first compile.
fn probe(sysroot: &Path) -> Result<Jail, String> {
    let bwrap = ["/usr/bin/bwrap", "/bin/bwrap", "/usr/local/bin/bwrap"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| "bubblewrap (`bwrap`) is not installed".to_owned())?;
    let libraries = linked_libraries(sysroot)?;
    let jail = Jail::Bubblewrap {
        bwrap: bwrap.clone(),
        libraries,
    };
    let scratch = tempfile::tempdir().map_err(|e| format!("no temporary directory: {e}"))?;
    let mounts = Mounts {
        sysroot,
        sdk: scratch.path(),
        job: scratch.path(),
    };
    let bounds = Bounds {
        address_space_bytes: 1 << 30,
        cpu_seconds: 10,
        file_bytes: 1 << 20,
    };
    let output = jail
        .command(&mounts, &bounds, &["-V".to_owned()])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run prlimit and bwrap: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "bubblewrap cannot make a jail here (are user namespaces off?): {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(jail)
}

/// The shared libraries rustc, its driver and its linkers load from outside the toolchain, as
/// `ldd` resolves them (their own paths; the dynamic loader among them).
fn linked_libraries(sysroot: &Path) -> Result<Vec<PathBuf>, String> {
    let mut binaries = vec![sysroot.join("bin/rustc")];
    let host_bin = sysroot.join("lib/rustlib/x86_64-unknown-linux-gnu/bin");
    for name in ["wasm-component-ld", "rust-lld"] {
        binaries.push(host_bin.join(name));
    }
    if let Ok(entries) = std::fs::read_dir(sysroot.join("lib")) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("librustc_driver") || name.starts_with("libLLVM") {
                binaries.push(entry.path());
            }
        }
    }
    let mut libraries = std::collections::BTreeSet::new();
    for binary in binaries.iter().filter(|b| b.exists()) {
        let output = Command::new("ldd")
            .arg(binary)
            .output()
            .map_err(|e| format!("cannot run ldd: {e}"))?;
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            for word in line.split_whitespace() {
                let path = Path::new(word);
                if path.is_absolute() && !path.starts_with(sysroot) && path.exists() {
                    libraries.insert(path.to_owned());
                }
            }
        }
    }
    if libraries.is_empty() {
        return Err("ldd named no libraries for rustc".into());
    }
    Ok(libraries.into_iter().collect())
}
