//! The envelope: one decoder for every request a transport hands in (each payload parsed once),
//! and one encoder for every reply (`{"id", "ok", "result" | "error"}`).
//!
//! A transport turns bytes into an [`Incoming`] here and never looks inside; the service admits
//! it, answers it from the read cache or hands its [`Request`] to a worker, and encodes the
//! answer with [`ok`] or [`failed`].

use serde_json::{Value, json};

use super::{Code, Failure, Request};
use crate::image::keys;

/// Reads whose answers depend only on the committed image (no method runs): the host may answer
/// them again, unchanged, until the next commit.
pub const KEPT_READS: &[&str] = &["get", "describe", "methods", "method", "history", "diff"];

/// A request as it arrived: the envelope's fields, read once, and the request itself (or why it
/// is not one). A payload that is not a JSON object never becomes an `Incoming`.
#[derive(Debug)]
pub struct Incoming {
    /// Echoed in the reply; `null` when the request has none.
    pub id: Value,
    /// The `op` as written (admission reads it, even for an op the host does not know).
    pub op: String,
    pub token: Option<String>,
    /// The retry key (a non-empty string of at most [`keys::MAX_KEY_BYTES`]), or why it is bad.
    pub key: Result<Option<String>, Failure>,
    /// `parents` with a list is a write; without, a read (admission tells them apart).
    pub sets_parents: bool,
    /// The decoded request, or the `bad-request` / `unknown-op` it is.
    pub request: Result<Request, Failure>,
    /// For a kept read: the request without `id`, `token` and `key`, as canonical JSON (what its
    /// answer is kept under).
    pub read_key: Option<String>,
    /// The payload's size in bytes (what the host counts as held while it is in flight).
    pub size: usize,
}

impl Incoming {
    /// Parses `payload` once. `Err` is the whole reply's failure (the payload is not a JSON
    /// object), with the id when one could be read.
    pub fn decode(payload: &[u8]) -> Result<Incoming, (Value, Failure)> {
        // serde reads a struct from an array too; a request is an object.
        if payload.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err((
                Value::Null,
                Failure::new(Code::BadRequest, "a request must be a JSON object"),
            ));
        }
        let value: Value = serde_json::from_slice(payload).map_err(|e| {
            (
                Value::Null,
                Failure::new(
                    Code::BadRequest,
                    format!("the request is not a JSON object: {e}"),
                ),
            )
        })?;
        let Some(object) = value.as_object() else {
            return Err((
                Value::Null,
                Failure::new(Code::BadRequest, "a request must be a JSON object"),
            ));
        };
        let id = object.get("id").cloned().unwrap_or(Value::Null);
        let op = match object.get("op") {
            Some(Value::String(op)) => op.clone(),
            _ => String::new(),
        };
        let token = match object.get("token") {
            None | Some(Value::Null) => None,
            Some(Value::String(token)) => Some(token.clone()),
            Some(_) => {
                return Err((
                    id,
                    Failure::new(Code::BadRequest, "`token` must be a string"),
                ));
            }
        };
        let key = retry_key(object.get("key"));
        let sets_parents = object.get("parents").is_some_and(|p| !p.is_null());
        let read_key = KEPT_READS.contains(&op.as_str()).then(|| {
            let mut kept = object.clone();
            // Not part of what is read: who asked (admitted already), and under which retry key.
            for envelope in ["id", "token", "key"] {
                kept.remove(envelope);
            }
            Value::Object(kept).to_string()
        });
        let request = Request::decode(&value);
        Ok(Incoming {
            id,
            op,
            token,
            key,
            sets_parents,
            request,
            read_key,
            size: payload.len(),
        })
    }

    /// Whether a retry key came with it (valid or not).
    pub fn has_key(&self) -> bool {
        !matches!(self.key, Ok(None))
    }
}

/// The request's retry key, if it has one.
fn retry_key(key: Option<&Value>) -> Result<Option<String>, Failure> {
    match key {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(key)) if !key.is_empty() && key.len() <= keys::MAX_KEY_BYTES => {
            Ok(Some(key.clone()))
        }
        Some(_) => Err(Failure::new(
            Code::BadRequest,
            format!(
                "`key` must be a non-empty string of at most {} bytes",
                keys::MAX_KEY_BYTES
            ),
        )),
    }
}

/// A success: `result` is JSON text already (a kept read's, or one just serialised).
pub fn ok(id: &Value, result: &str) -> Vec<u8> {
    format!("{{\"id\":{id},\"ok\":true,\"result\":{result}}}").into_bytes()
}

/// A failure.
pub fn failed(id: &Value, failure: &Failure) -> Vec<u8> {
    json!({"id": id, "ok": false, "error": failure.to_json()})
        .to_string()
        .into_bytes()
}

/// A reply as it is recorded for a retry key: the reply without its id.
pub fn recorded(result: &Result<String, Failure>) -> String {
    match result {
        Ok(text) => format!("{{\"ok\":true,\"result\":{text}}}"),
        Err(failure) => json!({"ok": false, "error": failure.to_json()}).to_string(),
    }
}

/// A recorded reply, sent again under this request's id and marked `replayed`.
pub fn replayed(id: &Value, recorded: &str) -> Vec<u8> {
    let mut reply = serde_json::from_str::<Value>(recorded).unwrap_or_else(|_| {
        json!({"ok": false, "error": Failure::new(Code::Internal, "the recorded reply is damaged").to_json()})
    });
    reply["id"] = id.clone();
    reply["replayed"] = json!(true);
    reply.to_string().into_bytes()
}

/// A reply larger than `limit` bytes becomes a `too-large` failure under the same id.
pub fn bounded(reply: Vec<u8>, id: &Value, limit: usize) -> Vec<u8> {
    if reply.len() <= limit {
        return reply;
    }
    let failure = Failure::new(
        Code::TooLarge,
        format!(
            "the reply would be {} bytes; the host sends at most {limit} (--max-reply-bytes): ask for less (a history `limit`, one slot at a time)",
            reply.len()
        ),
    );
    failed(id, &failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_is_read_once_into_its_envelope_and_request() {
        let incoming = Incoming::decode(
            br#"{"id": 7, "op": "get", "to": "counter", "slot": "count", "token": "t", "key": "k"}"#,
        )
        .expect("an object");
        assert_eq!(incoming.id, json!(7));
        assert_eq!(incoming.op, "get");
        assert_eq!(incoming.token.as_deref(), Some("t"));
        assert_eq!(incoming.key, Ok(Some("k".to_owned())));
        assert!(matches!(incoming.request, Ok(Request::Get { .. })));
        // The same read under another id, token or key is kept under the same key.
        let again = Incoming::decode(br#"{"op":"get","slot":"count","to":"counter","id":"x"}"#)
            .expect("an object");
        assert_eq!(incoming.read_key, again.read_key);
        assert!(incoming.read_key.is_some());
    }

    #[test]
    fn what_is_not_a_request_object_is_refused_with_what_is_wrong() {
        for payload in [&b"[1]"[..], b"", b"nul", b"{\"op\":", b"  7"] {
            let (id, failure) = Incoming::decode(payload).expect_err("not an object");
            assert_eq!((id, failure.code), (Value::Null, Code::BadRequest));
        }
        let (id, failure) =
            Incoming::decode(br#"{"id": 3, "op": "ping", "token": 5}"#).expect_err("bad token");
        assert_eq!((id, failure.code), (json!(3), Code::BadRequest));
        // An unknown op or a bad field is still an envelope: admission reads it first.
        let incoming = Incoming::decode(br#"{"op": "fly", "key": ""}"#).expect("an object");
        assert_eq!(
            incoming.request.as_ref().map_err(|f| f.code).err(),
            Some(Code::UnknownOp)
        );
        assert!(incoming.has_key() && incoming.key.is_err());
    }

    #[test]
    fn a_reply_past_its_limit_becomes_too_large_under_the_same_id() {
        let big = ok(&json!(1), &format!("\"{}\"", "x".repeat(100)));
        let reply: Value =
            serde_json::from_slice(&bounded(big.clone(), &json!(1), 50)).expect("json");
        assert_eq!(reply["id"], json!(1));
        assert_eq!(reply["error"]["code"], json!("too-large"));
        assert_eq!(bounded(big.clone(), &json!(1), big.len()), big);
    }
}
