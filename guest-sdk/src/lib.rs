//! The surface a batos method is written against.
//!
//! A method is one Rust file defining `pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String>`.
//! The forge supplies the bindings and the export; the file brings only its logic.
//!
//! ```ignore
//! use batos_sdk::prelude::*; // Obj, Value, json!, log
//!
//! /// counter.increment: add one to `count` and answer the new value.
//! pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {
//!     let n = me.get("count").and_then(|v| v.as_i64()).unwrap_or(0) + 1;
//!     me.set("count", json!(n))?;
//!     me.notify_changed();
//!     Ok(json!(n))
//! }
//! ```
//!
//! Returning `Err(message)` rolls back everything the call changed. Every object changed must get
//! `notify_changed()` before returning `Ok` (the persistence covenant).

pub use serde_json::{Value, json};

/// Generated from `wit/batos.wit` (world `method`). Used by the forge's glue, not by methods.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "method",
        pub_export_macro: true,
    });
}

use bindings::batos::image::{host, persistence};

/// The usual imports of a method: `Obj`, `Value`, `json!`, `log`, and the typed argument
/// readers `arg_int`, `arg_float`, `arg_text`, `arg_list`.
pub mod prelude {
    pub use crate::{Obj, arg_bool, arg_float, arg_int, arg_list, arg_text, log};
    pub use serde_json::{Value, json};
}

/// An object of the image, by id. Cheap to copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Obj(u64);

impl Obj {
    /// The object with this id (no check that it exists).
    pub fn from_id(id: u64) -> Obj {
        Obj(id)
    }

    /// The object's id.
    pub fn id(&self) -> u64 {
        self.0
    }

    /// Read a slot through delegation (own slots, then parents depth first); `None` if absent.
    pub fn get(&self, slot: &str) -> Option<Value> {
        let text = host::get_slot(self.0, slot)?;
        serde_json::from_str(&text).ok()
    }

    /// Write a slot on this object itself. `Err` if refused (by a schema, for example).
    pub fn set(&self, slot: &str, value: Value) -> Result<(), String> {
        host::set_slot(self.0, slot, &value.to_string())
    }

    /// Remove a slot from this object itself.
    pub fn remove(&self, slot: &str) -> Result<(), String> {
        host::remove_slot(self.0, slot)
    }

    /// The persistence covenant: call it for every object you changed, before returning `Ok`.
    pub fn notify_changed(&self) {
        persistence::notify_changed(self.0)
    }

    /// Send a message to this object; answers its result.
    pub fn send(&self, selector: &str, args: Vec<Value>) -> Result<Value, String> {
        let answer = host::send(self.0, selector, &Value::Array(args).to_string())?;
        serde_json::from_str(&answer).map_err(|e| format!("{selector}: answer is not JSON: {e}"))
    }

    /// The object bound to `name` (`lobby`, `counter`, …), if any.
    pub fn named(name: &str) -> Option<Obj> {
        host::named(name).map(Obj)
    }

    /// Clone the prototype `from`, with `slots` (a JSON object) as the new object's own slots.
    pub fn create(from: &Obj, slots: Value) -> Result<Obj, String> {
        host::create(from.0, &slots.to_string()).map(Obj)
    }

    /// This object's parents, in delegation order.
    pub fn parents(&self) -> Vec<Obj> {
        host::parents(self.0).into_iter().map(Obj).collect()
    }

    /// The slot as an integer: 0 when it is absent or not a whole number (floats are cut).
    pub fn int(&self, slot: &str) -> i64 {
        self.get(slot).as_ref().map_or(0, int_of)
    }

    /// The slot as a number: 0.0 when it is absent or not a number.
    pub fn float(&self, slot: &str) -> f64 {
        self.get(slot).and_then(|v| v.as_f64()).unwrap_or(0.0)
    }

    /// The slot as a boolean: false when it is absent or not a boolean.
    pub fn bool(&self, slot: &str) -> bool {
        self.get(slot).and_then(|v| v.as_bool()).unwrap_or(false)
    }

    /// The slot as text: empty when it is absent; a non-string's JSON text otherwise.
    pub fn text(&self, slot: &str) -> String {
        self.get(slot).as_ref().map(text_of).unwrap_or_default()
    }

    /// The slot as an owned list: empty when it is absent or not a list.
    pub fn list(&self, slot: &str) -> Vec<Value> {
        match self.get(slot) {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        }
    }
}

fn int_of(v: &Value) -> i64 {
    v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)).unwrap_or(0)
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn arg<'a>(args: &'a [Value], i: usize) -> Result<&'a Value, String> {
    args.get(i)
        .ok_or_else(|| format!("argument {} is missing ({} given)", i + 1, args.len()))
}

/// Argument `i` (from 0) as an integer, or an `Err` saying what is wrong.
pub fn arg_int(args: &[Value], i: usize) -> Result<i64, String> {
    let v = arg(args, i)?;
    v.as_i64()
        .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
        .ok_or_else(|| format!("argument {} must be an integer, not {v}", i + 1))
}

/// Argument `i` as a number.
pub fn arg_float(args: &[Value], i: usize) -> Result<f64, String> {
    let v = arg(args, i)?;
    v.as_f64()
        .ok_or_else(|| format!("argument {} must be a number, not {v}", i + 1))
}

/// Argument `i` as a boolean.
pub fn arg_bool(args: &[Value], i: usize) -> Result<bool, String> {
    let v = arg(args, i)?;
    v.as_bool()
        .ok_or_else(|| format!("argument {} must be true or false, not {v}", i + 1))
}

/// Argument `i` as owned text (a string argument; anything else is an `Err`).
pub fn arg_text(args: &[Value], i: usize) -> Result<String, String> {
    match arg(args, i)? {
        Value::String(s) => Ok(s.clone()),
        v => Err(format!("argument {} must be a string, not {v}", i + 1)),
    }
}

/// Argument `i` as an owned list.
pub fn arg_list(args: &[Value], i: usize) -> Result<Vec<Value>, String> {
    match arg(args, i)? {
        Value::Array(items) => Ok(items.clone()),
        v => Err(format!("argument {} must be a list, not {v}", i + 1)),
    }
}


/// Write a line in the call's log.
pub fn log(line: &str) {
    host::log(line)
}

/// The forge's glue: parse `args` (a JSON array), call `run`, serialize its answer.
#[doc(hidden)]
pub fn __invoke(
    receiver: u64,
    args: &str,
    run: fn(Obj, Vec<Value>) -> Result<Value, String>,
) -> Result<String, String> {
    let args: Vec<Value> = match serde_json::from_str(args) {
        Ok(Value::Array(items)) => items,
        Ok(other) => return Err(format!("args must be a JSON array, not {other}")),
        Err(e) => return Err(format!("args are not JSON: {e}")),
    };
    run(Obj(receiver), args).map(|v| v.to_string())
}
