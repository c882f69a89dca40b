//! The client side of the protocol, for the command line: a DEALER that finds out whether a host
//! answers at an endpoint, and sends it requests.

use std::time::Duration;

use serde_json::{Value, json};

use crate::protocol::Failure;

/// A connection to a running host.
pub struct Client {
    socket: zmq::Socket,
    /// What the host said it serves (`ping`'s `image`).
    pub image: String,
    /// The access token every request carries (none: only `ping` is answered).
    pub token: Option<String>,
    next_id: u64,
    _context: zmq::Context,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("image", &self.image)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to `endpoint` if a host answers there within `probe`; `Ok(None)` if none does.
    /// With `curve` (the host's public key, and this client's keys), over CURVE.
    pub fn connect(
        endpoint: &str,
        probe: Duration,
        curve: Option<(&[u8], &super::curve::ClientKeys)>,
    ) -> Result<Option<Client>, Failure> {
        let fail = |e: zmq::Error| Failure::new("internal", format!("ZeroMQ client: {e}"));
        let context = zmq::Context::new();
        let socket = context.socket(zmq::DEALER).map_err(fail)?;
        if let Some((server, mine)) = curve {
            socket.set_curve_serverkey(server).map_err(fail)?;
            socket.set_curve_publickey(&mine.public).map_err(fail)?;
            socket.set_curve_secretkey(&mine.secret).map_err(fail)?;
        }
        // Queue only to completed connections: "writable" then means a host is there.
        socket.set_immediate(true).map_err(fail)?;
        socket.set_linger(0).map_err(fail)?;
        socket.connect(endpoint).map_err(|e| {
            Failure::new(
                "bad-request",
                format!("cannot use endpoint {endpoint}: {e}"),
            )
        })?;
        let mut items = [socket.as_poll_item(zmq::POLLOUT)];
        let ms = i64::try_from(probe.as_millis()).unwrap_or(i64::MAX);
        if zmq::poll(&mut items, ms).map_err(fail)? == 0 || !items[0].is_writable() {
            return Ok(None);
        }
        let mut client = Client {
            socket,
            image: String::new(),
            token: None,
            next_id: 0,
            _context: context,
        };
        match client.request(json!({"op": "ping"}), probe.max(Duration::from_secs(2))) {
            Ok(result) => {
                client.image = result["image"].as_str().unwrap_or_default().to_owned();
                Ok(Some(client))
            }
            // Something listens but does not speak the protocol in time: no host of ours.
            Err(_) => Ok(None),
        }
    }

    /// Sends one request and waits up to `timeout` for its reply; answers the `result`.
    pub fn request(&mut self, mut request: Value, timeout: Duration) -> Result<Value, Failure> {
        self.next_id += 1;
        let id = format!("cli-{}-{}", std::process::id(), self.next_id);
        request["id"] = json!(id);
        if let Some(token) = &self.token {
            request["token"] = json!(token);
        }
        self.socket
            .send(request.to_string().as_bytes(), 0)
            .map_err(|e| Failure::new("internal", format!("sending to the host: {e}")))?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(Failure::new(
                    "no-reply",
                    format!(
                        "the host did not answer within {timeout:?}; the request may still take effect there"
                    ),
                ));
            }
            let mut items = [self.socket.as_poll_item(zmq::POLLIN)];
            let ms = i64::try_from(left.as_millis()).unwrap_or(i64::MAX).max(1);
            match zmq::poll(&mut items, ms) {
                Ok(_) => {}
                Err(zmq::Error::EINTR) => continue,
                Err(e) => {
                    return Err(Failure::new(
                        "internal",
                        format!("waiting for the host: {e}"),
                    ));
                }
            }
            if !items[0].is_readable() {
                continue;
            }
            let frames = self
                .socket
                .recv_multipart(0)
                .map_err(|e| Failure::new("internal", format!("reading from the host: {e}")))?;
            let Some(last) = frames.last() else { continue };
            let reply: Value = serde_json::from_slice(last).map_err(|e| {
                Failure::new(
                    "internal",
                    format!("the host answered something that is not JSON: {e}"),
                )
            })?;
            if reply["id"] != json!(id) {
                // A late answer to an earlier, timed-out request: not ours.
                continue;
            }
            return if reply["ok"] == json!(true) {
                Ok(reply["result"].clone())
            } else {
                let code = reply["error"]["code"]
                    .as_str()
                    .unwrap_or("internal")
                    .to_owned();
                let message = reply["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                Err(Failure::new(leak_code(&code), message))
            };
        }
    }
}

/// Failure codes are `&'static str`; the host's codes are a small closed set, so map them back.
fn leak_code(code: &str) -> &'static str {
    const CODES: &[&str] = &[
        "bad-request",
        "unknown-op",
        "too-large",
        "no-such-object",
        "no-such-slot",
        "no-such-method",
        "no-such-transaction",
        "does-not-understand",
        "compile-failed",
        "guardian-rejected",
        "covenant-violation",
        "method-trap",
        "method-error",
        "out-of-fuel",
        "out-of-memory",
        "timeout",
        "send-too-deep",
        "schema-violation",
        "conflict",
        "parent-cycle",
        "name-taken",
        "locked",
        "read-only",
        "delegation-too-deep",
        "shutting-down",
        "replay-mismatch",
        "unauthorized",
        "busy",
        "compile-refused",
        "internal",
    ];
    CODES
        .iter()
        .find(|c| **c == code)
        .copied()
        .unwrap_or("internal")
}
