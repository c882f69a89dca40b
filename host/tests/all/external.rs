//! An external mind (`--mind openai:http://…/v1`): a real host whose cycles ask an engine over
//! the OpenAI-compatible HTTP API. llama.cpp's own server (the xllamacpp wheel) is driven
//! through a whole cycle; loopback servers in the test answer as an engine would, or fail as
//! one can (a 500, a hang, nothing listening, a stream cut short).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Host, Scratch, ask};

/// How an engine answers one request.
#[derive(Clone)]
enum Answer {
    /// 200 with this text streamed as server-sent events, in two chunks.
    Stream(String),
    /// This status, with a small JSON error body.
    Status(u16),
    /// Reads the request and never answers.
    Hang,
    /// 200 with a stream that stops halfway (no finish, no `[DONE]`).
    Cut,
}

/// An engine on a free loopback port: answers requests in turn from `script` (the last one
/// again once the script is spent), and keeps each request's body.
fn engine(script: Vec<Answer>) -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
    let endpoint = format!("http://{}/v1", listener.local_addr().expect("an address"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&seen);
    std::thread::spawn(move || {
        let mut n = 0;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let answer = script[n.min(script.len() - 1)].clone();
            n += 1;
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            if let Ok(mut seen) = kept.lock() {
                seen.push(serde_json::from_slice(&body).unwrap_or(Value::Null));
            }
            let reply = match answer {
                Answer::Hang => {
                    std::thread::sleep(Duration::from_secs(30));
                    continue;
                }
                Answer::Status(code) => {
                    let body = r#"{"error":{"message":"overloaded"}}"#;
                    format!(
                        "HTTP/1.1 {code} Error\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                }
                Answer::Stream(text) => {
                    let (a, b) = text.split_at(text.len() / 2);
                    let chunk = |piece: &str, end: bool| {
                        let event = json!({"choices": [{"delta": {"content": piece}, "finish_reason": if end { json!("stop") } else { Value::Null }}]});
                        format!("data: {event}\n\n")
                    };
                    let events = format!("{}{}data: [DONE]\n\n", chunk(a, false), chunk(b, true));
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{events}",
                        events.len()
                    )
                }
                Answer::Cut => {
                    let events =
                        "data: {\"choices\":[{\"delta\":{\"content\":\"    let n\"}}]}\n\n";
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n{events}"
                    )
                }
            };
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    (endpoint, seen)
}

/// The rest of a method after the writer's prefill (`pub fn run(…) {` and a newline).
const DOUBLE: &str = "    let n = me.get(\"count\").and_then(|v| v.as_i64()).unwrap_or(0) * 2;\n    me.set(\"count\", json!(n))?;\n    me.notify_changed();\n    Ok(json!(n))\n}\n```\n";

fn host_on(endpoint: &str) -> Host {
    Host::start_with_args(
        Scratch::new(),
        "normal",
        &format!("openai:{endpoint}"),
        &["--model", "test-model"],
    )
}

fn set(host: &Host, slot: &str, value: Value) {
    let dealer = host.dealer();
    let reply = ask(
        &dealer,
        json!({"op": "set", "to": "cognition", "slot": slot, "value": value}),
    );
    assert_eq!(reply["ok"], json!(true), "{reply}");
}

#[test]
fn an_external_engine_writes_the_method_after_a_500_is_retried() {
    let (endpoint, seen) = engine(vec![Answer::Status(500), Answer::Stream(DOUBLE.into())]);
    let host = host_on(&endpoint);
    set(&host, "attempts", json!(1));
    let dealer = host.dealer();
    dealer.set_rcvtimeo(120_000).expect("timeout");
    let reply = ask(
        &dealer,
        json!({"op": "send", "to": "counter", "selector": "double",
               "intent": "double count, store it and answer it"}),
    );
    assert_eq!(reply["ok"], json!(true), "{reply}");
    assert_eq!(reply["result"], json!(0));
    let seen = seen.lock().expect("requests").clone();
    // The 500, its retry, then the writer's turn (and the plan before it).
    assert!(seen.len() >= 3, "{seen:?}");
    let last = seen.last().expect("a request");
    assert_eq!(last["model"], json!("test-model"));
    assert_eq!(last["stream"], json!(true));
    assert!(
        last["repeat_penalty"].as_f64().is_some_and(|p| p > 1.0),
        "{last}"
    );
    assert_eq!(last["messages"][0]["role"], json!("system"));
    assert_eq!(
        last["messages"]
            .as_array()
            .and_then(|m| m.last())
            .map(|m| m["role"].clone()),
        Some(json!("assistant")),
        "the prefill goes as the assistant's unfinished answer"
    );
    // The transcript names the engine and the model.
    let cycles = ask(&dealer, json!({"op": "cycles"}));
    let id = cycles["result"][0]["id"].clone();
    let transcript = ask(&dealer, json!({"op": "cycle", "cycle": id}));
    let text = transcript.to_string();
    assert!(text.contains("test-model at http://127.0.0.1"), "{text}");
    // And the method's report says which mind wrote it.
    let method = ask(
        &dealer,
        json!({"op": "method", "to": "counter", "selector": "double"}),
    );
    let wrote = method["result"]["report"]["mind"]
        .as_str()
        .unwrap_or_default();
    assert!(
        wrote.starts_with("test-model at http://127.0.0.1"),
        "{method}"
    );
}

#[test]
fn an_engine_that_fails_fails_the_cycle_with_what_was_wrong_and_installs_nothing() {
    // Nothing listening; a stream cut short; a hang past the cycle's time.
    let gone = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
        let endpoint = format!("http://{}/v1", listener.local_addr().expect("address"));
        drop(listener);
        endpoint
    };
    let (cut, _) = engine(vec![Answer::Cut]);
    let (hang, _) = engine(vec![Answer::Hang]);
    for (endpoint, says) in [
        (gone, "cannot reach the engine"),
        (cut, "ended in the middle"),
        (hang, "time"),
    ] {
        let host = host_on(&endpoint);
        set(&host, "attempts", json!(1));
        set(&host, "time_limit_s", json!(3));
        let dealer = host.dealer();
        dealer.set_rcvtimeo(60_000).expect("timeout");
        let reply = ask(
            &dealer,
            json!({"op": "send", "to": "counter", "selector": "double"}),
        );
        assert_eq!(reply["ok"], json!(false), "{reply}");
        let message = reply["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{endpoint}: {reply}");
        let methods = ask(&dealer, json!({"op": "methods", "to": "counter"}));
        assert!(
            !methods.to_string().contains("\"double\""),
            "nothing installed: {methods}"
        );
    }
}

/// llama.cpp's own server (the xllamacpp wheel) with the suite's small model, driven by a host as
/// its external mind through a whole cycle: every turn goes to the engine and back into the
/// transcript. (The small model writes no correct method; the cycle is what is tested.)
#[test]
fn llama_cpps_server_is_driven_through_a_whole_cycle() {
    let model = batos::mind::catalog::find(crate::support::MODEL)
        .and_then(|m| m.path())
        .expect("the model cache path");
    assert!(
        model.exists(),
        "no model at {}: run scripts/setup",
        model.display()
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/engines/llama_server.py"
    );
    let mut server = std::process::Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .arg(&model)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 runs llama.cpp's server (scripts/setup installs xllamacpp)");
    let mut ready = String::new();
    let _ = BufReader::new(server.stdout.take().expect("stdout")).read_line(&mut ready);
    // The server goes when the test does, passed or failed.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Killed(server);
    assert_eq!(ready.trim(), "ready", "llama.cpp's server did not start");
    let host = host_on(&format!("http://127.0.0.1:{port}/v1"));
    set(&host, "attempts", json!(1));
    let dealer = host.dealer();
    dealer.set_rcvtimeo(300_000).expect("timeout");
    let reply = ask(
        &dealer,
        json!({"op": "send", "to": "counter", "selector": "triple",
               "intent": "multiply count by 3, store it and answer it"}),
    );
    assert!(reply.get("ok").is_some(), "{reply}");
    let cycles = ask(&dealer, json!({"op": "cycles"}));
    let id = cycles["result"][0]["id"].clone();
    let transcript = ask(&dealer, json!({"op": "cycle", "cycle": id}));
    let events = transcript["result"]["events"].as_array().expect("events");
    let completions: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == json!("completion"))
        .collect();
    // The plan and at least one writer's turn, each with the engine's text.
    assert!(completions.len() >= 2, "{transcript}");
    assert!(
        completions
            .iter()
            .all(|c| !c["data"].to_string().is_empty()),
        "{transcript}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == json!("transition") && e["data"]["to"] == json!("compiling")),
        "the engine's method went on to the compiler: {transcript}"
    );
    assert!(
        transcript
            .to_string()
            .contains(&format!("test-model at http://127.0.0.1:{port}/v1")),
        "the transcript names the engine"
    );
}

/// The same engine named on the image's `mind` object instead of the command line: a host
/// started with `--mind image` runs it (and never loads a model of its own).
#[test]
fn an_engine_named_on_the_mind_object_is_the_hosts_mind() {
    let (endpoint, seen) = engine(vec![Answer::Stream(DOUBLE.into())]);
    let scratch = Scratch::new();
    let init = scratch.batos(&["init", "--mind", "none"]);
    assert!(init.status.success(), "{}", crate::support::stderr(&init));
    let _ = scratch.batos(&["create", "--name", "mind"]);
    for (slot, value) in [("endpoint", endpoint.as_str()), ("model", "object-model")] {
        let set = scratch.batos(&["set", "mind", slot, &json!(value).to_string()]);
        assert!(set.status.success(), "{}", crate::support::stderr(&set));
    }
    let host = Host::start_with_args(scratch, "normal", "image", &[]);
    set(&host, "attempts", json!(1));
    let dealer = host.dealer();
    dealer.set_rcvtimeo(120_000).expect("timeout");
    let reply = ask(
        &dealer,
        json!({"op": "send", "to": "counter", "selector": "double"}),
    );
    assert_eq!(reply["ok"], json!(true), "{reply}");
    let seen = seen.lock().expect("requests").clone();
    assert_eq!(
        seen.last().map(|r| r["model"].clone()),
        Some(json!("object-model"))
    );
}

/// A host told to stop while its cycle waits on an engine that never answers stops (the wait
/// gives up on shutdown rather than at the cycle's hour-long deadline), and the message waiting
/// on that cycle is answered.
#[test]
fn a_host_stops_while_an_engine_hangs_and_answers_the_waiting_message() {
    let (endpoint, seen) = engine(vec![Answer::Hang]);
    let mut host = host_on(&endpoint);
    set(&host, "attempts", json!(1));
    set(&host, "time_limit_s", json!(3600));
    let dealer = host.dealer();
    dealer.set_rcvtimeo(60_000).expect("timeout");
    dealer
        .send(
            json!({"id": 1, "op": "send", "to": "counter", "selector": "double"})
                .to_string()
                .as_bytes(),
            0,
        )
        .expect("send");
    // Wait until the engine has the request, then stop the host.
    for _ in 0..200 {
        if !seen.lock().expect("requests").is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !seen.lock().expect("requests").is_empty(),
        "the engine was asked"
    );
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &host.child.id().to_string()])
        .status();
    let reply: Value = serde_json::from_slice(
        &dealer
            .recv_bytes(0)
            .expect("the waiting message is answered"),
    )
    .expect("json");
    assert_eq!(reply["id"], json!(1));
    assert_eq!(reply["ok"], json!(false), "{reply}");
    // A liveness bound, not a speed one: without the fix the host waits out the hour.
    let mut exited = None;
    for _ in 0..600 {
        exited = host.child.try_wait().expect("wait");
        if exited.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(exited.is_some(), "the host stopped");
}
