//! The protocol: requests decoded once into a closed enum, executed against the image, and
//! turned into the `result` or `error` of a reply (see `shared/spec/PROTOCOL.md`).
//!
//! The command line builds the same [`Request`]s and runs them through the same [`execute`], so
//! `batos … --json` prints exactly what a client would receive.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::image::{HistoryFilter, Image, ImageError};
use crate::object::{ObjRef, Outcome, TxId};

/// The protocol's version, reported by `ping`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// One or several object references (`"from": "counter"` or `"from": ["a", "b"]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Refs {
    One(ObjRef),
    Many(Vec<ObjRef>),
}

impl Refs {
    pub fn into_vec(self) -> Vec<ObjRef> {
        match self {
            Refs::One(r) => vec![r],
            Refs::Many(v) => v,
        }
    }
}

fn default_prototype() -> Refs {
    Refs::One(ObjRef::Name("object".into()))
}

/// Every request the host understands. Unknown fields (the envelope's `id`) are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    Ping,
    Send {
        to: ObjRef,
        selector: String,
        #[serde(default)]
        args: Vec<Value>,
        /// What a missing method should do; read by cognition, ignored by value slots.
        #[serde(default)]
        intent: Option<String>,
    },
    Create {
        #[serde(default = "default_prototype")]
        from: Refs,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        slots: Option<Map<String, Value>>,
    },
    Get {
        to: ObjRef,
        slot: String,
    },
    Set {
        to: ObjRef,
        slot: String,
        value: Value,
    },
    /// Shows the ordered parents, or replaces them when `parents` is given.
    Parents {
        to: ObjRef,
        #[serde(default)]
        parents: Option<Vec<ObjRef>>,
    },
    /// Removes a slot from an object.
    Remove {
        to: ObjRef,
        slot: String,
    },
    /// Names, renames or (with `name: null`) unnames an object.
    Rename {
        to: ObjRef,
        name: Option<String>,
    },
    Describe {
        to: ObjRef,
        #[serde(default)]
        at: Option<TxId>,
    },
    History {
        #[serde(default)]
        since: Option<TxId>,
        #[serde(default)]
        limit: Option<usize>,
        #[serde(default)]
        to: Option<ObjRef>,
    },
    Replay {
        #[serde(default)]
        until: Option<TxId>,
    },
    Undo {
        tx: TxId,
    },
}

/// The ops [`Request`] knows, to tell `unknown-op` from a malformed known op.
pub const OPS: &[&str] = &[
    "ping", "send", "create", "get", "set", "parents", "remove", "rename", "describe", "history",
    "replay", "undo",
];

/// A failed request: a stable code and a message for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub code: &'static str,
    pub message: String,
}

impl Failure {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({"code": self.code, "message": self.message})
    }
}

impl From<ImageError> for Failure {
    fn from(e: ImageError) -> Self {
        Failure::new(e.code(), e.to_string())
    }
}

impl Request {
    /// Decodes a request object. `Err` carries `bad-request` or `unknown-op`.
    pub fn decode(payload: &Value) -> Result<Request, Failure> {
        let Some(object) = payload.as_object() else {
            return Err(Failure::new(
                "bad-request",
                "a request must be a JSON object",
            ));
        };
        let op = match object.get("op") {
            Some(Value::String(op)) => op.as_str(),
            Some(_) => return Err(Failure::new("bad-request", "`op` must be a string")),
            None => return Err(Failure::new("bad-request", "a request needs an `op`")),
        };
        if !OPS.contains(&op) {
            return Err(Failure::new(
                "unknown-op",
                format!("unknown op `{op}`; known ops: {}", OPS.join(", ")),
            ));
        }
        // serde would read a missing `value` as null; a set without a value is a mistake.
        if op == "set" && !object.contains_key("value") {
            return Err(Failure::new(
                "bad-request",
                "`set` needs a `value` (use null for null)",
            ));
        }
        Request::deserialize(payload)
            .map_err(|e| Failure::new("bad-request", format!("bad `{op}` request: {e}")))
    }

    /// Whether this request changes the image (and so needs the writer).
    pub fn writes(&self) -> bool {
        match self {
            Request::Create { .. }
            | Request::Set { .. }
            | Request::Remove { .. }
            | Request::Rename { .. }
            | Request::Undo { .. } => true,
            Request::Parents { parents, .. } => parents.is_some(),
            // A send may run a method that writes (methods come with the next issue).
            Request::Send { .. } => true,
            Request::Ping
            | Request::Get { .. }
            | Request::Describe { .. }
            | Request::History { .. }
            | Request::Replay { .. } => false,
        }
    }
}

/// Runs `request` against `image` on behalf of `actor` and answers the reply's `result`.
pub fn execute(image: &mut Image, request: Request, actor: &str) -> Result<Value, Failure> {
    match request {
        Request::Ping => Ok(json!({
            "version": VERSION,
            "image": image.path().map(|p| p.display().to_string()),
            "tx": image.newest_tx()?,
        })),
        Request::Send {
            to, selector, args, ..
        } => {
            let receiver = image.resolve(&to)?;
            match image.send(receiver, &selector, &args)? {
                Outcome::Answer(v) => Ok(v),
                Outcome::DoesNotUnderstand { receiver, selector } => Err(Failure::new(
                    "does-not-understand",
                    format!("object {receiver} does not understand `{selector}`"),
                )),
            }
        }
        Request::Create { from, name, slots } => {
            let note = format!(
                "create{}",
                name.as_deref().map(|n| format!(" {n}")).unwrap_or_default()
            );
            let (oid, tx) = image.transact(actor, &note, |tx| {
                let parents = from
                    .into_vec()
                    .iter()
                    .map(|r| tx.resolve(r))
                    .collect::<Result<Vec<_>, _>>()?;
                tx.create_object(&parents, name.as_deref(), slots.unwrap_or_default())
            })?;
            Ok(json!({"oid": oid, "tx": tx}))
        }
        Request::Get { to, slot } => {
            let oid = image.resolve(&to)?;
            Ok(image.get(oid, &slot)?)
        }
        Request::Set { to, slot, value } => {
            let ((), tx) = image.transact(actor, &format!("set {to}.{slot}"), |tx| {
                let oid = tx.resolve(&to)?;
                tx.set_slot(oid, &slot, crate::object::Slot::Value(value))
            })?;
            Ok(json!({"tx": tx}))
        }
        Request::Remove { to, slot } => {
            let ((), tx) = image.transact(actor, &format!("remove {to}.{slot}"), |tx| {
                let oid = tx.resolve(&to)?;
                tx.remove_slot(oid, &slot)
            })?;
            Ok(json!({"tx": tx}))
        }
        Request::Rename { to, name } => {
            let ((), tx) = image.transact(actor, &format!("rename {to}"), |tx| {
                let oid = tx.resolve(&to)?;
                tx.rename(oid, name.as_deref())
            })?;
            Ok(json!({"tx": tx}))
        }
        Request::Parents { to, parents: None } => {
            let oid = image.resolve(&to)?;
            Ok(json!({"oid": oid, "parents": image.parents(oid)?}))
        }
        Request::Parents {
            to,
            parents: Some(parents),
        } => {
            let (oid, tx) = image.transact(actor, &format!("parents {to}"), |tx| {
                let oid = tx.resolve(&to)?;
                let parents = parents
                    .iter()
                    .map(|r| tx.resolve(r))
                    .collect::<Result<Vec<_>, _>>()?;
                tx.set_parents(oid, parents)?;
                Ok::<_, ImageError>(oid)
            })?;
            Ok(json!({"oid": oid, "parents": image.parents(oid)?, "tx": tx}))
        }
        Request::Describe { to, at } => {
            let oid = image.resolve(&to)?;
            Ok(to_json(&image.describe(oid, at)?))
        }
        Request::History { since, limit, to } => {
            let object = to.map(|r| image.resolve(&r)).transpose()?;
            let filter = HistoryFilter {
                since,
                limit: Some(limit.unwrap_or(100)),
                object,
            };
            Ok(to_json(&image.history(&filter)?))
        }
        Request::Replay { until } => Ok(to_json(&image.replay(until)?)),
        Request::Undo { tx } => Ok(json!({"tx": image.undo(tx, actor)?})),
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or_else(|e| json!({"unencodable": e.to_string()}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(payload: Value) -> Option<&'static str> {
        Request::decode(&payload).err().map(|f| f.code)
    }

    #[test]
    fn malformed_requests_get_codes() {
        assert_eq!(code(json!([1, 2])), Some("bad-request"));
        assert_eq!(code(json!({"id": 1})), Some("bad-request"));
        assert_eq!(code(json!({"op": 7})), Some("bad-request"));
        assert_eq!(code(json!({"op": "fly"})), Some("unknown-op"));
        assert_eq!(
            code(json!({"op": "get", "to": "lobby"})),
            Some("bad-request")
        );
        assert_eq!(
            code(json!({"op": "set", "to": "lobby", "slot": "x"})),
            Some("bad-request")
        );
        assert_eq!(
            code(json!({"op": "send", "to": "lobby", "selector": "x", "args": 3})),
            Some("bad-request")
        );
    }

    #[test]
    fn well_formed_requests_decode() {
        let r = Request::decode(&json!({"id": "a", "op": "send", "to": 3, "selector": "x"}));
        assert_eq!(
            r.ok(),
            Some(Request::Send {
                to: ObjRef::Id(3),
                selector: "x".into(),
                args: vec![],
                intent: None
            })
        );
        let r = Request::decode(&json!({"op": "create", "from": ["a", 2]}));
        assert!(matches!(
            r,
            Ok(Request::Create {
                from: Refs::Many(_),
                ..
            })
        ));
        let r = Request::decode(&json!({"op": "set", "to": "x", "slot": "y", "value": null}));
        assert!(matches!(
            r,
            Ok(Request::Set {
                value: Value::Null,
                ..
            })
        ));
    }
}
