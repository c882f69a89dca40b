//! Cycles that try harder before they give up, end to end on a real host with the scripted mind:
//! several candidates per attempt, rustc's machine-applicable suggestions applied by rule, and a
//! trap in an installed method opening a repair cycle whose method is a new version.

use std::path::Path;

use serde_json::{Value, json};

use crate::support::{Host, Scratch, ask};

/// Compiles and passes every gate, but answers the old count and stores nothing.
const WRONG_DOUBLE: &str = "pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {\n    Ok(json!(me.int(\"count\")))\n}";
const GOOD_DOUBLE: &str = "pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {\n    let n = me.int(\"count\") * 2;\n    me.set(\"count\", json!(n))?;\n    me.notify_changed();\n    Ok(json!(n))\n}";
/// Does not compile: `items` is pushed to but not `mut` (rustc's suggestion, machine-applicable,
/// adds it).
const NOT_MUT: &str = "pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {\n    let items = me.list(\"items\");\n    items.push(json!(1));\n    me.set(\"items\", json!(items))?;\n    me.notify_changed();\n    Ok(json!(items.len()))\n}";
/// Divides the count by its argument: traps (a panic) on 0.
const TRAPPY_SHARE: &str = "pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {\n    let d = arg_int(&args, 0)?;\n    Ok(json!(me.int(\"count\") / d))\n}";
/// The repair: 0 shares nothing.
const FIXED_SHARE: &str = "pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {\n    let d = arg_int(&args, 0)?;\n    if d == 0 {\n        return Ok(json!(0));\n    }\n    Ok(json!(me.int(\"count\") / d))\n}";
/// A repair that breaks what the method did for other arguments (the first cycle's example).
const BROKEN_SHARE: &str =
    "pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {\n    Ok(json!(0))\n}";

fn fenced(source: &str) -> String {
    format!("```rust\n{source}\n```\n")
}

fn script(dir: &Path, lines: &[Value]) -> std::path::PathBuf {
    let path = dir.join("mind.jsonl");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, text).expect("script");
    path
}

fn host(lines: &[Value]) -> Host {
    let scratch = Scratch::new();
    let script = script(scratch.dir.path(), lines);
    Host::start_with(scratch, "normal", &format!("scripted:{}", script.display()))
}

fn planner_and_reviewer() -> Vec<Value> {
    vec![
        json!({"when": "You are BRICK", "completion": "Do what the intent says."}),
        json!({"when": "You are ALFRED", "completion": "Follow the examples."}),
    ]
}

fn events(host: &Host, cycle: &Value) -> Vec<Value> {
    let transcript = ask(&host.dealer(), json!({"op": "cycle", "cycle": cycle}));
    transcript["result"]["events"]
        .as_array()
        .expect("events")
        .clone()
}

fn cycles(host: &Host) -> Vec<Value> {
    let reply = ask(&host.dealer(), json!({"op": "cycles"}));
    reply["result"].as_array().expect("cycles").clone()
}

fn set(host: &Host, to: &str, slot: &str, value: Value) {
    let reply = ask(
        &host.dealer(),
        json!({"op": "set", "to": to, "slot": slot, "value": value}),
    );
    assert_eq!(reply["ok"], true, "{reply}");
}

#[test]
fn with_two_candidates_the_sampled_one_that_passes_is_installed_in_one_attempt() {
    let mut lines = planner_and_reviewer();
    lines.push(
        json!({"when": "You are ROBIN", "sampled": false, "completion": fenced(WRONG_DOUBLE)}),
    );
    lines
        .push(json!({"when": "You are ROBIN", "sampled": true, "completion": fenced(GOOD_DOUBLE)}));
    let host = host(&lines);
    let dealer = host.dealer();
    set(&host, "counter", "count", json!(21));
    set(&host, "cognition", "attempts", json!(1));
    set(&host, "cognition", "resample", json!(false));
    let examples = json!([{"args": [], "answer": 42, "slots": {"count": 42}}]);
    // One candidate per attempt (the default): the greedy one is wrong and nothing installs.
    let reply = ask(
        &dealer,
        json!({"op": "send", "to": "counter", "selector": "double", "examples": examples}),
    );
    assert_eq!(reply["error"]["code"], "does-not-understand", "{reply}");
    set(&host, "cognition", "candidates", json!(2));
    let reply = ask(
        &dealer,
        json!({"op": "send", "to": "counter", "selector": "double", "examples": examples}),
    );
    assert_eq!(reply["result"], 42, "{reply}");
    let list = cycles(&host);
    let last = list
        .iter()
        .find(|c| c["state"] == "complete")
        .expect("a complete cycle");
    assert_eq!(last["attempts"], 1, "{last}");
    let events = events(&host, &last["id"]);
    let trials: Vec<&Value> = events.iter().filter(|e| e["kind"] == "examples").collect();
    assert_eq!(trials.len(), 2, "{events:?}");
    assert_eq!(
        (
            trials[0]["data"]["candidate"].clone(),
            trials[0]["data"]["passed"].clone()
        ),
        (json!(1), json!(0))
    );
    assert_eq!(
        (
            trials[1]["data"]["candidate"].clone(),
            trials[1]["data"]["passed"].clone()
        ),
        (json!(2), json!(1))
    );
    // The second candidate was drawn sampled, with a seed.
    let prompts: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "prompt" && e["data"]["persona"] == "robin")
        .collect();
    assert_eq!(prompts.len(), 2);
    assert_eq!(prompts[0]["data"]["temperature"], 0.0);
    assert!(
        prompts[1]["data"]["temperature"]
            .as_f64()
            .is_some_and(|t| t > 0.0)
    );
    assert!(prompts[1]["data"]["seed"].as_u64().is_some_and(|s| s > 0));
    // No reviewer turn was spent: the attempt's second candidate passed.
    assert!(
        !events
            .iter()
            .any(|e| e["kind"] == "prompt" && e["data"]["persona"] == "alfred")
    );
}

#[test]
fn rustcs_machine_applicable_suggestion_is_applied_by_rule_before_a_model_turn() {
    let mut lines = planner_and_reviewer();
    lines.push(json!({"when": "You are ROBIN", "completion": fenced(NOT_MUT)}));
    let host = host(&lines);
    set(&host, "lobby", "items", json!([]));
    set(&host, "cognition", "attempts", json!(1));
    let reply = ask(
        &host.dealer(),
        json!({"op": "send", "to": "lobby", "selector": "add_one"}),
    );
    assert_eq!(reply["result"], 1, "{reply}");
    let list = cycles(&host);
    let events = events(&host, &list[0]["id"]);
    let fix = events
        .iter()
        .find(|e| e["kind"] == "fix")
        .expect("a fix event");
    assert!(
        fix["data"]["fix"]
            .as_str()
            .is_some_and(|f| f.starts_with("applied rustc's suggestions")),
        "{fix}"
    );
    let method = ask(
        &host.dealer(),
        json!({"op": "method", "to": "lobby", "selector": "add_one"}),
    );
    assert!(
        method["result"]["source"]
            .as_str()
            .is_some_and(|s| s.contains("let mut items")),
        "{method}"
    );
}

#[test]
fn a_compile_error_still_reads_as_rustcs_text() {
    let mut lines = planner_and_reviewer();
    lines.push(json!({"when": "You are ROBIN", "completion": fenced("pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {\n    Ok(json!(undefined_name))\n}")}));
    let host = host(&lines);
    set(&host, "cognition", "attempts", json!(1));
    let reply = ask(
        &host.dealer(),
        json!({"op": "send", "to": "lobby", "selector": "nothing"}),
    );
    let message = reply["error"]["message"].as_str().expect("a message");
    assert!(
        message.contains("cannot find value `undefined_name`"),
        "{message}"
    );
    assert!(!message.contains("\"$message_type\""), "{message}");
}

/// A script whose writer first writes the trapping `share`, and whose repair writes `repair`.
fn share_script(repair: &str) -> Vec<Value> {
    let mut lines = planner_and_reviewer();
    lines.push(json!({"when": "its method for it failed", "completion": fenced(repair)}));
    lines.push(json!({"when": "You are ROBIN", "completion": fenced(TRAPPY_SHARE)}));
    lines
}

/// `counter.share` written by a cycle held to one example (`[5] => 2`), with `count` at 10.
fn synthesize_share(host: &Host) {
    set(host, "counter", "count", json!(10));
    let reply = ask(
        &host.dealer(),
        json!({"op": "send", "to": "counter", "selector": "share", "args": [2], "examples": [{"args": [5], "answer": 2}]}),
    );
    assert_eq!(reply["result"], 5, "{reply}");
}

#[test]
fn a_trap_in_a_synthesized_method_opens_a_repair_whose_method_is_a_new_version() {
    let host = host(&share_script(FIXED_SHARE));
    let dealer = host.dealer();
    synthesize_share(&host);
    // Dividing by zero traps; the repair cycle writes version 2 and answers the message.
    let reply = ask(
        &dealer,
        json!({"op": "send", "to": "counter", "selector": "share", "args": [0]}),
    );
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["result"], 0, "{reply}");
    let list = cycles(&host);
    assert_eq!(list.len(), 2, "{list:?}");
    let repair = &list[1];
    let events = events(&host, &repair["id"]);
    let opened = events
        .iter()
        .find(|e| e["kind"] == "opened")
        .expect("opened");
    assert_eq!(opened["data"]["repair"]["code"], "method-trap", "{opened}");
    assert_eq!(opened["data"]["repair"]["version"], 1, "{opened}");
    let brief = events
        .iter()
        .find(|e| e["kind"] == "brief")
        .expect("a brief");
    let brief = brief["data"]["brief"].as_str().expect("brief text");
    assert!(
        brief.contains("failed on these arguments") && brief.contains("me.int(\"count\") / d"),
        "{brief}"
    );
    // The first cycle's example was checked again.
    let trial = events
        .iter()
        .find(|e| e["kind"] == "examples")
        .expect("the examples checked");
    assert_eq!(trial["data"]["passed"], 1, "{trial}");
    let method = ask(
        &dealer,
        json!({"op": "method", "to": "counter", "selector": "share"}),
    );
    assert_eq!(method["result"]["version"], 2, "{method}");
    assert_eq!(
        method["result"]["versions"].as_array().map(Vec::len),
        Some(2),
        "{method}"
    );
    assert!(
        method["result"]["source"]
            .as_str()
            .is_some_and(|s| s.contains("d == 0")),
        "{method}"
    );
    assert_eq!(method["result"]["origin"], "synthesized", "{method}");
}

#[test]
fn a_repair_that_breaks_an_earlier_example_is_refused_and_the_trap_is_answered() {
    let host = host(&share_script(BROKEN_SHARE));
    let dealer = host.dealer();
    synthesize_share(&host);
    set(&host, "cognition", "attempts", json!(1));
    let reply = ask(
        &dealer,
        json!({"op": "send", "to": "counter", "selector": "share", "args": [0]}),
    );
    assert_eq!(reply["error"]["code"], "method-trap", "{reply}");
    let message = reply["error"]["message"].as_str().expect("message");
    assert!(message.contains("its repair (cycle"), "{message}");
    let method = ask(
        &dealer,
        json!({"op": "method", "to": "counter", "selector": "share"}),
    );
    assert_eq!(method["result"]["version"], 1, "{method}");
}

#[test]
fn traps_in_hand_installed_methods_or_with_repairs_off_are_answered_as_they_are() {
    let host = host(&share_script(FIXED_SHARE));
    let dealer = host.dealer();
    set(&host, "counter", "count", json!(10));
    let source = format!("use batos_sdk::prelude::*;\n{TRAPPY_SHARE}");
    let reply = ask(
        &dealer,
        json!({"op": "install", "to": "counter", "selector": "split", "source": source}),
    );
    assert_eq!(reply["ok"], true, "{reply}");
    let reply = ask(
        &dealer,
        json!({"op": "send", "to": "counter", "selector": "split", "args": [0]}),
    );
    assert_eq!(reply["error"]["code"], "method-trap", "{reply}");
    assert!(cycles(&host).is_empty());
    // A synthesized one with `repair_traps` off.
    let reply = ask(
        &dealer,
        json!({"op": "send", "to": "counter", "selector": "share", "args": [2]}),
    );
    assert_eq!(reply["result"], 5, "{reply}");
    set(&host, "cognition", "repair_traps", json!("off"));
    let reply = ask(
        &dealer,
        json!({"op": "send", "to": "counter", "selector": "share", "args": [0]}),
    );
    assert_eq!(reply["error"]["code"], "method-trap", "{reply}");
    assert_eq!(cycles(&host).len(), 1);
}
