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

/// A request's envelope as it arrived: what admission reads, without building the request (a
/// client without a token costs one pass over its bytes and nothing more). A payload that is not
/// a JSON object with a well-formed envelope never becomes an `Incoming`.
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
    /// The payload's size in bytes (what the host counts as held while it is in flight).
    pub size: usize,
}

/// The rest of an admitted request.
#[derive(Debug)]
pub struct Parsed {
    /// The decoded request, or the `bad-request` / `unknown-op` it is.
    pub request: Result<Request, Failure>,
    /// For a kept read: the request without `id`, `token` and `key`, as canonical JSON (what its
    /// answer is kept under).
    pub read_key: Option<String>,
}

/// The envelope's fields, borrowed where the JSON allows; everything else is skipped unbuilt. A
/// field given twice is refused here, so the whole parse after it cannot read another.
#[derive(serde::Deserialize)]
struct Head<'a> {
    #[serde(default)]
    id: Value,
    #[serde(default, borrow)]
    op: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    token: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    key: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    parents: Option<serde::de::IgnoredAny>,
}

impl Incoming {
    /// Reads the envelope of `payload`. `Err` is the whole reply's failure (not a JSON object,
    /// or an envelope field of the wrong type), with the id when one could be read.
    pub fn decode(payload: &[u8]) -> Result<Incoming, (Value, Failure)> {
        // serde reads a struct from an array too; a request is an object.
        if payload.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err((
                Value::Null,
                Failure::new(Code::BadRequest, "a request must be a JSON object"),
            ));
        }
        let head: Head<'_> = serde_json::from_slice(payload).map_err(|e| {
            (
                request_id(payload),
                Failure::new(
                    Code::BadRequest,
                    format!("the request is not a JSON object with a well-formed envelope: {e}"),
                ),
            )
        })?;
        let key = match head.key {
            None => Ok(None),
            Some(key) if !key.is_empty() && key.len() <= keys::MAX_KEY_BYTES => {
                Ok(Some(key.into_owned()))
            }
            Some(_) => Err(Failure::new(
                Code::BadRequest,
                format!(
                    "`key` must be a non-empty string of at most {} bytes",
                    keys::MAX_KEY_BYTES
                ),
            )),
        };
        Ok(Incoming {
            id: head.id,
            op: head.op.map(|op| op.into_owned()).unwrap_or_default(),
            token: head.token.map(|t| t.into_owned()),
            key,
            sets_parents: head.parents.is_some(),
            size: payload.len(),
        })
    }

    /// Whether a retry key came with it (valid or not).
    pub fn has_key(&self) -> bool {
        !matches!(self.key, Ok(None))
    }

    /// The whole request, once admitted. The envelope read here must be the one admission read
    /// (it is, with duplicate fields refused; a payload the two could read apart is refused).
    pub fn parse(&self, payload: &[u8]) -> Parsed {
        let refused = |failure| Parsed {
            request: Err(failure),
            read_key: None,
        };
        let value: Value = match serde_json::from_slice(payload) {
            Ok(value) => value,
            Err(e) => {
                return refused(Failure::new(
                    Code::BadRequest,
                    format!("the request is not JSON: {e}"),
                ));
            }
        };
        let Some(object) = value.as_object() else {
            return refused(Failure::new(
                Code::BadRequest,
                "a request must be a JSON object",
            ));
        };
        let same = object.get("op").and_then(Value::as_str).unwrap_or_default() == self.op
            && object.get("token").and_then(Value::as_str) == self.token.as_deref();
        if !same {
            return refused(Failure::new(
                Code::BadRequest,
                "the request's envelope reads two ways: nothing was done",
            ));
        }
        let request = Request::decode(&value);
        // The request is built: the value itself becomes the read's key (no copy of it).
        let read_key = match value {
            Value::Object(mut kept) if KEPT_READS.contains(&self.op.as_str()) => {
                // Not part of what is read: who asked (admitted already), and under which key.
                for envelope in ["id", "token", "key"] {
                    kept.remove(envelope);
                }
                Some(Value::Object(kept).to_string())
            }
            _ => None,
        };
        Parsed { request, read_key }
    }
}

/// The request's `id` for a reply to a payload whose envelope could not be read (null when
/// there is none or the payload is not JSON). Only `id` is built: the rest is skipped.
fn request_id(payload: &[u8]) -> Value {
    #[derive(serde::Deserialize)]
    struct Id {
        #[serde(default)]
        id: Value,
    }
    serde_json::from_slice::<Id>(payload)
        .map(|i| i.id)
        .unwrap_or(Value::Null)
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

/// A reply larger than `limit` bytes becomes a `too-large` failure under the same id (or under
/// none, when the id is what would keep the refusal itself over the limit).
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
    let answer = failed(id, &failure);
    let anonymous = failed(&Value::Null, &failure);
    if answer.len() > limit && anonymous.len() <= limit {
        return anonymous;
    }
    answer
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
        let parsed = incoming.parse(
            br#"{"id": 7, "op": "get", "to": "counter", "slot": "count", "token": "t", "key": "k"}"#,
        );
        assert!(matches!(parsed.request, Ok(Request::Get { .. })));
        // The same read under another id, token or key is kept under the same key.
        let payload = br#"{"op":"get","slot":"count","to":"counter","id":"x"}"#;
        let again = Incoming::decode(payload).expect("an object").parse(payload);
        assert_eq!(parsed.read_key, again.read_key);
        assert!(parsed.read_key.is_some());
    }

    #[test]
    fn what_is_not_a_request_object_is_refused_with_what_is_wrong() {
        for payload in [&b"[1]"[..], b"", b"nul", b"{\"op\":", b"  7"] {
            let (id, failure) = Incoming::decode(payload).expect_err("not an object");
            assert_eq!((id, failure.code), (Value::Null, Code::BadRequest));
        }
        for payload in [
            &br#"{"id": 3, "op": "ping", "token": 5}"#[..],
            br#"{"id": 3, "op": "ping", "op": "get"}"#,
            br#"{"id": 3, "op": 1}"#,
        ] {
            let (id, failure) = Incoming::decode(payload).expect_err("a bad envelope");
            assert_eq!((id, failure.code), (json!(3), Code::BadRequest));
        }
        // An unknown op or a bad field is still an envelope: admission reads it first.
        let payload = br#"{"op": "fly", "key": ""}"#;
        let incoming = Incoming::decode(payload).expect("an object");
        assert_eq!(
            incoming.parse(payload).request.map_err(|f| f.code).err(),
            Some(Code::UnknownOp)
        );
        assert!(incoming.has_key() && incoming.key.is_err());
        // What the envelope pass skips but the request cannot hold is refused after admission.
        let payload = br#"{"id": 7, "op": "get", "x": "\ud800"}"#;
        let incoming = Incoming::decode(payload).expect("the envelope reads");
        assert_eq!(
            incoming.parse(payload).request.map_err(|f| f.code).err(),
            Some(Code::BadRequest)
        );
    }

    #[test]
    fn a_reply_past_its_limit_becomes_too_large_under_the_same_id() {
        let big = ok(&json!(1), &format!("\"{}\"", "x".repeat(100)));
        let reply: Value =
            serde_json::from_slice(&bounded(big.clone(), &json!(1), 50)).expect("json");
        assert_eq!(reply["id"], json!(1));
        assert_eq!(reply["error"]["code"], json!("too-large"));
        assert_eq!(bounded(big.clone(), &json!(1), big.len()), big);
        // An id that alone is over the limit is left out of the refusal.
        let id = json!("a".repeat(2000));
        let reply = bounded(ok(&id, "1"), &id, 1024);
        assert!(reply.len() <= 1024, "{} bytes", reply.len());
    }
}
