//! Examples end to end: a real host with the scripted mind (the test facility). A method that
//! compiles but answers wrongly is repaired, never installed; trials never touch the receiver;
//! bad or contradictory examples are refused; a method whose right answer is an Err installs.

use std::path::Path;

use serde_json::{Value, json};

use crate::support::{Host, Scratch, ask};

/// Compiles, passes every gate, and answers the old count without storing anything: the
/// method the issue saw installed.
const WRONG_DOUBLE: &str = "pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {\n    let n = me.get(\"count\").and_then(|v| v.as_i64()).unwrap_or(0);\n    Ok(json!(n))\n}";
const GOOD_DOUBLE: &str = "pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {\n    let n = me.get(\"count\").and_then(|v| v.as_i64()).unwrap_or(0) * 2;\n    me.set(\"count\", json!(n))?;\n    me.notify_changed();\n    Ok(json!(n))\n}";
/// Writes to another object (the lobby): each example must start from the same lobby.
const BUMP: &str = "pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {\n    let lobby = Obj::named(\"lobby\").ok_or(\"no lobby\")?;\n    let n = lobby.int(\"bumps\") + 1;\n    lobby.set(\"bumps\", json!(n))?;\n    lobby.notify_changed();\n    Ok(json!(n))\n}";
/// Refuses a negative count: its right answer to some inputs is an Err.
const CHECK: &str = "pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {\n    let n = me.get(\"count\").and_then(|v| v.as_i64()).unwrap_or(0);\n    if n < 0 {\n        return Err(\"negative\".to_string());\n    }\n    Ok(json!(n))\n}";

fn fenced(source: &str) -> String {
    format!("```rust\n{source}\n```\n")
}

fn script(dir: &Path) -> std::path::PathBuf {
    let lines = [
        json!({"when": "You are BRICK", "completion": "Read count, double it, store it, answer it."}),
        json!({"when": "You are ALFRED", "completion": "Store the doubled count and answer it."}),
        json!({"when": "You are LUCIUS", "completion": "- `[] => 42, count: 42`\nnot an example\n[] => 42"}),
        json!({"when": "method `check`", "completion": fenced(CHECK)}),
        json!({"when": "method `bump`", "completion": fenced(BUMP)}),
        json!({"when": "The last attempt failed", "completion": fenced(GOOD_DOUBLE)}),
        json!({"when": "You are ROBIN", "completion": fenced(WRONG_DOUBLE)}),
    ];
    let path = dir.join("mind.jsonl");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, text).expect("script");
    path
}

fn host() -> Host {
    let scratch = Scratch::new();
    let script = script(scratch.dir.path());
    Host::start_with(scratch, "normal", &format!("scripted:{}", script.display()))
}

fn cycles(host: &Host) -> Vec<Value> {
    let reply = ask(&host.dealer(), json!({"op": "cycles"}));
    reply["result"].as_array().expect("cycles").clone()
}

#[test]
fn a_method_that_fails_an_example_is_repaired_not_installed_and_trials_leave_no_trace() {
    let host = host();
    let dealer = host.dealer();
    ask(
        &dealer,
        json!({"op": "set", "to": "counter", "slot": "count", "value": 21}),
    );
    let before = ask(&dealer, json!({"op": "history", "to": "counter"}));
    let examples = json!([
        {"args": [], "answer": 42, "slots": {"count": 42}},
        {"args": [], "answer": 42.0},
    ]);
    let reply = ask(
        &dealer,
        json!({"id": 1, "op": "send", "to": "counter", "selector": "double", "examples": examples}),
    );
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["result"], 42);
    // The first candidate compiled and passed every gate, then failed the examples: repaired.
    let list = cycles(&host);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["state"], "complete");
    assert_eq!(list[0]["attempts"], 2);
    let transcript = ask(&dealer, json!({"op": "cycle", "cycle": list[0]["id"]}));
    let events = transcript["result"]["events"].as_array().expect("events");
    let trials: Vec<&Value> = events.iter().filter(|e| e["kind"] == "examples").collect();
    assert_eq!(trials.len(), 2, "{transcript}");
    assert_eq!(trials[0]["data"]["passed"], 0);
    let failure = trials[0]["data"]["failed"][0].as_str().expect("a failure");
    assert!(
        failure.contains("should answer 42, answered 21")
            && failure.contains("slot `count` should be 42, is 21"),
        "{failure}"
    );
    assert_eq!(trials[1]["data"]["passed"], 2);
    let diagnostic = events
        .iter()
        .find(|e| e["kind"] == "diagnostic")
        .expect("a diagnostic");
    assert_eq!(diagnostic["data"]["stage"], "examples", "{diagnostic}");
    assert_eq!(diagnostic["data"]["code"], "wrong-answer", "{diagnostic}");
    // The brief told the writer the examples.
    let brief = events
        .iter()
        .find(|e| e["kind"] == "brief")
        .expect("a brief");
    assert!(
        brief["data"]["brief"]
            .as_str()
            .is_some_and(|b| b.contains("run(me, []) answers Ok(42); afterwards count = 42")),
        "{brief}"
    );
    // One version, the good one; the wrong candidate never reached the image.
    let method = ask(
        &dealer,
        json!({"op": "method", "to": "counter", "selector": "double"}),
    );
    assert_eq!(method["result"]["version"], 1, "{method}");
    assert!(
        method["result"]["source"]
            .as_str()
            .is_some_and(|s| s.contains("* 2")),
        "{method}"
    );
    // The receiver saw exactly one more transaction: the install with its first answer. No
    // trial, scratch object or rolled-back install is in the history.
    let after = ask(&dealer, json!({"op": "history", "to": "counter"}));
    let (before, after) = (
        before["result"].as_array().expect("history").len(),
        after["result"].as_array().expect("history").len(),
    );
    assert_eq!(after, before + 1);
    let count = ask(
        &dealer,
        json!({"op": "get", "to": "counter", "slot": "count"}),
    );
    assert_eq!(count["result"], 42);
}

#[test]
fn malformed_examples_are_bad_requests_and_open_no_cycle() {
    let host = host();
    let dealer = host.dealer();
    for examples in [
        json!("[] => 1"),
        json!([{"answer": 1}]),
        json!([{"args": 1, "answer": 1}]),
        json!([{"args": [], "answer": 1, "error": true}]),
        json!([{"args": []}]),
        json!([{"args": [], "answer": 1, "slot": {}}]),
        json!([{"args": [], "error": true, "slots": {"count": 5}}]),
        Value::Array((0..33).map(|i| json!({"args": [i], "answer": i})).collect()),
        json!([{"args": ["x".repeat(70_000)], "answer": 1}]),
    ] {
        let reply = ask(
            &dealer,
            json!({"op": "send", "to": "counter", "selector": "double", "examples": examples}),
        );
        assert_eq!(
            reply["error"]["code"], "bad-request",
            "{examples:.80}: {reply}"
        );
    }
    assert!(cycles(&host).is_empty());
}

#[test]
fn contradicting_examples_end_the_cycle_failed_with_that_reason() {
    let host = host();
    let reply = ask(
        &host.dealer(),
        json!({"op": "send", "to": "counter", "selector": "double", "examples": [
            {"args": [1], "answer": 2}, {"args": [1.0], "answer": 3}
        ]}),
    );
    assert_eq!(reply["error"]["code"], "does-not-understand", "{reply}");
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("contradict"), "{message}");
    let list = cycles(&host);
    assert_eq!(list[0]["state"], "failed");
    let method = ask(
        &host.dealer(),
        json!({"op": "method", "to": "counter", "selector": "double"}),
    );
    assert_eq!(method["ok"], false, "{method}");
}

#[test]
fn a_method_whose_right_answer_is_an_err_is_installed_and_answers_it() {
    let host = host();
    let dealer = host.dealer();
    ask(
        &dealer,
        json!({"op": "set", "to": "counter", "slot": "count", "value": -1}),
    );
    let reply = ask(
        &dealer,
        json!({"op": "send", "to": "counter", "selector": "check", "examples": [{"args": [], "error": true}]}),
    );
    assert_eq!(reply["error"]["code"], "method-error", "{reply}");
    assert_eq!(reply["error"]["message"], "negative", "{reply}");
    assert_eq!(cycles(&host)[0]["state"], "complete");
    // Installed: the next message runs it without a cycle.
    ask(
        &dealer,
        json!({"op": "set", "to": "counter", "slot": "count", "value": 5}),
    );
    let reply = ask(
        &dealer,
        json!({"op": "send", "to": "counter", "selector": "check"}),
    );
    assert_eq!(reply["result"], 5, "{reply}");
    assert_eq!(cycles(&host).len(), 1);
}

#[test]
fn the_command_line_reads_examples_and_refuses_bad_ones_before_sending() {
    let scratch = Scratch::new();
    assert!(scratch.batos(&["init", "--mind", "none"]).status.success());
    let out = scratch.batos(&["send", "counter", "double", "--example", "3 => 8"]);
    assert!(!out.status.success());
    assert!(
        crate::support::stderr(&out).contains("must be a JSON array"),
        "{}",
        crate::support::stderr(&out)
    );
    let file = scratch.dir.path().join("examples.json");
    std::fs::write(&file, r#"[{"args": [], "answer": 1, "error": true}]"#).expect("file");
    let out = scratch.batos(
        &["send", "counter", "double", "--examples"]
            .into_iter()
            .chain([file.to_str().expect("utf-8")])
            .collect::<Vec<_>>(),
    );
    assert!(
        crate::support::stderr(&out).contains("both `answer` and `error`"),
        "{}",
        crate::support::stderr(&out)
    );
    // Well-formed: the request goes out (offline, no cycle runs: does-not-understand).
    let out = scratch.batos(&[
        "send",
        "counter",
        "double",
        "--example",
        "[] => 0, count: 0",
    ]);
    assert!(
        crate::support::stderr(&out).contains("does-not-understand"),
        "{}",
        crate::support::stderr(&out)
    );
}

/// The SDK's owned helpers, as the contract's examples use them, in a real compiled method.
#[test]
fn the_sdk_helpers_read_slots_and_arguments_as_owned_typed_values() {
    let host = Host::start("normal");
    let dealer = host.dealer();
    let source = "use batos_sdk::prelude::*;\npub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {\n    let mut items = me.list(\"items\");\n    items.push(json!(arg_text(&args, 0)?));\n    let n = me.int(\"count\") + arg_int(&args, 1)?;\n    me.set(\"items\", json!(items))?;\n    me.set(\"count\", json!(n))?;\n    me.notify_changed();\n    Ok(json!([items.len(), n, me.float(\"rate\") * 2.0, me.text(\"name\"), arg_list(&args, 2)?.len(), me.bool(\"on\")]))\n}\n";
    let reply = ask(
        &dealer,
        json!({"op": "install", "to": "counter", "selector": "add", "source": source}),
    );
    assert_eq!(reply["ok"], true, "{reply}");
    for (slot, value) in [
        ("rate", json!(1.5)),
        ("name", json!("c")),
        ("on", json!(true)),
    ] {
        ask(
            &dealer,
            json!({"op": "set", "to": "counter", "slot": slot, "value": value}),
        );
    }
    let send = |args: Value| {
        ask(
            &dealer,
            json!({"op": "send", "to": "counter", "selector": "add", "args": args}),
        )
    };
    // Absent slots read as an empty list and 0; present ones as what they hold.
    let reply = send(json!(["a", 2, [1, 2]]));
    assert_eq!(reply["result"], json!([1, 2, 3.0, "c", 2, true]), "{reply}");
    let reply = send(json!(["b", 3.0, []]));
    assert_eq!(reply["result"], json!([2, 5, 3.0, "c", 0, true]), "{reply}");
    // Bad arguments are Errs that say which and why (and change nothing).
    for (args, says) in [
        (json!([]), "argument 1 is missing (0 given)"),
        (json!([1, 2, []]), "argument 1 must be a string, not 1"),
        (
            json!(["a", 2.5, []]),
            "argument 2 must be an integer, not 2.5",
        ),
        (json!(["a", 1, 3]), "argument 3 must be a list, not 3"),
    ] {
        let reply = send(args);
        assert_eq!(reply["error"]["code"], "method-error", "{reply}");
        assert_eq!(reply["error"]["message"], says, "{reply}");
    }
    let count = ask(
        &dealer,
        json!({"op": "get", "to": "counter", "slot": "count"}),
    );
    assert_eq!(count["result"], 5);
}

#[test]
fn a_later_cycle_is_shown_the_installed_methods_most_like_its_mission() {
    let host = host();
    let dealer = host.dealer();
    let reply = ask(
        &dealer,
        json!({"op": "send", "to": "counter", "selector": "double", "examples": [{"args": [], "answer": 0}]}),
    );
    assert_eq!(reply["ok"], true, "{reply}");
    let reply = ask(
        &dealer,
        json!({"op": "send", "to": "counter", "selector": "double_twice", "intent": "double the count twice"}),
    );
    assert_eq!(reply["ok"], true, "{reply}");
    let list = cycles(&host);
    let transcript = ask(&dealer, json!({"op": "cycle", "cycle": list[1]["id"]}));
    let events = transcript["result"]["events"].as_array().expect("events");
    let memory = events
        .iter()
        .find(|e| e["kind"] == "memory")
        .expect("a memory event");
    assert_eq!(
        memory["data"]["recalled"][0]["method"], "counter.double",
        "{memory}"
    );
    let prompt = events
        .iter()
        .filter(|e| e["kind"] == "prompt")
        .filter_map(|e| e["data"]["prompt"].as_str())
        .find(|p| p.contains("Methods already in this image"))
        .expect("the writer was shown them");
    assert!(prompt.contains("// counter.double"), "{prompt}");
}

#[test]
fn with_the_setting_on_examples_are_written_from_the_intent_and_checked() {
    let host = host();
    let dealer = host.dealer();
    let r = ask(
        &dealer,
        json!({"op": "set", "to": "cognition", "slot": "examples_from_intent", "value": true}),
    );
    assert_eq!(r["ok"], true, "{r}");
    ask(
        &dealer,
        json!({"op": "set", "to": "counter", "slot": "count", "value": 21}),
    );
    let reply = ask(
        &dealer,
        json!({"op": "send", "to": "counter", "selector": "double", "intent": "double count, store and answer it"}),
    );
    assert_eq!(reply["result"], 42, "{reply}");
    let list = cycles(&host);
    assert_eq!(
        list[0]["attempts"], 2,
        "the wrong first candidate failed a written example"
    );
    let transcript = ask(&dealer, json!({"op": "cycle", "cycle": list[0]["id"]}));
    let events = transcript["result"]["events"].as_array().expect("events");
    let written = events
        .iter()
        .find(|e| e["kind"] == "examples-written")
        .expect("written examples");
    // Two lines parsed (the bullet and backticks are taken off), the prose line skipped.
    assert_eq!(
        written["data"]["examples"],
        json!([{"args": [], "answer": 42, "slots": {"count": 42}}, {"args": [], "answer": 42}]),
        "{written}"
    );
}

#[test]
fn an_err_is_installed_only_when_an_example_asks_it_of_the_same_arguments() {
    let host = host();
    let dealer = host.dealer();
    ask(
        &dealer,
        json!({"op": "set", "to": "cognition", "slot": "attempts", "value": 2}),
    );
    ask(
        &dealer,
        json!({"op": "set", "to": "counter", "slot": "count", "value": -1}),
    );
    // The example asks an Err of other arguments; the message's own call errs: not installed.
    let reply = ask(
        &dealer,
        json!({"op": "send", "to": "counter", "selector": "check", "examples": [{"args": [1], "error": true}]}),
    );
    assert_eq!(reply["error"]["code"], "does-not-understand", "{reply}");
    assert_eq!(cycles(&host)[0]["state"], "failed");
    let method = ask(
        &dealer,
        json!({"op": "method", "to": "counter", "selector": "check"}),
    );
    assert_eq!(method["ok"], false, "{method}");
}

#[test]
fn examples_do_not_see_each_others_writes_to_other_objects() {
    let host = host();
    let dealer = host.dealer();
    let reply = ask(
        &dealer,
        json!({"op": "send", "to": "counter", "selector": "bump", "examples": [
            {"args": [], "answer": 1}, {"args": [1], "answer": 1}, {"args": [2], "answer": 1}
        ]}),
    );
    assert_eq!(reply["result"], 1, "{reply}");
    assert_eq!(cycles(&host)[0]["attempts"], 1);
    // The lobby saw the first message's write only.
    let bumps = ask(
        &dealer,
        json!({"op": "get", "to": "lobby", "slot": "bumps"}),
    );
    assert_eq!(bumps["result"], 1, "{bumps}");
}

#[test]
fn an_err_is_not_installed_on_the_strength_of_an_example_the_model_wrote() {
    let scratch = Scratch::new();
    let path = scratch.dir.path().join("mind.jsonl");
    let lines = [
        json!({"when": "You are BRICK", "completion": "Answer the count."}),
        json!({"when": "You are LUCIUS", "completion": "[] => error"}),
        json!({"when": "You are ALFRED", "completion": "Answer the count."}),
        json!({"when": "You are ROBIN", "completion": fenced(CHECK)}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, text).expect("script");
    let host = Host::start_with(scratch, "normal", &format!("scripted:{}", path.display()));
    let dealer = host.dealer();
    for (object, slot, value) in [
        ("cognition", "examples_from_intent", json!(true)),
        ("cognition", "attempts", json!(1)),
        ("counter", "count", json!(-1)),
    ] {
        let r = ask(
            &dealer,
            json!({"op": "set", "to": object, "slot": slot, "value": value}),
        );
        assert_eq!(r["ok"], true, "{r}");
    }
    // The written example passes (the method errs); the message's own call errs too: without a
    // client's example asking for that Err, nothing is installed.
    let reply = ask(
        &dealer,
        json!({"op": "send", "to": "counter", "selector": "check"}),
    );
    assert_eq!(reply["error"]["code"], "does-not-understand", "{reply}");
    let method = ask(
        &dealer,
        json!({"op": "method", "to": "counter", "selector": "check"}),
    );
    assert_eq!(method["ok"], false, "{method}");
}
