//! Examples: what a synthesized method must answer (or refuse) for given arguments, and which
//! slots it must leave how. A `send` may carry them; a cycle runs every example against a scratch
//! clone of the receiver before it installs anything (see `Runtime::trial`), and a method that
//! fails one goes back to the writer with what was expected and what it did.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Examples a `send` may carry at most.
pub const MAX_EXAMPLES: usize = 32;
/// Bytes of JSON one example may take at most.
pub const MAX_EXAMPLE_BYTES: usize = 64 << 10;

/// What one call must do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawExample", into = "RawExample")]
pub struct Example {
    pub args: Vec<Value>,
    pub expect: Expect,
    /// Own slots of the receiver after the call, by name.
    pub slots: Map<String, Value>,
}

/// The answer an example wants.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// The method answers this value (numbers compare by value: `8` is `8.0`).
    Answer(Value),
    /// The method answers an `Err` (any message).
    Error,
    /// Only the slots are checked.
    Anything,
}

/// The wire form: `{"args": [...], "answer": <JSON>, "slots": {...}}` or `{"args": [...],
/// "error": true, ...}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExample {
    args: Vec<Value>,
    /// Present (even as `null`) or absent: `null` is an answer.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    answer: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<bool>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    slots: Map<String, Value>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

impl TryFrom<RawExample> for Example {
    type Error = String;
    fn try_from(raw: RawExample) -> Result<Example, String> {
        let expect = match (raw.answer, raw.error) {
            (Some(_), Some(true)) => {
                return Err("an example has both `answer` and `error`: give one".into());
            }
            // An Err undoes every change the call made: there are no slots to check after one.
            (None, Some(true)) if !raw.slots.is_empty() => {
                return Err("an example with `\"error\": true` cannot also check `slots` (an Err undoes every change)".into());
            }
            (Some(answer), _) => Expect::Answer(answer),
            (None, Some(true)) => Expect::Error,
            (None, _) if !raw.slots.is_empty() => Expect::Anything,
            (None, _) => {
                return Err(
                    "an example needs an `answer`, `\"error\": true` or `slots` to check".into(),
                );
            }
        };
        Ok(Example {
            args: raw.args,
            expect,
            slots: raw.slots,
        })
    }
}

impl From<Example> for RawExample {
    fn from(e: Example) -> RawExample {
        let (answer, error) = match e.expect {
            Expect::Answer(v) => (Some(v), None),
            Expect::Error => (None, Some(true)),
            Expect::Anything => (None, None),
        };
        RawExample {
            args: e.args,
            answer,
            error,
            slots: e.slots,
        }
    }
}

/// Checks the bounds of a `send`'s examples (their shape is checked by deserializing them).
pub fn check_bounds(examples: &[Example]) -> Result<(), String> {
    if examples.len() > MAX_EXAMPLES {
        return Err(format!(
            "{} examples: at most {MAX_EXAMPLES} are taken",
            examples.len()
        ));
    }
    for (i, e) in examples.iter().enumerate() {
        let bytes = serde_json::to_vec(e).map_or(0, |b| b.len());
        if bytes > MAX_EXAMPLE_BYTES {
            return Err(format!(
                "example {} is {bytes} bytes: at most {MAX_EXAMPLE_BYTES}",
                i + 1
            ));
        }
    }
    Ok(())
}

/// Two examples with the same arguments that want different answers (the cycle cannot satisfy
/// both), as a reason.
pub fn contradiction(examples: &[Example]) -> Option<String> {
    for (i, a) in examples.iter().enumerate() {
        for (j, b) in examples.iter().enumerate().skip(i + 1) {
            if !same_list(&a.args, &b.args) {
                continue;
            }
            let answers_differ = match (&a.expect, &b.expect) {
                (Expect::Answer(x), Expect::Answer(y)) => !same(x, y),
                (Expect::Answer(_), Expect::Error) | (Expect::Error, Expect::Answer(_)) => true,
                _ => false,
            };
            let slots_differ = a
                .slots
                .iter()
                .any(|(k, v)| b.slots.get(k).is_some_and(|w| !same(v, w)));
            if answers_differ || slots_differ {
                return Some(format!(
                    "examples {} and {} contradict each other: the same arguments {} want different results",
                    i + 1,
                    j + 1,
                    Value::Array(a.args.clone())
                ));
            }
        }
    }
    None
}

/// JSON equality with numbers compared by value (`8` and `8.0` are the same answer).
pub fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        // Integers exactly (as f64, u64::MAX and u64::MAX - 1 are one number), others by value.
        (Value::Number(x), Value::Number(y)) => {
            match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
                (Some(x), Some(y), _, _) => x == y,
                (_, _, Some(x), Some(y)) => x == y,
                (Some(_), None, _, Some(_)) | (None, Some(_), Some(_), _) => false,
                _ => x.as_f64() == y.as_f64(),
            }
        }
        (Value::Array(x), Value::Array(y)) => same_list(x, y),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn same_list(a: &[Value], b: &[Value]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
}

/// Parses the command line's form: `ARGS => ANSWER[, SLOT: VALUE]...`, where ARGS is a JSON
/// array, ANSWER is JSON or `error`, each VALUE is JSON: `[3] => 8`, `[0] => 5, count: 5`,
/// `["x"] => error`.
pub fn parse_cli(text: &str) -> Result<Example, String> {
    let (args, rest) = text
        .split_once("=>")
        .ok_or_else(|| format!("`{text}`: expected `ARGS => ANSWER`, e.g. `[3] => 8`"))?;
    let args: Vec<Value> = serde_json::from_str(args.trim()).map_err(|e| {
        format!(
            "`{}`: the arguments must be a JSON array ({e})",
            args.trim()
        )
    })?;
    let rest = rest.trim_start();
    let (expect, mut rest) = if let Some(after) = rest.strip_prefix("error") {
        (Expect::Error, after)
    } else {
        let (value, used) = first_json(rest)?;
        (Expect::Answer(value), &rest[used..])
    };
    let mut slots = Map::new();
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let after = rest
            .strip_prefix(',')
            .ok_or_else(|| format!("`{rest}`: expected `, SLOT: VALUE`"))?;
        let (name, value) = after
            .split_once(':')
            .ok_or_else(|| format!("`{after}`: expected `SLOT: VALUE`"))?;
        let name = name.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
            return Err(format!("`{name}` is not a slot name"));
        }
        let value = value.trim_start();
        let (parsed, used) = first_json(value)?;
        slots.insert(name.to_owned(), parsed);
        rest = &value[used..];
    }
    if expect == Expect::Error && !slots.is_empty() {
        return Err(format!(
            "`{text}`: an example that answers an Err cannot also check slots (an Err undoes every change)"
        ));
    }
    Ok(Example {
        args,
        expect,
        slots,
    })
}

/// The first JSON value of `text` and the bytes it took.
fn first_json(text: &str) -> Result<(Value, usize), String> {
    let mut values = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    match values.next() {
        Some(Ok(value)) => Ok((value, values.byte_offset())),
        Some(Err(e)) => Err(format!("`{text}`: not JSON ({e})")),
        None => Err("a value is missing after `=>`".into()),
    }
}

/// Diagnostics cut to what a small model can take in.
pub fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n… ({} more bytes)", &text[..end], text.len() - end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_wire_form_is_checked() {
        let ok: Example = serde_json::from_value(json!({"args": [3], "answer": 8})).expect("ok");
        assert_eq!(ok.expect, Expect::Answer(json!(8)));
        let null: Example =
            serde_json::from_value(json!({"args": [], "answer": null})).expect("ok");
        assert_eq!(null.expect, Expect::Answer(Value::Null));
        let err: Example = serde_json::from_value(json!({"args": [], "error": true})).expect("ok");
        assert_eq!(err.expect, Expect::Error);
        for bad in [
            json!({"answer": 8}),
            json!({"args": 3, "answer": 8}),
            json!({"args": [], "answer": 1, "error": true}),
            json!({"args": []}),
            json!({"args": [], "answer": 1, "extra": 2}),
            json!({"args": [], "answer": 1, "slots": [1]}),
            json!({"args": [], "error": true, "slots": {"count": 5}}),
        ] {
            assert!(
                serde_json::from_value::<Example>(bad.clone()).is_err(),
                "{bad}"
            );
        }
        assert_eq!(
            serde_json::to_value(&err).expect("json"),
            json!({"args": [], "error": true})
        );
    }

    #[test]
    fn the_command_line_form_reads_answers_errors_and_slots() {
        let e = parse_cli("[3] => 8").expect("ok");
        assert_eq!(
            (e.args, e.expect),
            (vec![json!(3)], Expect::Answer(json!(8)))
        );
        let e = parse_cli("[0] => 5, count: 5, items: [1, 2]").expect("ok");
        assert_eq!(e.slots.get("count"), Some(&json!(5)));
        assert_eq!(e.slots.get("items"), Some(&json!([1, 2])));
        let e = parse_cli(r#"["x", {"a": 1}] => error"#).expect("ok");
        assert_eq!(e.expect, Expect::Error);
        let e = parse_cli(r#"[] => "a, b: c""#).expect("ok");
        assert_eq!(e.expect, Expect::Answer(json!("a, b: c")));
        for bad in [
            "3 => 8",
            "[3]",
            "[3] =>",
            "[3] => 8 count: 5",
            "[3] => 8, : 5",
            "[3] => 8, a b: 1",
        ] {
            assert!(parse_cli(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn contradictions_and_numbers_by_value() {
        let a = parse_cli("[2] => 4").expect("ok");
        let b = parse_cli("[2.0] => 5").expect("ok");
        let c = parse_cli("[2] => 4.0, n: 1").expect("ok");
        assert!(contradiction(&[a.clone(), b]).is_some());
        assert_eq!(contradiction(&[a.clone(), c]), None);
        assert!(contradiction(&[a, parse_cli("[2] => error").expect("ok")]).is_some());
        assert!(same(&json!({"a": [1, 2.0]}), &json!({"a": [1.0, 2]})));
        assert!(!same(&json!(u64::MAX), &json!(u64::MAX - 1)));
        assert!(!same(&json!(i64::MIN), &json!(u64::MAX)));
        assert!(same(&json!(u64::MAX), &json!(u64::MAX)));
        assert!(!same(&json!([1]), &json!([1, 2])));
    }
}
