//! Shared helpers: temporary images, the real `batos` binary, and child processes re-executed
//! from this test binary (for locks and crashes that need a second process).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use batos::image::{Durability, Image};

/// A fresh directory with a path for an image in it (the image is not created).
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Scratch {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    pub fn image_path(&self) -> PathBuf {
        self.dir.path().join("image.db")
    }

    /// Creates the image from genesis and closes it again.
    pub fn with_image(self) -> Self {
        drop(Image::create(&self.image_path(), Durability::Full).expect("genesis"));
        self
    }

    /// Runs the real `batos` binary on this scratch image file (`--offline`: no host).
    pub fn batos(&self, args: &[&str]) -> Output {
        batos_at(&self.image_path(), args)
    }

    /// Runs `batos` as a client of the host at `endpoint`.
    pub fn batos_via(&self, endpoint: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_batos"))
            .arg("--image")
            .arg(self.image_path())
            .arg("--endpoint")
            .arg(endpoint)
            .args(args)
            .output()
            .expect("batos runs")
    }
}

pub fn batos_at(image: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_batos"))
        .arg("--offline")
        .arg("--image")
        .arg(image)
        .args(args)
        .output()
        .expect("batos runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_owned()
}

/// Environment variable that turns a `*_child` test into the child process's body.
pub const CHILD_ENV: &str = "BATOS_TEST_CHILD";

/// Re-executes this test binary running only the test `name`, with `CHILD_ENV` set to `arg`.
pub fn spawn_child(name: &str, arg: &str) -> Child {
    Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, arg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("child process starts")
}

/// Reads the child's stdout lines containing `prefix`, calling `f` with the rest until it
/// answers false. Returns how many such lines were read.
pub fn read_child_lines(child: &mut Child, prefix: &str, mut f: impl FnMut(&str) -> bool) -> usize {
    let out = child.stdout.take().expect("child stdout");
    let mut lines = BufReader::new(out).lines();
    let mut n = 0;
    for line in lines.by_ref() {
        let Ok(line) = line else { break };
        // The harness may print "test name ... " on the same line before the child's output.
        if let Some((_, rest)) = line.split_once(prefix) {
            n += 1;
            if !f(rest) {
                break;
            }
        }
    }
    // Keep draining, so the child never dies of a closed pipe before the test means it to.
    std::thread::spawn(move || lines.for_each(drop));
    n
}

/// `PRAGMA integrity_check` on the image file says `ok`.
pub fn integrity_ok(image: &Path) {
    let conn = rusqlite::Connection::open(image).expect("sqlite");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(check, "ok");
}
