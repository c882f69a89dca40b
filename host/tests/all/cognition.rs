//! Cognition end to end: a real host with the scripted mind (the test facility) or the embedded
//! model, real compiles, real installs; cycles, their transcripts and their journal.

use std::path::Path;

use serde_json::{Value, json};

use crate::support::{Host, Scratch, ask, batos_at, integrity_ok, stderr, stdout};

const GOOD_DOUBLE: &str = "use batos_sdk::prelude::*;\n\npub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {\n    let n = me.get(\"count\").and_then(|v| v.as_i64()).unwrap_or(0) * 2;\n    me.set(\"count\", json!(n))?;\n    me.notify_changed();\n    Ok(json!(n))\n}";
const BAD_DOUBLE: &str = "pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {\n    let n: i64 = me.get(\"count\") * 2;\n    Ok(json!(n))\n}";
/// Writes without notifying: compiles, but the source gate (the covenant) refuses it.
/// Breaks the covenant in a way no rule repairs: its write's statement spans two lines.
const CARELESS: &str = "pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {\n    me.set(\"x\",\n        json!(1))?;\n    Ok(json!(1))\n}";
/// Breaks the covenant on one line, named after its selector: both are fixed by rule.
const FORGETFUL: &str = "pub fn forgetful(me: Obj, args: Vec<Value>) -> Result<Value, String> {\n    me.set(\"x\", json!(7))?;\n    Ok(json!(7))\n}";

fn fenced(source: &str) -> String {
    format!("Here is the method.\n```rust\n{source}\n```\n")
}

/// A script: the planner and reviewer always answer; the writer answers badly first and well
/// once told its last attempt failed; `mystery` never gets a good method.
fn script(dir: &Path) -> std::path::PathBuf {
    let lines = [
        json!({"when": "You are BRICK", "completion": "Read count, double it, store it, answer it."}),
        json!({"when": "You are ALFRED", "completion": "Fix the types and notify the change."}),
        json!({"when": "method `mystery`", "completion": fenced(CARELESS)}),
        json!({"when": "method `forgetful`", "completion": fenced(FORGETFUL)}),
        json!({"when": "The last attempt failed", "completion": fenced(GOOD_DOUBLE)}),
        json!({"when": "You are ROBIN", "completion": fenced(BAD_DOUBLE)}),
    ];
    let path = dir.join("mind.jsonl");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, text).expect("script");
    path
}

fn scripted_host() -> Host {
    let scratch = Scratch::new();
    let script = script(scratch.dir.path());
    Host::start_with(scratch, "normal", &format!("scripted:{}", script.display()))
}

fn send(host: &Host, id: i64, selector: &str) -> Value {
    ask(
        &host.dealer(),
        json!({"id": id, "op": "send", "to": "counter", "selector": selector}),
    )
}

#[test]
fn a_missing_method_is_written_repaired_installed_and_answers() {
    let host = scripted_host();
    let dealer = host.dealer();
    ask(
        &dealer,
        json!({"op": "set", "to": "counter", "slot": "count", "value": 21}),
    );
    let reply = send(&host, 1, "double");
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["result"], 42);
    // Installed: the next send runs it without a cycle.
    let reply = send(&host, 2, "double");
    assert_eq!(reply["result"], 84, "{reply}");
    let cycles = ask(&dealer, json!({"op": "cycles"}));
    let list = cycles["result"].as_array().expect("cycles");
    assert_eq!(list.len(), 1, "{cycles}");
    let cycle = &list[0];
    assert_eq!(cycle["state"], "complete");
    assert_eq!(cycle["attempts"], 2);
    assert_eq!(cycle["selector"], "double");
    assert!(cycle["ended"].is_string());
    let methods = ask(
        &dealer,
        json!({"op": "method", "to": "counter", "selector": "double"}),
    );
    assert_eq!(methods["result"]["origin"], "synthesized", "{methods}");
    assert_eq!(
        methods["result"]["report"]["cycle"], cycle["id"],
        "{methods}"
    );
    // The transcript: every state in order, with prompts, completions and the compile error.
    let transcript = ask(&dealer, json!({"op": "cycle", "cycle": cycle["id"]}));
    let events = transcript["result"]["events"].as_array().expect("events");
    let states: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "transition")
        .filter_map(|e| e["data"]["to"].as_str())
        .collect();
    assert_eq!(
        states,
        [
            "planning",
            "writing",
            "compiling",
            "writing",
            "compiling",
            "validating",
            "installing",
            "answering",
            "complete"
        ]
    );
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert!(
        kinds.contains(&"prompt") && kinds.contains(&"completion") && kinds.contains(&"diagnostic")
    );
    let diagnostic = events
        .iter()
        .find(|e| e["kind"] == "diagnostic")
        .expect("a diagnostic");
    assert_eq!(diagnostic["data"]["stage"], "compile", "{diagnostic}");
    // The repair came with the exact corrected line, at the model's own line number.
    assert_eq!(
        diagnostic["data"]["hints"][0],
        "line 2: `let n: i64 = me.get(\"count\") * 2;` -> `let n: i64 = me.int(\"count\") * 2;`",
        "{diagnostic}"
    );
    let repair_prompt = events
        .iter()
        .filter(|e| e["kind"] == "prompt")
        .filter_map(|e| e["data"]["prompt"].as_str())
        .find(|p| p.contains("The last attempt failed"))
        .expect("a repair prompt");
    assert!(
        repair_prompt.contains("Corrected lines (use these):"),
        "{repair_prompt}"
    );
    // The cycle object delegates to its state: `label` comes from `state_complete`.
    let label = ask(
        &dealer,
        json!({"op": "get", "to": cycle["id"], "slot": "label"}),
    );
    assert_eq!(label["result"], "complete", "{label}");
    // The journal beside the image holds the same events, one JSON line each.
    let journal = std::fs::read_to_string(format!(
        "{}.cycles.jsonl",
        host.scratch.image_path().display()
    ))
    .expect("journal");
    let lines: Vec<Value> = journal
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), events.len());
    assert!(lines.iter().all(|l| l["cycle"] == cycle["id"]));
}

#[test]
fn a_cycle_that_never_succeeds_fails_cleanly_and_installs_nothing() {
    let mut host = scripted_host();
    let dealer = host.dealer();
    let set = ask(
        &dealer,
        json!({"op": "set", "to": "cognition", "slot": "attempts", "value": 2}),
    );
    assert_eq!(set["ok"], true, "{set}");
    let reply = send(&host, 1, "mystery");
    assert_eq!(reply["error"]["code"], "does-not-understand", "{reply}");
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("cycle") && message.contains("failed"),
        "{message}"
    );
    assert!(
        message.contains("notify"),
        "the covenant refusal is the reason: {message}"
    );
    let cycles = ask(&dealer, json!({"op": "cycles"}));
    assert_eq!(cycles["result"][0]["state"], "failed", "{cycles}");
    assert_eq!(cycles["result"][0]["attempts"], 2, "{cycles}");
    // The writer repeated its first candidate: it was drawn again, sampled with a seed (the
    // scripted mind ignores both, so it repeats again; a model leaves the greedy path).
    let transcript = ask(
        &dealer,
        json!({"op": "cycle", "cycle": cycles["result"][0]["id"]}),
    );
    let events = transcript["result"]["events"].as_array().expect("events");
    let resampled: Vec<&Value> = events.iter().filter(|e| e["kind"] == "resample").collect();
    assert_eq!(resampled.len(), 1, "{transcript}");
    assert_eq!(resampled[0]["data"]["attempt"], 2);
    let sampled = events
        .iter()
        .filter(|e| e["kind"] == "prompt" && e["data"]["temperature"].as_f64() > Some(0.0))
        .count();
    assert_eq!(sampled, 1);
    let methods = ask(&dealer, json!({"op": "methods", "to": "counter"}));
    let selectors: Vec<&str> = methods["result"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|m| m["selector"].as_str())
        .collect();
    assert!(!selectors.contains(&"mystery"), "{methods}");
    host.terminate();
    let scratch = host.into_scratch();
    integrity_ok(&scratch.image_path());
    let out = scratch.batos(&["replay", "--verify"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_misnamed_entry_and_a_missing_notify_are_fixed_by_rule_without_a_model_turn() {
    let host = scripted_host();
    let dealer = host.dealer();
    let reply = send(&host, 1, "forgetful");
    assert_eq!(reply["result"], 7, "{reply}");
    let cycles = ask(&dealer, json!({"op": "cycles"}));
    let cycle = &cycles["result"][0];
    assert_eq!(cycle["attempts"], 1, "{cycles}");
    let transcript = ask(&dealer, json!({"op": "cycle", "cycle": cycle["id"]}));
    let events = transcript["result"]["events"].as_array().expect("events");
    let fixes: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "fix")
        .filter_map(|e| e["data"]["fix"].as_str())
        .collect();
    assert_eq!(fixes.len(), 2, "{fixes:?}");
    assert!(
        fixes[0].contains("`fn forgetful`") && fixes[1].contains("line 2"),
        "{fixes:?}"
    );
    // The installed source states the call, and the gates passed it as written.
    let method = ask(
        &dealer,
        json!({"op": "method", "to": "counter", "selector": "forgetful"}),
    );
    let source = method["result"]["source"].as_str().unwrap_or_default();
    assert!(
        source.contains("pub fn run(")
            && source.contains("me.set(\"x\", json!(7))?;\n    me.notify_changed();"),
        "{source}"
    );
}

#[test]
fn with_synthesis_off_a_missing_method_is_does_not_understand_at_once() {
    let host = scripted_host();
    let dealer = host.dealer();
    let set = ask(
        &dealer,
        json!({"op": "set", "to": "cognition", "slot": "synthesis", "value": false}),
    );
    assert_eq!(set["ok"], true, "{set}");
    let reply = send(&host, 1, "double");
    assert_eq!(reply["error"]["code"], "does-not-understand", "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("synthesis is off")),
        "{reply}"
    );
    let cycles = ask(&dealer, json!({"op": "cycles"}));
    assert_eq!(cycles["result"], json!([]), "{cycles}");
}

#[test]
fn two_clients_sending_the_same_missing_message_share_one_cycle() {
    let host = scripted_host();
    let (a, b) = (host.dealer(), host.dealer());
    let request = json!({"op": "send", "to": "counter", "selector": "double"});
    a.send(request.to_string().as_bytes(), 0).expect("send");
    b.send(request.to_string().as_bytes(), 0).expect("send");
    let ra: Value = serde_json::from_slice(&a.recv_bytes(0).expect("reply")).expect("json");
    let rb: Value = serde_json::from_slice(&b.recv_bytes(0).expect("reply")).expect("json");
    assert_eq!(ra["ok"], true, "{ra}");
    assert_eq!(rb["ok"], true, "{rb}");
    let cycles = ask(&host.dealer(), json!({"op": "cycles"}));
    assert_eq!(
        cycles["result"].as_array().map(Vec::len),
        Some(1),
        "{cycles}"
    );
}

#[test]
fn a_cycle_left_open_by_a_dead_host_is_failed_on_restart() {
    let scratch = Scratch::new();
    let script = script(scratch.dir.path());
    let path = scratch.image_path();
    {
        // What a host killed mid-cycle leaves: a cycle in `writing`.
        let mut image =
            batos::image::Image::create(&path, batos::image::Durability::Normal).expect("image");
        batos::cognition::ensure_objects(&mut image).expect("cognition objects");
        let writing = image.named("state_writing").expect("q").expect("state");
        let proto = image.named("cycle").expect("q").expect("proto");
        let slots = json!({"receiver": 1, "selector": "half", "state": "writing", "attempts": 1});
        let Value::Object(slots) = slots else {
            panic!()
        };
        image
            .transact("test", "a cycle cut short", |tx| {
                tx.create_object(&[writing, proto], None, slots)
            })
            .expect("cycle");
    }
    let host = Host::start_with(scratch, "normal", &format!("scripted:{}", script.display()));
    let cycles = ask(&host.dealer(), json!({"op": "cycles"}));
    let cycle = &cycles["result"][0];
    assert_eq!(cycle["state"], "failed", "{cycles}");
    assert!(
        cycle["outcome"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("host stopped")),
        "{cycle}"
    );
}

#[test]
fn cli_lists_cycles_shows_a_transcript_and_exports_successful_pairs() {
    let mut host = scripted_host();
    let reply = send(&host, 1, "double");
    assert_eq!(reply["ok"], true, "{reply}");
    host.terminate();
    let scratch = host.into_scratch();
    let image = scratch.image_path();
    let out = batos_at(&image, &["cycles"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("double") && stdout(&out).contains("complete"),
        "{}",
        stdout(&out)
    );
    let id = stdout(&out)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    let out = batos_at(&image, &["cycle", &id]);
    assert!(stdout(&out).contains("→ validating"), "{}", stdout(&out));
    let export = scratch.dir.path().join("pairs.jsonl");
    let out = batos_at(
        &image,
        &["cycles", "--export", &export.display().to_string()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let pairs: Vec<Value> = std::fs::read_to_string(&export)
        .expect("export")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    // Planner, writer, reviewer, writer again.
    assert_eq!(pairs.len(), 4, "{pairs:?}");
    assert!(
        pairs
            .iter()
            .all(|p| p["prompt"].is_string() && p["completion"].is_string())
    );
    let out = batos_at(&image, &["cycle", "999999"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no cycle"), "{}", stderr(&out));
}

#[test]
fn a_bad_script_is_refused_at_start() {
    let scratch = Scratch::new();
    let bad = scratch.dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"when\": 3}\n").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_batos"))
        .arg("--image")
        .arg(scratch.image_path())
        .args(["serve", "--bind", "tcp://127.0.0.1:1", "--mind"])
        .arg(format!("scripted:{}", bad.display()))
        .output()
        .expect("batos");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("line 1"), "{}", stderr(&out));
}

#[test]
fn the_embedded_model_runs_a_cycle_to_an_end_never_a_hang() {
    let model = batos::mind::catalog::find(crate::support::MODEL)
        .and_then(|m| m.path())
        .expect("model path");
    assert!(
        model.exists(),
        "run scripts/setup: the default model is missing"
    );
    let scratch = Scratch::new();
    {
        let out = scratch.batos(&["init", "--mind", "image"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let host = Host::start_with(scratch, "normal", "image");
    let dealer = host.dealer();
    // One short attempt: this is about the cycle ending, not about the model's skill.
    for (object, slot, value) in [
        ("cognition", "attempts", json!(1)),
        ("cognition", "time_limit_s", json!(300)),
        ("robin", "max_tokens", json!(96)),
        ("brick", "max_tokens", json!(24)),
    ] {
        let r = ask(
            &dealer,
            json!({"op": "set", "to": object, "slot": slot, "value": value}),
        );
        assert_eq!(r["ok"], true, "{r}");
    }
    let reply = ask(
        &dealer,
        json!({"op": "send", "to": "counter", "selector": "reset", "intent": "set count to 0 and answer 0"}),
    );
    let cycles = ask(&dealer, json!({"op": "cycles"}));
    let cycle = &cycles["result"][0];
    match cycle["state"].as_str() {
        Some("complete") => assert_eq!(reply["ok"], true, "{reply}"),
        Some("failed") => {
            assert_eq!(reply["error"]["code"], "does-not-understand", "{reply}");
            let transcript = ask(&dealer, json!({"op": "cycle", "cycle": cycle["id"]}));
            let events = transcript["result"]["events"].as_array().expect("events");
            assert!(
                events.iter().any(|e| e["kind"] == "diagnostic"),
                "a failed cycle says why: {transcript}"
            );
            assert!(
                events.iter().any(|e| e["kind"] == "completion"),
                "{transcript}"
            );
        }
        other => panic!("the cycle did not end: {other:?} {cycles}"),
    }
    let mut host = host;
    assert!(host.terminate().success());
}
