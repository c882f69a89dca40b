//! The protocol: requests decoded once into a closed enum, executed against the image, and
//! turned into the `result` or `error` of a reply (see `shared/spec/PROTOCOL.md`).
//!
//! The command line builds the same [`Request`]s and runs them through the same [`execute`], so
//! `batos … --json` prints exactly what a client would receive.

pub mod code;
pub mod envelope;

pub use code::{Code, Coded};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::cognition::examples::Example;
use crate::cognition::{self, CognitionError, Mission};
use crate::image::{HistoryFilter, Image, ImageError, Origin};
use crate::method::{MethodError, Runtime, Sent};
use crate::mind::{GenerateRequest, MindError, MindInfo};
use crate::object::{MethodId, ObjRef, Oid, Slot, TxId};

/// The protocol's version, reported by `ping`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// One or several object references (`"from": "counter"` or `"from": ["a", "b"]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
        /// What a missing method must answer for given arguments: checked on a scratch clone
        /// of the receiver before a synthesized method is installed.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        examples: Vec<Example>,
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
    /// What differs between two transactions, by object and slot.
    Diff {
        from: TxId,
        until: TxId,
    },
    Replay {
        #[serde(default)]
        until: Option<TxId>,
    },
    Undo {
        tx: TxId,
    },
    /// Compiles, checks and installs a method from Rust source.
    Install {
        to: ObjRef,
        selector: String,
        source: String,
    },
    /// The methods installed now, optionally on one object.
    Methods {
        #[serde(default)]
        to: Option<ObjRef>,
    },
    /// One method: by `method` id, or by `to` + `selector` (optionally a `version`).
    Method {
        #[serde(default)]
        method: Option<MethodId>,
        #[serde(default)]
        to: Option<ObjRef>,
        #[serde(default)]
        selector: Option<String>,
        #[serde(default)]
        version: Option<i64>,
    },
    /// Points a method slot back at an earlier version.
    Revert {
        to: ObjRef,
        selector: String,
        version: i64,
    },
    /// Text from the image's mind. Served by the host's inference thread, never by a worker.
    Generate(GenerateRequest),
    /// The mind's metadata.
    Mind,
    /// Cognitive cycles, oldest first (the newest `limit`).
    Cycles {
        #[serde(default)]
        limit: Option<usize>,
    },
    /// One cycle's full transcript: the cycle is `cycle`, or else the request's own `id` (as
    /// PROTOCOL.md writes it, the envelope's id doubling as the cycle's).
    Cycle {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cycle: Option<Oid>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
    },
}

/// The ops [`Request`] knows, to tell `unknown-op` from a malformed known op.
pub const OPS: &[&str] = &[
    "ping", "send", "create", "get", "set", "parents", "remove", "rename", "describe", "history",
    "diff", "replay", "undo", "install", "methods", "method", "revert", "generate", "mind",
    "cycles", "cycle",
];

/// A failed request: a stable code and a message for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub code: Code,
    pub message: String,
}

impl Failure {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
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

impl From<CognitionError> for Failure {
    fn from(e: CognitionError) -> Self {
        Failure::new(e.code(), e.to_string())
    }
}

impl From<MindError> for Failure {
    fn from(e: MindError) -> Self {
        Failure::new(e.code(), e.to_string())
    }
}

impl From<MethodError> for Failure {
    fn from(e: MethodError) -> Self {
        Failure::new(e.code(), e.to_string())
    }
}

impl Request {
    /// Decodes a request object. `Err` carries `bad-request` or `unknown-op`.
    pub fn decode(payload: &Value) -> Result<Request, Failure> {
        let Some(object) = payload.as_object() else {
            return Err(Failure::new(
                Code::BadRequest,
                "a request must be a JSON object",
            ));
        };
        let op = match object.get("op") {
            Some(Value::String(op)) => op.as_str(),
            Some(_) => return Err(Failure::new(Code::BadRequest, "`op` must be a string")),
            None => return Err(Failure::new(Code::BadRequest, "a request needs an `op`")),
        };
        if !OPS.contains(&op) {
            return Err(Failure::new(
                Code::UnknownOp,
                format!("unknown op `{op}`; known ops: {}", OPS.join(", ")),
            ));
        }
        // serde would read a missing `value` as null; a set without a value is a mistake.
        if op == "set" && !object.contains_key("value") {
            return Err(Failure::new(
                Code::BadRequest,
                "`set` needs a `value` (use null for null)",
            ));
        }
        if op == "generate" && !object.get("prompt").is_some_and(Value::is_string) {
            return Err(Failure::new(
                Code::BadRequest,
                "`generate` needs a `prompt` string",
            ));
        }
        let request = Request::deserialize(payload)
            .map_err(|e| Failure::new(Code::BadRequest, format!("bad `{op}` request: {e}")))?;
        if let Request::Send { examples, .. } = &request {
            crate::cognition::examples::check_bounds(examples)
                .map_err(|e| Failure::new(Code::BadRequest, format!("bad `send` request: {e}")))?;
        }
        Ok(request)
    }

    /// Whether this request changes the image (and so needs the writer).
    pub fn writes(&self) -> bool {
        match self {
            Request::Create { .. }
            | Request::Set { .. }
            | Request::Remove { .. }
            | Request::Rename { .. }
            | Request::Undo { .. }
            | Request::Install { .. }
            | Request::Revert { .. } => true,
            Request::Parents { parents, .. } => parents.is_some(),
            // A send may run a method that writes.
            Request::Send { .. } => true,
            Request::Ping
            | Request::Get { .. }
            | Request::Describe { .. }
            | Request::History { .. }
            | Request::Diff { .. }
            | Request::Replay { .. }
            | Request::Methods { .. }
            | Request::Method { .. }
            | Request::Generate(_)
            | Request::Mind
            | Request::Cycles { .. }
            | Request::Cycle { .. } => false,
        }
    }
}

/// What executing a request came to: a value, or a message a mind may take on (a host with
/// none answers the failure).
#[derive(Debug)]
pub enum Executed {
    Value(Value),
    /// No slot answers the message: a cognitive cycle may write the method.
    DoesNotUnderstand {
        mission: Mission,
        failure: Failure,
    },
    /// The message's method trapped and `cognition.repair_traps` covers it: a cycle may repair it.
    Trapped {
        mission: Mission,
        failure: Failure,
    },
}

impl Executed {
    /// The answer as it stands, with no mind to hand a mission to.
    pub fn into_result(self) -> Result<Value, Failure> {
        match self {
            Executed::Value(v) => Ok(v),
            Executed::DoesNotUnderstand { failure, .. } | Executed::Trapped { failure, .. } => {
                Err(failure)
            }
        }
    }
}

/// Runs `request` against `image` on behalf of `actor`; the command line and the host's workers
/// both come here.
pub fn execute(
    image: &mut Image,
    methods: &Runtime,
    request: Request,
    actor: &str,
) -> Result<Executed, Failure> {
    match request {
        Request::Send {
            to,
            selector,
            args,
            intent,
            examples,
        } => {
            let receiver = image.resolve(&to)?;
            let mission = |selector: String, args, repair| Mission {
                receiver,
                selector,
                args,
                intent,
                examples,
                actor: actor.to_owned(),
                repair,
            };
            // Kept for the mission, should the message need one.
            let kept = args.clone();
            match methods.send(image, receiver, &selector, args, actor) {
                Ok(Sent::Value(v)) => Ok(Executed::Value(v)),
                Ok(Sent::Ran(report)) => Ok(Executed::Value(report.value)),
                Ok(Sent::DoesNotUnderstand { receiver, selector }) => {
                    Ok(Executed::DoesNotUnderstand {
                        failure: Failure::new(
                            Code::DoesNotUnderstand,
                            format!("object {receiver} does not understand `{selector}`"),
                        ),
                        mission: mission(selector, kept, None),
                    })
                }
                Err(e) => {
                    let failure = Failure::from(e);
                    match cognition::trap_repair(
                        image,
                        receiver,
                        &selector,
                        failure.code,
                        &failure.message,
                    ) {
                        Ok(Some(repair)) => Ok(Executed::Trapped {
                            mission: mission(selector, kept, Some(repair)),
                            failure,
                        }),
                        _ => Err(failure),
                    }
                }
            }
        }
        request => answer(image, methods, request, actor).map(Executed::Value),
    }
}

/// Every request but `send`: a value or a failure.
fn answer(
    image: &mut Image,
    methods: &Runtime,
    request: Request,
    actor: &str,
) -> Result<Value, Failure> {
    match request {
        Request::Ping => Ok(json!({
            "version": VERSION,
            "image": image.path().map(|p| p.display().to_string()),
            "tx": image.newest_tx()?,
        })),
        Request::Send { .. } => Err(Failure::new(
            Code::Internal,
            "a send reached the answer for other requests",
        )),
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
                // A method changes by installing (or is taken away with `remove`), not by `set`.
                if let Some(Slot::Method(_)) = tx.own_slot(oid, &slot)? {
                    return Err(ImageError::HoldsMethod {
                        oid,
                        slot: slot.clone(),
                    });
                }
                tx.set_slot(oid, &slot, Slot::Value(value))
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
        Request::Diff { from, until } => {
            if from > until {
                return Err(Failure::new(
                    Code::BadRequest,
                    format!("`from` (tx {from}) is later than `until` (tx {until})"),
                ));
            }
            Ok(json!({"from": from, "until": until, "objects": to_json(&image.diff(from, until)?)}))
        }
        Request::Replay { until } => Ok(to_json(&image.replay(until)?)),
        Request::Undo { tx } => Ok(json!({"tx": image.undo(tx, actor)?})),
        Request::Install {
            to,
            selector,
            source,
        } => {
            let oid = image.resolve(&to)?;
            let installed =
                methods.install(image, oid, &selector, &source, Origin::Architect, actor)?;
            Ok(to_json(&installed))
        }
        Request::Methods { to } => {
            let object = to.map(|r| image.resolve(&r)).transpose()?;
            Ok(to_json(&image.methods(object)?))
        }
        Request::Method {
            method,
            to,
            selector,
            version,
        } => describe_method(image, method, to, selector, version),
        Request::Revert {
            to,
            selector,
            version,
        } => {
            let oid = image.resolve(&to)?;
            Ok(json!({"tx": methods.revert(image, oid, &selector, version, actor)?}))
        }
        Request::Mind => Ok(json!(MindInfo::read(image)?)),
        Request::Cycles { limit } => Ok(json!(cognition::list(image, limit)?)),
        Request::Cycle { cycle, id } => {
            let cycle = cycle
                .or_else(|| id.as_ref().and_then(Value::as_i64).map(Oid))
                .ok_or_else(|| {
                    Failure::new(Code::BadRequest, "`cycle` needs the cycle's id in `cycle`")
                })?;
            Ok(cognition::transcript(image, cycle)?)
        }
        // The host hands `generate` to its mind's thread before any worker sees it; reaching
        // here means no mind runs.
        Request::Generate(_) => Err(Failure::new(
            Code::NoMind,
            "no mind runs here: `batos serve` loads the image's mind unless told `--mind none`; \
             offline, use `batos mind generate`",
        )),
    }
}

/// The `method` op: source, contract, imports and exports, report and every version.
fn describe_method(
    image: &Image,
    method: Option<MethodId>,
    to: Option<ObjRef>,
    selector: Option<String>,
    version: Option<i64>,
) -> Result<Value, Failure> {
    let record = match (method, to, selector) {
        (Some(id), _, _) => image.method_record(id)?,
        (None, Some(to), Some(selector)) => {
            let oid = image.resolve(&to)?;
            match version {
                Some(version) => image
                    .method_versions(oid, &selector)?
                    .into_iter()
                    .find(|v| v.version == version)
                    .ok_or_else(|| {
                        Failure::new(
                            Code::NoSuchMethod,
                            format!("{to}.{selector} has no version {version}"),
                        )
                    })?,
                None => match image.lookup(oid, &selector)? {
                    Some(found) => match found.slot {
                        Slot::Method(id) => image.method_record(id)?,
                        Slot::Value(_) => {
                            return Err(Failure::new(
                                Code::NoSuchMethod,
                                format!("`{selector}` of {to} is a value, not a method"),
                            ));
                        }
                    },
                    None => {
                        return Err(Failure::new(
                            Code::NoSuchMethod,
                            format!("{to} has no method `{selector}`"),
                        ));
                    }
                },
            }
        }
        _ => {
            return Err(Failure::new(
                Code::BadRequest,
                "`method` needs `method`, or `to` and `selector`",
            ));
        }
    };
    let (source, report) = image.method_source_and_report(record.method)?;
    let versions = image.method_versions(record.oid, &record.selector)?;
    let active = image.own_slot(record.oid, &record.selector)?;
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| {
            json!({
                "version": v.version, "method": v.method, "origin": v.origin, "sha256": v.sha256,
                "tx": v.tx, "wasm_bytes": v.wasm_bytes, "active": active == Some(Slot::Method(v.method)),
            })
        })
        .collect();
    Ok(json!({
        "method": record.method,
        "oid": record.oid,
        "object": record.object,
        "selector": record.selector,
        "version": record.version,
        "origin": record.origin,
        "contract": record.contract,
        "sha256": record.sha256,
        "source": source,
        "wit": crate::contract::WIT,
        "imports": report.pointer("/component_gate/imports").cloned().unwrap_or(Value::Null),
        "exports": report.pointer("/component_gate/exports").cloned().unwrap_or(Value::Null),
        "report": report,
        "versions": versions,
    }))
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or_else(|e| json!({"unencodable": e.to_string()}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(payload: Value) -> Option<&'static str> {
        Request::decode(&payload).err().map(|f| f.code.as_str())
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
                intent: None,
                examples: vec![],
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
