//! The client side of the protocol, for the command line: a DEALER that finds out whether a host
//! answers at an endpoint, and sends it requests.

use crate::protocol::Code;
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
        let fail = |e: zmq::Error| Failure::new(Code::Internal, format!("ZeroMQ client: {e}"));
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
                Code::BadRequest,
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
            .map_err(|e| Failure::new(Code::Internal, format!("sending to the host: {e}")))?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(Failure::new(
                    Code::NoReply,
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
                        Code::Internal,
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
                .map_err(|e| Failure::new(Code::Internal, format!("reading from the host: {e}")))?;
            let Some(last) = frames.last() else { continue };
            let reply: Value = serde_json::from_slice(last).map_err(|e| {
                Failure::new(
                    Code::Internal,
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
                // A code this build does not know (a newer host's) keeps its name in the text.
                Err(match Code::parse(&code) {
                    Some(code) => Failure::new(code, message),
                    None => Failure::new(Code::Unknown, format!("[{code}] {message}")),
                })
            };
        }
    }
}
