//! What the mind is shown: the mission brief (receiver, message, sender, intent), the contract
//! (the guest SDK's surface, short and exact), and the prompts each persona's turn is built from;
//! and what is taken back: the method source out of a completion.

use serde_json::Value;

use crate::image::{Image, ImageError};
use crate::object::Oid;

use super::Mission;
use super::examples::{Example, Expect};
use super::fixes;

/// The guest SDK as the writer sees it: the surface of `spec/SDK.md`, the contract's rules, and
/// the genesis example.
pub const CONTRACT: &str = r#"The WIT world `batos:image@0.1.0`: a method imports the image's host functions and `persistence.notify-changed`, and exports `invoke(receiver, args) -> result<string, string>`; the SDK wraps them as follows.
A method is one Rust function, always named `run`: `pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String>`, after `use batos_sdk::prelude::*;`.
- Read slots with me.int("count") -> i64, me.float("x") -> f64, me.bool("on") -> bool, me.text("name") -> String, me.list("items") -> Vec<Value>: plain owned values (0, 0.0, false, "" or an empty list when absent; no ? and no unwrap), or me.get("slot") -> Option<Value>.
- Read arguments with arg_int(&args, 0)?, arg_float(&args, 0)?, arg_bool(&args, 0)?, arg_text(&args, 0)?, arg_list(&args, 0)? (an Err when missing or of another type); args[i].clone() for any JSON.
- Write with me.set("slot", json!(v))?; after the last write call me.notify_changed(); before answering Ok.
- A Value has no arithmetic and no Int variant: read numbers with the helpers or v.as_i64() first. Answer Ok(json!(value)); Err(message) undoes every change. No unsafe, no other crates.
Examples:
```rust
// counter.increment: add one to the count slot, store it, answer it
pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {
    let n = me.int("count") + 1;
    me.set("count", json!(n))?;
    me.notify_changed();
    Ok(json!(n))
}
```
```rust
// stack.push: append the first argument to the items list, answer the new length
pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {
    let mut items = me.list("items");
    items.push(args.first().cloned().ok_or("give a value")?);
    me.set("items", json!(items))?;
    me.notify_changed();
    Ok(json!(items.len()))
}
```
```rust
// stats.total: answer the sum of the integers in the first argument, a list
pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {
    let numbers = arg_list(&args, 0)?;
    let total: i64 = numbers.iter().filter_map(|v| v.as_i64()).sum();
    Ok(json!(total))
}
```
```rust
// person.greet: answer the greeting slot, a space and the name slot
pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {
    Ok(json!(format!("{} {}", me.text("greeting"), me.text("name"))))
}
```
```rust
// account.withdraw: take the first argument from balance and add it to withdrawn; refuse more than the balance
pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {
    let amount = arg_int(&args, 0)?;
    let balance = me.int("balance");
    if amount > balance {
        return Err(format!("only {} available", balance));
    }
    me.set("balance", json!(balance - amount))?;
    me.set("withdrawn", json!(me.int("withdrawn") + amount))?;
    me.notify_changed();
    Ok(json!(balance - amount))
}
```"#;

/// How much of a slot's JSON the brief shows.
const SLOT_PREVIEW: usize = 200;

fn preview(v: &Value) -> String {
    let text = v.to_string();
    if text.len() <= SLOT_PREVIEW {
        return text;
    }
    let mut end = SLOT_PREVIEW;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The mission brief: everything the mind knows about the message it must answer.
pub fn mission(image: &Image, mission: &Mission) -> Result<String, ImageError> {
    let view = image.describe(mission.receiver, None)?;
    let name = view
        .name
        .clone()
        .unwrap_or_else(|| format!("object {}", mission.receiver));
    let mut out = format!(
        "Object `{name}` (id {}) received the message `{}` with arguments {} and {}.\n",
        mission.receiver,
        mission.selector,
        Value::Array(mission.args.clone()),
        match &mission.repair {
            None => "has no method for it",
            Some(_) => "its method for it failed",
        }
    );
    let slots: Vec<String> = view
        .slots
        .iter()
        .map(|(k, v)| format!("{k} = {}", preview(v)))
        .collect();
    out.push_str(&format!(
        "Its slots: {}.\n",
        if slots.is_empty() {
            "none".to_owned()
        } else {
            slots.join(", ")
        }
    ));
    let parents: Vec<String> = view
        .parents
        .iter()
        .map(|p| describe_name(image, *p))
        .collect();
    out.push_str(&format!("Its parents: {}.\n", parents.join(", ")));
    if !view.methods.is_empty() {
        out.push_str(&format!("Its methods: {}.\n", view.methods.join(", ")));
    }
    out.push_str(&format!("Sent by: {}.\n", mission.actor));
    if !mission.examples.is_empty() {
        out.push_str("The method must pass these examples (each on a fresh copy of the object):\n");
        for example in &mission.examples {
            out.push_str(&format!("- {}\n", describe_example(example)));
        }
    }
    match &mission.intent {
        Some(intent) => out.push_str(&format!("Intent: {intent}\n")),
        None => out.push_str(
            "Intent: not given; infer it from the selector, the arguments and the slots.\n",
        ),
    }
    if let Some(repair) = &mission.repair {
        out.push_str(&format!(
            "The installed method (version {}) failed on these arguments: {}\nIts source:\n```rust\n{}\n```\nWrite a corrected version that answers these arguments without failing and still does what it did for others.\n",
            repair.version,
            clip(&repair.error, 600),
            clip(repair.source.trim(), 4000)
        ));
    }
    Ok(out)
}

/// One example as the brief states it: `run(me, [3]) answers 8; then count = 5`.
pub fn describe_example(example: &Example) -> String {
    let mut text = format!("run(me, {})", preview(&Value::Array(example.args.clone())));
    match &example.expect {
        Expect::Answer(v) => text.push_str(&format!(" answers Ok({v})")),
        Expect::Error => text.push_str(" answers an Err"),
        Expect::Anything => {}
    }
    if !example.slots.is_empty() {
        let slots: Vec<String> = example
            .slots
            .iter()
            .map(|(k, v)| format!("{k} = {}", preview(v)))
            .collect();
        text.push_str(&format!("; afterwards {}", slots.join(", ")));
    }
    text
}

fn describe_name(image: &Image, oid: Oid) -> String {
    image
        .describe(oid, None)
        .ok()
        .and_then(|v| v.name)
        .map(|n| format!("`{n}`"))
        .unwrap_or_else(|| format!("object {oid}"))
}

/// The planner's prompt.
pub fn plan_prompt(brief: &str) -> String {
    format!("{brief}\nIn at most three short sentences: what must `run` read, write and return?")
}

/// The examples writer's prompt: the brief, and the form examples take.
pub fn examples_prompt(brief: &str, selector: &str) -> String {
    format!(
        "{brief}\nWrite two or three examples of what `{selector}` must do, one per line, as `ARGS => ANSWER, SLOT: VALUE`: ARGS is the JSON array of arguments, ANSWER the JSON it answers (or `error`), and each `SLOT: VALUE` a slot of the object after the call (each example starts from the slots above). For example: `[3] => 8, count: 8`."
    )
}

/// The writer's prompt: the contract, the brief, the plan, and on a repair the failed source,
/// its diagnostics and the reviewer's advice.
pub fn write_prompt(
    brief: &str,
    selector: &str,
    plan: &str,
    recalled: &[super::memory::Recalled],
    repair: Option<(&str, &str, &str)>,
) -> String {
    let mut out = format!("{CONTRACT}\n\n");
    if !recalled.is_empty() {
        out.push_str("Methods already in this image that are like this one:\n");
        for r in recalled {
            out.push_str(&format!("```rust\n// {}\n{}\n```\n", r.label, r.source));
        }
        out.push('\n');
    }
    out.push_str(&format!("{brief}\nPlan: {}\n", plan.trim()));
    if let Some((source, diagnostics, advice)) = repair {
        out.push_str(&format!(
            "\nThe last attempt failed.\n```rust\n{}\n```\nErrors:\n{}\nAdvice: {}\n",
            source.trim(),
            diagnostics.trim(),
            advice.trim()
        ));
    }
    out.push_str(&format!(
        "\nWrite the method `{selector}` as one ```rust code block."
    ));
    out
}

/// The reviewer's prompt after a failure.
pub fn review_prompt(brief: &str, source: &str, diagnostics: &str) -> String {
    format!(
        "{brief}\nThis method failed:\n```rust\n{}\n```\nErrors:\n{}\nIn at most three sentences: what must change?",
        source.trim(),
        diagnostics.trim()
    )
}

/// The method source in a completion: the first fenced code block (```rust, ``` or an
/// unterminated one, as a model cut off by its token limit writes), or the whole text when it has
/// no fence but defines `run`. The SDK prelude is added when the source does not import it, on the
/// source's first line, so that diagnostics quote the model's own line numbers. A function with
/// `run`'s parameters under another name becomes `run` ([`fixes::rename_entry`]); the fixes made
/// come back with the source, for the transcript.
pub fn extract_source(completion: &str) -> Option<(String, Vec<String>)> {
    let body = match completion.find("```") {
        Some(start) => {
            let after = &completion[start + 3..];
            // Skip the info string (`rust`, `rs`, nothing) up to the end of the line.
            let code = after.split_once('\n').map_or("", |(_, rest)| rest);
            match code.find("```") {
                Some(end) => &code[..end],
                None => code,
            }
        }
        None if completion.contains("fn run") || fixes::rename_entry(completion).is_some() => {
            completion
        }
        None => return None,
    };
    let mut made = Vec::new();
    let body = body.trim();
    let mut body = if body.contains("fn run") {
        body.to_owned()
    } else {
        let (fixed, note) = fixes::rename_entry(body)?;
        made.push(note);
        fixed
    };
    if let Some((fixed, note)) = fixes::owned_errors(&body) {
        made.push(note);
        body = fixed;
    }
    if let Some((fixed, note)) = fixes::plain_helpers(&body) {
        made.push(note);
        body = fixed;
    }
    // A completion stopped at the function's last line (or cut off) lacks closing braces.
    let open = body.matches('{').count();
    let closed = body.matches('}').count();
    let body = format!("{body}{}", "\n}".repeat(open.saturating_sub(closed)));
    if body.contains("use batos_sdk") {
        Some((format!("{body}\n"), made))
    } else {
        Some((format!("use batos_sdk::prelude::*; {body}\n"), made))
    }
}

pub use batos_methods::examples::clip;

#[cfg(test)]
mod tests {
    use super::*;

    /// The brief names the contract the methods crate holds (`batos_methods::contract`).
    #[test]
    fn the_minds_brief_names_this_contract() {
        let id = crate::contract::id();
        assert!(
            CONTRACT.contains(&format!("`{id}`")),
            "the brief names another contract than {id}"
        );
    }

    #[test]
    fn the_source_comes_out_of_fenced_unterminated_and_bare_completions() {
        let fenced = "Here it is:\n```rust\npub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> { Ok(json!(1)) }\n```\nDone.";
        let (source, made) = extract_source(fenced).expect("source");
        assert!(made.is_empty());
        // The prelude shares the first line: line N of the model's code is line N here.
        assert!(source.starts_with("use batos_sdk::prelude::*; pub fn run("));
        assert!(source.contains("Ok(json!(1))") && !source.contains("Done."));
        let cut = "```rust\nuse batos_sdk::prelude::*;\npub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {\n    Ok(";
        let (source, _) = extract_source(cut).expect("source");
        assert_eq!(source.matches("use batos_sdk").count(), 1);
        let bare =
            "pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> { Ok(json!(2)) }";
        assert!(extract_source(bare).is_some());
        assert_eq!(extract_source("I cannot do that."), None);
        assert_eq!(extract_source("```rust\nfn helper() {}\n```"), None);
        let named = "```rust\npub fn gcd(me: Obj, args: Vec<Value>) -> Result<Value, String> { Ok(json!(2)) }\n```";
        let (source, made) = extract_source(named).expect("renamed");
        assert!(source.contains("pub fn run(me: Obj"), "{source}");
        assert_eq!(made.len(), 1);
    }

    #[test]
    fn clipping_keeps_char_boundaries() {
        assert_eq!(clip("short", 10), "short");
        let clipped = clip("ééééé", 3);
        assert!(clipped.starts_with('é') && clipped.contains("more bytes"));
    }
}
