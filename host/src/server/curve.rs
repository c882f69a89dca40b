//! ZeroMQ CURVE for a host bound beyond loopback: the connection is encrypted, the host is who
//! its public key says, and only clients whose public keys are on the image's allow-list connect.
//!
//! Beside the image, in `IMAGE.curve/` (mode 0700): `server.secret` (the host's secret key, Z85,
//! mode 0600), `server.public` (its public key, Z85: give it to clients) and `clients` (one
//! client public key per line, Z85; `#` starts a comment). The allow-list is read again on every
//! connection, so a key added there is let in without a restart. A ZAP handler (ZeroMQ's
//! authentication protocol, RFC 27) on `inproc://zeromq.zap.01` answers libzmq's question for
//! each connection. Tokens are still asked for on top: CURVE says which machine may connect,
//! the token what it may do.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The host's CURVE keys, and where its allow-list lives.
#[derive(Debug)]
pub struct Curve {
    secret: Vec<u8>,
    pub public_z85: String,
    pub clients: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum CurveError {
    #[error(
        "this libzmq has no CURVE support (built without libsodium): a host beyond loopback cannot be served"
    )]
    Unsupported,
    #[error("CURVE keys at {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the CURVE key in {} is not a Z85 key of 32 bytes", .0.display())]
    BadKey(PathBuf),
    #[error("ZeroMQ: {0}")]
    Zmq(#[from] zmq::Error),
}

/// `IMAGE.curve`: the directory of the image's CURVE keys.
pub fn directory(image: &Path) -> PathBuf {
    let mut name = image.as_os_str().to_owned();
    name.push(".curve");
    PathBuf::from(name)
}

/// Whether an endpoint can only be reached from this machine.
pub fn is_loopback(endpoint: &str) -> bool {
    if endpoint.starts_with("ipc://") || endpoint.starts_with("inproc://") {
        return true;
    }
    let Some(rest) = endpoint.strip_prefix("tcp://") else {
        return false;
    };
    let host = match rest.rsplit_once(':') {
        Some((host, _port)) => host.trim_start_matches('[').trim_end_matches(']'),
        None => rest,
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Curve {
    /// The image's keys, made now where missing (and an empty allow-list).
    pub fn ensure(image: &Path) -> Result<Curve, CurveError> {
        if !zmq::has("curve").unwrap_or(false) {
            return Err(CurveError::Unsupported);
        }
        let dir = directory(image);
        let (secret_path, public_path) = ensure_pair(&dir, "server")?;
        let clients = dir.join("clients");
        if !clients.exists() {
            std::fs::write(
                &clients,
                "# Public keys (Z85) of the clients this host lets connect, one per line.\n",
            )
            .map_err(io_at(&clients))?;
        }
        let secret = read_key(&secret_path)?;
        let public_z85 = std::fs::read_to_string(&public_path)
            .map_err(io_at(&public_path))?
            .trim()
            .to_owned();
        read_key(&public_path)?;
        Ok(Curve {
            secret,
            public_z85,
            clients,
        })
    }

    /// Makes `socket` a CURVE server with the host's secret key.
    pub fn serve(&self, socket: &zmq::Socket) -> Result<(), CurveError> {
        socket.set_curve_server(true)?;
        socket.set_curve_secretkey(&self.secret)?;
        socket.set_zap_domain("batos")?;
        Ok(())
    }

    /// Starts the ZAP handler: every connection's client key is checked against the allow-list
    /// file, read again each time. Runs until `stop`.
    pub fn authenticate(
        &self,
        context: &zmq::Context,
        stop: Arc<AtomicBool>,
    ) -> Result<std::thread::JoinHandle<()>, CurveError> {
        let handler = context.socket(zmq::REP)?;
        handler.set_linger(0)?;
        handler.bind("inproc://zeromq.zap.01")?;
        let clients = self.clients.clone();
        std::thread::Builder::new()
            .name("batos-zap".into())
            .spawn(move || zap(&handler, &clients, &stop))
            .map_err(|e| CurveError::Io {
                path: PathBuf::from("batos-zap"),
                source: e,
            })
    }
}

/// A client's CURVE key pair: public (Z85) and secret (raw) keys, kept in the user's config
/// directory (`$XDG_CONFIG_HOME/batos/`, else `~/.config/batos/`: `client.public`, and
/// `client.secret` mode 0600), made on first use. The public key is what a host's allow-list
/// holds.
#[derive(Debug)]
pub struct ClientKeys {
    pub public_z85: String,
    pub public: Vec<u8>,
    pub secret: Vec<u8>,
}

impl ClientKeys {
    pub fn ensure() -> Result<ClientKeys, CurveError> {
        if !zmq::has("curve").unwrap_or(false) {
            return Err(CurveError::Unsupported);
        }
        let dir = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .unwrap_or_else(std::env::temp_dir)
            .join("batos");
        let (secret_path, public_path) = ensure_pair(&dir, "client")?;
        let secret = read_key(&secret_path)?;
        let public = read_key(&public_path)?;
        let public_z85 = zmq::z85_encode(&public).map_err(|_| CurveError::BadKey(public_path))?;
        Ok(ClientKeys {
            public_z85,
            public,
            secret,
        })
    }
}

/// A host's public key, from its Z85 text.
pub fn server_key(z85: &str) -> Option<Vec<u8>> {
    zmq::z85_decode(z85.trim()).ok().filter(|k| k.len() == 32)
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> CurveError + '_ {
    move |source| CurveError::Io {
        path: path.to_owned(),
        source,
    }
}

/// `DIR/NAME.secret` (mode 0600) and `DIR/NAME.public`, Z85, made in a 0700 directory if
/// missing; answers their paths.
fn ensure_pair(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), CurveError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_at(dir))?;
    let secret_path = dir.join(format!("{name}.secret"));
    let public_path = dir.join(format!("{name}.public"));
    if !secret_path.exists() {
        let pair = zmq::CurveKeyPair::new()?;
        let secret = zmq::z85_encode(&pair.secret_key)
            .map_err(|_| CurveError::BadKey(secret_path.clone()))?;
        let public = zmq::z85_encode(&pair.public_key)
            .map_err(|_| CurveError::BadKey(public_path.clone()))?;
        write_private(&secret_path, &secret).map_err(io_at(&secret_path))?;
        std::fs::write(&public_path, format!("{public}\n")).map_err(io_at(&public_path))?;
    }
    Ok((secret_path, public_path))
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

fn read_key(path: &Path) -> Result<Vec<u8>, CurveError> {
    let text = std::fs::read_to_string(path).map_err(|source| CurveError::Io {
        path: path.to_owned(),
        source,
    })?;
    match zmq::z85_decode(text.trim()) {
        Ok(key) if key.len() == 32 => Ok(key),
        _ => Err(CurveError::BadKey(path.to_owned())),
    }
}

/// The allow-list: the keys in the file (unreadable or bad lines are skipped, and let nobody in).
/// A comment is a whole line starting with `#`: Z85 itself has `#` among its characters.
fn allowed(clients: &Path) -> Vec<Vec<u8>> {
    std::fs::read_to_string(clients)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| zmq::z85_decode(l).ok().filter(|k| k.len() == 32))
        .collect()
}

/// RFC 27: [version, request id, domain, address, identity, mechanism, credentials…] in;
/// [version, request id, status code, status text, user id, metadata] out.
fn zap(handler: &zmq::Socket, clients: &Path, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let mut items = [handler.as_poll_item(zmq::POLLIN)];
        if zmq::poll(&mut items, 100).is_err() || !items[0].is_readable() {
            continue;
        }
        let Ok(request) = handler.recv_multipart(0) else {
            continue;
        };
        let id = request.get(1).cloned().unwrap_or_default();
        let mechanism = request.get(5).map(Vec::as_slice).unwrap_or_default();
        let key = request.get(6).cloned().unwrap_or_default();
        let ok = mechanism == b"CURVE" && allowed(clients).contains(&key);
        let (code, text, user): (&[u8], &[u8], Vec<u8>) = if ok {
            let user = zmq::z85_encode(&key).unwrap_or_default().into_bytes();
            (b"200", b"OK", user)
        } else {
            tracing::info!(
                "refused a CURVE connection from a key not on the allow-list ({})",
                zmq::z85_encode(&key).unwrap_or_default()
            );
            (b"400", b"not on the allow-list", Vec::new())
        };
        let reply: Vec<&[u8]> = vec![b"1.0", &id, code, text, &user, b""];
        if let Err(e) = handler.send_multipart(reply, 0) {
            tracing::warn!("the ZAP handler could not answer: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_with_a_hash_in_them_are_read_whole() {
        let dir = tempfile::tempdir().expect("dir");
        let clients = dir.path().join("clients");
        let key = [7u8; 32];
        let mut z85 = zmq::z85_encode(&key).expect("z85");
        // A key whose Z85 form has a `#` in it, as about a third of random keys do.
        let hashed = (0u8..=255)
            .map(|b| [b; 32])
            .find(|k| zmq::z85_encode(k).is_ok_and(|z| z.contains('#')))
            .expect("some key encodes with a #");
        let hashed_z85 = zmq::z85_encode(&hashed).expect("z85");
        z85.push('\n');
        std::fs::write(&clients, format!("# the allow-list\n{z85}{hashed_z85}\n")).expect("write");
        let keys = allowed(&clients);
        assert!(keys.contains(&key.to_vec()));
        assert!(keys.contains(&hashed.to_vec()), "{hashed_z85}");
    }

    #[test]
    fn loopback_endpoints_are_told_from_open_ones() {
        for open in [
            "tcp://0.0.0.0:5555",
            "tcp://10.1.2.3:1",
            "tcp://[::]:5",
            "tcp://*:5555",
            "tcp://example.org:1",
        ] {
            assert!(!is_loopback(open), "{open}");
        }
        for closed in [
            "tcp://127.0.0.1:5555",
            "tcp://127.8.0.1:1",
            "tcp://[::1]:5",
            "tcp://localhost:5",
            "ipc:///tmp/x",
        ] {
            assert!(is_loopback(closed), "{closed}");
        }
    }
}
