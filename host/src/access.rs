//! Who may talk to a host: the image's access tokens.
//!
//! At `init` (or the first `serve` of an image that has none) two random tokens are written
//! beside the image, each in a file only its owner can read (mode 0600): `IMAGE.token`, the full
//! token (every op), and `IMAGE.read-token`, the read-only one (the inspecting ops only). Every
//! request but `ping` carries one as `"token"`; without a valid one it is answered `unauthorized`
//! and nothing runs. The command line and `scripts/client.py` read the full token from its file,
//! so the image's owner never types it; giving someone else access is giving them a token. The
//! tokens are files, never image data: they are not in the history, and replay never sees them.

use crate::protocol::Code;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Every op.
    Full,
    /// The inspecting ops only (`get`, `describe`, `history`, …).
    Read,
}

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("cannot read or write the access token at {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the access token at {} is readable by others (mode {mode:o}): `chmod 600` it, or remove it and restart the host for new ones",
        path.display()
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error("the access token at {} is empty or damaged: remove it and restart the host for new ones", .0.display())]
    Damaged(PathBuf),
}

/// The image's two tokens.
#[derive(Clone)]
pub struct Tokens {
    full: String,
    read: String,
}

impl std::fmt::Debug for Tokens {
    // Never the tokens themselves: a debug print ends up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens { .. }")
    }
}

/// `IMAGE.token`: the full token's file.
pub fn full_token_path(image: &Path) -> PathBuf {
    beside(image, ".token")
}

/// `IMAGE.read-token`: the read-only token's file.
pub fn read_token_path(image: &Path) -> PathBuf {
    beside(image, ".read-token")
}

fn beside(image: &Path, suffix: &str) -> PathBuf {
    let mut name = image.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

impl Tokens {
    /// The image's tokens, made now where they are missing.
    pub fn ensure(image: &Path) -> Result<Tokens, AccessError> {
        Ok(Tokens {
            full: ensure_one(&full_token_path(image))?,
            read: ensure_one(&read_token_path(image))?,
        })
    }

    /// What `given` allows, if anything. Compared in constant time.
    pub fn role(&self, given: Option<&str>) -> Option<Role> {
        let given = given?;
        if same(given, &self.full) {
            Some(Role::Full)
        } else if same(given, &self.read) {
            Some(Role::Read)
        } else {
            None
        }
    }
}

/// The full token for the image at `image`, if its file is there (the command line's way in).
pub fn read_full_token(image: &Path) -> Option<String> {
    read_one(&full_token_path(image)).ok()
}

fn ensure_one(path: &Path) -> Result<String, AccessError> {
    let io = |source| AccessError::Io {
        path: path.to_owned(),
        source,
    };
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut file) => {
            let token = random_token().map_err(io)?;
            file.write_all(token.as_bytes()).map_err(io)?;
            file.write_all(b"\n").map_err(io)?;
            file.sync_all().map_err(io)?;
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_one(path),
        Err(e) => Err(io(e)),
    }
}

fn read_one(path: &Path) -> Result<String, AccessError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| AccessError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mode = file.metadata().map_err(io)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(AccessError::Exposed {
            path: path.to_owned(),
            mode,
        });
    }
    let mut text = String::new();
    file.take(4096).read_to_string(&mut text).map_err(io)?;
    let token = text.trim();
    if token.len() < 32 || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(AccessError::Damaged(path.to_owned()));
    }
    Ok(token.to_owned())
}

/// 32 random bytes from the kernel, as hex.
fn random_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// Equal strings, in time that depends on their lengths only.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_made_once_private_and_told_apart() {
        let dir = tempfile::tempdir().expect("dir");
        let image = dir.path().join("image.db");
        let tokens = Tokens::ensure(&image).expect("made");
        let again = Tokens::ensure(&image).expect("read back");
        let full = read_full_token(&image).expect("the full token");
        assert_eq!(again.role(Some(&full)), Some(Role::Full));
        let read = std::fs::read_to_string(read_token_path(&image)).expect("read token");
        assert_eq!(tokens.role(Some(read.trim())), Some(Role::Read));
        assert_ne!(full, read.trim());
        assert_eq!(tokens.role(None), None);
        assert_eq!(tokens.role(Some("")), None);
        assert_eq!(tokens.role(Some(&full[..full.len() - 1])), None);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(full_token_path(&image))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A token others can read is refused, not used.
        std::fs::set_permissions(
            full_token_path(&image),
            std::fs::Permissions::from_mode(0o644),
        )
        .expect("chmod");
        assert!(matches!(
            Tokens::ensure(&image),
            Err(AccessError::Exposed { .. })
        ));
    }
}

/// The ops a read-only token allows: those that only inspect the image.
pub const READ_OPS: &[&str] = &[
    "ping", "get", "describe", "history", "diff", "replay", "methods", "method", "cycles", "cycle",
    "mind", "parents",
];

/// What admission read of an admitted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// A `ping` (however its op is spelt): answered on the socket thread, never by a worker.
    pub ping: bool,
}

/// Whether a request may run: `ping` always; everything else with a token that allows its op.
/// (A payload that is not a JSON object never got this far: nothing unauthenticated reaches a
/// worker.)
pub fn admit(
    tokens: &Tokens,
    envelope: &crate::protocol::envelope::Incoming,
) -> Result<Admitted, crate::protocol::Failure> {
    use crate::protocol::Failure;
    let op = envelope.op.as_str();
    let role = tokens.role(envelope.token.as_deref());
    if envelope.has_key() && role != Some(Role::Full) {
        return Err(Failure::new(
            Code::Unauthorized,
            "a retry `key` needs the image's full token (its recorded reply is the writer's)",
        ));
    }
    if op == "ping" {
        return Ok(Admitted { ping: true });
    }
    let admitted = Admitted { ping: false };
    match role {
        Some(Role::Full) => Ok(admitted),
        Some(Role::Read)
            if READ_OPS.contains(&op) && !(op == "parents" && envelope.sets_parents) =>
        {
            Ok(admitted)
        }
        Some(Role::Read) => Err(Failure::new(
            Code::Unauthorized,
            format!("this token is read-only: `{op}` needs the image's full token"),
        )),
        None if envelope.token.is_none() => Err(Failure::new(
            Code::Unauthorized,
            "this request carries no \"token\": every op but ping needs the image's access token (the file IMAGE.token beside the image)",
        )),
        None => Err(Failure::new(
            Code::Unauthorized,
            "this token is not the image's: nothing was done",
        )),
    }
}
