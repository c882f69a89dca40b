//! Where a command's requests go: a running host (found and checked to serve this image, over
//! CURVE beyond loopback), or the image file itself.

use super::*;

/// How long a probe waits for a host to answer before the command acts on the file instead.
pub(super) const PROBE: Duration = Duration::from_millis(300);

/// The same, over CURVE.
pub(super) const CURVE_PROBE: Duration = Duration::from_secs(3);

/// Where a command's requests go: a running host, or the image file itself.
pub(super) enum Target {
    Host(Client, Duration),
    File(Box<Image>),
}

impl Target {
    /// A host serving this image if one answers at `--endpoint` (unless `--offline`); otherwise
    /// the file: read-only for inspecting, as the writer for `--offline` writes.
    pub(super) fn open(global: &Global, writes: bool) -> Result<Target, Failure> {
        if !global.offline {
            let curve = curve_keys(global)?;
            // A CURVE handshake (and the host's allow-list check) takes longer than a plain
            // connection, and such a host has no file here to fall back on.
            let probe = if curve.is_some() { CURVE_PROBE } else { PROBE };
            let curve = curve
                .as_ref()
                .map(|(server, mine)| (server.as_slice(), mine));
            if let Some(mut client) = Client::connect(&global.endpoint, probe, curve)? {
                client.token = global
                    .token
                    .clone()
                    .or_else(|| crate::access::read_full_token(&global.image));
                if same_image(&client.image, &global.image) {
                    return Ok(Target::Host(client, Duration::from_secs(global.timeout)));
                }
                if writes {
                    return Err(Failure::new(
                        Code::BadRequest,
                        format!(
                            "the host at {} serves {}, not {}; point --endpoint or --image at the same image",
                            global.endpoint,
                            client.image,
                            global.image.display()
                        ),
                    ));
                }
            } else if writes {
                return Err(Failure::new(
                    Code::NoHost,
                    format!(
                        "no host serves {} at {}: start one with `batos serve`, or pass --offline to write the file directly",
                        global.image.display(),
                        global.endpoint
                    ),
                ));
            }
        }
        Ok(Target::File(Box::new(if writes {
            Image::open(&global.image, global.durability)?
        } else {
            Image::open_read_only(&global.image)?
        })))
    }

    pub(super) fn execute(&mut self, request: Request) -> Result<Value, Failure> {
        match self {
            Target::Host(client, timeout) => {
                let value = serde_json::to_value(&request)
                    .map_err(|e| Failure::new(Code::Internal, e.to_string()))?;
                client.request(value, *timeout)
            }
            // No mind offline: a message nobody understands is answered as it is.
            Target::File(image) => protocol::execute(image, &methods(), request, CLI_ACTOR)
                .and_then(Executed::into_result),
        }
    }
}

/// CURVE keys for the endpoint: with `--server-key`, or for an endpoint beyond loopback (the
/// host's key then comes from beside `--image`); `None` on loopback without one.
pub(super) fn curve_keys(
    global: &Global,
) -> Result<Option<(Vec<u8>, server::curve::ClientKeys)>, Failure> {
    let server = match &global.server_key {
        Some(z85) => Some(z85.clone()),
        None if !server::curve::is_loopback(&global.endpoint) => {
            let path = server::curve::directory(&global.image).join("server.public");
            Some(std::fs::read_to_string(&path).map_err(|e| {
                Failure::new(
                    Code::BadRequest,
                    format!(
                        "{} is beyond loopback, so the host speaks CURVE: pass --server-key (the host's {}) ({e})",
                        global.endpoint,
                        path.display()
                    ),
                )
            })?)
        }
        None => None,
    };
    let Some(server) = server else {
        return Ok(None);
    };
    let key = server::curve::server_key(&server).ok_or_else(|| {
        Failure::new(
            Code::BadRequest,
            "--server-key is not a Z85 key of 32 bytes",
        )
    })?;
    let mine = server::curve::ClientKeys::ensure()
        .map_err(|e| Failure::new(Code::Internal, e.to_string()))?;
    Ok(Some((key, mine)))
}

/// Whether the host's image is the one this command names (by canonical path, when both exist).
pub(super) fn same_image(host: &str, mine: &std::path::Path) -> bool {
    match (std::fs::canonicalize(host), std::fs::canonicalize(mine)) {
        (Ok(a), Ok(b)) => a == b,
        // A host elsewhere, or a file that is not here: trust the endpoint.
        _ => true,
    }
}
