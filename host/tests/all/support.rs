//! Shared helpers: temporary images, the real `batos` binary, and child processes re-executed
//! from this test binary (for locks and crashes that need a second process).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;

use serde_json::Value;

use batos::image::{Durability, Image};

/// Images made by these tests have no mind unless a test asks for one: importing the model into
/// every scratch image would cost time and disk for nothing (tests/mind covers the mind).
pub const MIND: &str = "none";
/// Where a test does ask for the image's mind, any model will do: the small one (the suite
/// never needs the 1.1 GB default).
pub const MODEL: &str = "smollm2-135m";

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
            .env("BATOS_MIND", MIND)
            .env("BATOS_MODEL", MODEL)
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
        .env("BATOS_MIND", MIND)
        .env("BATOS_MODEL", MODEL)
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

/// A running `batos serve` on a loopback TCP port, with its image in a scratch directory.
pub struct Host {
    pub child: Child,
    pub endpoint: String,
    pub scratch: Scratch,
    /// The host's log after it said it serves.
    pub log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Host {
    pub fn start(durability: &str) -> Host {
        Self::start_in(Scratch::new(), durability)
    }

    pub fn start_in(scratch: Scratch, durability: &str) -> Host {
        Self::start_with(scratch, durability, MIND)
    }

    /// A host running `mind` (`none`, `image`, ...).
    pub fn start_with(scratch: Scratch, durability: &str, mind: &str) -> Host {
        Self::start_with_args(scratch, durability, mind, &[])
    }

    /// The same, with more arguments for `serve`.
    pub fn start_with_args(scratch: Scratch, durability: &str, mind: &str, extra: &[&str]) -> Host {
        // Loopback TCP on a port the kernel just handed out (and we handed back).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let endpoint = format!("tcp://127.0.0.1:{port}");
        let mut child = Command::new(env!("CARGO_BIN_EXE_batos"))
            .env("BATOS_MIND", mind)
            .env("BATOS_MODEL", MODEL)
            .arg("--image")
            .arg(scratch.image_path())
            .args([
                "--durability",
                durability,
                "serve",
                "--bind",
                &endpoint,
                "--workers",
                "4",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("batos serve starts");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        for line in lines.by_ref() {
            let line = line.expect("host log");
            if line.contains("serving") {
                break;
            }
        }
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Ok(mut log) = sink.lock() {
                    log.push(line);
                }
            }
        });
        Host {
            child,
            endpoint,
            scratch,
            log,
        }
    }

    /// A DEALER whose requests carry the image's full token.
    pub fn dealer(&self) -> Dealer {
        let socket = zmq::Context::new().socket(zmq::DEALER).expect("dealer");
        socket.set_linger(0).expect("linger");
        socket.connect(&self.endpoint).expect("connect");
        Dealer::wrap(socket, self.token())
    }

    /// A DEALER that sends exactly what it is given (no token).
    pub fn stranger(&self) -> Dealer {
        let socket = zmq::Context::new().socket(zmq::DEALER).expect("dealer");
        socket.set_linger(0).expect("linger");
        socket.connect(&self.endpoint).expect("connect");
        Dealer {
            socket,
            token: None,
        }
    }

    /// The image's full token, from its file beside the image.
    pub fn token(&self) -> String {
        batos::access::read_full_token(&self.scratch.image_path()).expect("the host made a token")
    }

    /// Gives up the host (already stopped) but keeps its directory and image.
    pub fn into_scratch(mut self) -> Scratch {
        std::mem::replace(&mut self.scratch, Scratch::new())
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("host exits")
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client socket that puts its token into every JSON object request it sends.
pub struct Dealer {
    socket: zmq::Socket,
    token: Option<String>,
}

impl Dealer {
    pub fn wrap(socket: zmq::Socket, token: String) -> Dealer {
        Dealer {
            socket,
            token: Some(token),
        }
    }

    /// Sends `data`, with the token added if it is a JSON object that has none.
    pub fn send(&self, data: impl AsRef<[u8]>, flags: i32) -> zmq::Result<()> {
        let data = data.as_ref();
        let signed = match (&self.token, serde_json::from_slice::<Value>(data)) {
            (Some(token), Ok(Value::Object(mut request))) if !request.contains_key("token") => {
                request.insert("token".into(), Value::String(token.clone()));
                Value::Object(request).to_string().into_bytes()
            }
            _ => data.to_vec(),
        };
        self.socket.send(signed, flags)
    }
}

impl std::ops::Deref for Dealer {
    type Target = zmq::Socket;
    fn deref(&self) -> &zmq::Socket {
        &self.socket
    }
}

/// One request over a DEALER, waiting for its reply.
pub fn ask(socket: &Dealer, request: Value) -> Value {
    socket
        .send(request.to_string().as_bytes(), 0)
        .expect("send");
    let reply = socket.recv_bytes(0).expect("reply");
    serde_json::from_slice(&reply).expect("reply is JSON")
}
