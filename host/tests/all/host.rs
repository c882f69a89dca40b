//! The host as clients see it: a real `batos serve` process, real ZeroMQ DEALER and REQ clients
//! (libzmq through the `zmq` crate), a real image file.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use batos::image::{Durability, Image};
use batos::object::ObjRef;
use serde_json::{Value, json};

use crate::support::{Dealer, Host, ask, integrity_ok, stderr, stdout};

fn raw(socket: &Dealer, payload: &[u8]) -> Value {
    socket.send(payload, 0).expect("send");
    serde_json::from_slice(&socket.recv_bytes(0).expect("reply")).expect("reply is JSON")
}

#[test]
fn dealer_and_req_clients_get_their_replies_with_ids_echoed() {
    let host = Host::start("normal");
    let dealer = host.dealer();
    let reply = ask(&dealer, json!({"id": {"any": ["json"]}, "op": "ping"}));
    assert_eq!(reply["id"], json!({"any": ["json"]}));
    assert_eq!(reply["ok"], json!(true));
    let reply = ask(
        &dealer,
        json!({"id": 1, "op": "send", "to": "counter", "selector": "increment"}),
    );
    assert_eq!(
        (reply["id"].clone(), reply["result"].clone()),
        (json!(1), json!(1))
    );

    // A read answered again from the host's read cache is never older than an acknowledged write.
    for n in 0..5 {
        let write = ask(
            &dealer,
            json!({"op": "set", "to": "lobby", "slot": "n", "value": n}),
        );
        assert_eq!(write["ok"], json!(true), "{write}");
        for _ in 0..3 {
            let read = ask(&dealer, json!({"op": "get", "to": "lobby", "slot": "n"}));
            assert_eq!(read["result"], json!(n));
        }
    }
    let req = zmq::Context::new().socket(zmq::REQ).expect("req");
    req.set_linger(0).expect("linger");
    req.connect(&host.endpoint).expect("connect");
    let req = Dealer::wrap(req, host.token());
    let reply = ask(
        &req,
        json!({"id": "r", "op": "get", "to": "counter", "slot": "count"}),
    );
    assert_eq!(
        (reply["id"].clone(), reply["result"].clone()),
        (json!("r"), json!(1))
    );
}

#[test]
fn every_malformed_input_gets_one_error_reply_and_the_host_serves_on() {
    let host = Host::start("normal");
    let dealer = host.dealer();
    let cases: &[(&[u8], &str)] = &[
        (b"not json", "bad-request"),
        (b"", "bad-request"),
        (b"[1, 2]", "bad-request"),
        (b"[]", "bad-request"),
        (b"42", "bad-request"),
        (b"{\"id\": 3}", "bad-request"),
        (b"{\"op\": 5}", "bad-request"),
        (b"{\"op\": \"fly\"}", "unknown-op"),
        (b"{\"op\": \"get\", \"to\": \"counter\"}", "bad-request"),
        (
            b"{\"op\": \"set\", \"to\": \"counter\", \"slot\": \"x\"}",
            "bad-request",
        ),
        (
            b"{\"op\": \"send\", \"to\": \"counter\", \"selector\": \"x\", \"args\": 7}",
            "bad-request",
        ),
        (
            b"{\"op\": \"get\", \"to\": \"nobody\", \"slot\": \"x\"}",
            "no-such-object",
        ),
        (
            b"{\"op\": \"send\", \"to\": \"lobby\", \"selector\": \"fly\"}",
            "does-not-understand",
        ),
        (b"\xff\xfe\x00binary", "bad-request"),
    ];
    for (payload, code) in cases {
        let reply = raw(&dealer, payload);
        assert_eq!(
            reply["ok"],
            json!(false),
            "{:?}",
            String::from_utf8_lossy(payload)
        );
        assert_eq!(
            reply["error"]["code"],
            json!(code),
            "{:?}",
            String::from_utf8_lossy(payload)
        );
    }
    // A request id survives even in a refused request.
    let reply = raw(&dealer, b"{\"id\": 99, \"op\": \"fly\"}");
    assert_eq!(reply["id"], json!(99));
    assert_eq!(ask(&dealer, json!({"op": "ping"}))["ok"], json!(true));
}

#[test]
fn fifty_clients_incrementing_one_counter_end_at_exactly_5000() {
    let host = Host::start("normal");
    let clients: Vec<_> = (0..50)
        .map(|_| {
            let dealer = host.dealer();
            std::thread::spawn(move || {
                for _ in 0..100 {
                    let reply = ask(
                        &dealer,
                        json!({"op": "send", "to": "counter", "selector": "increment"}),
                    );
                    assert_eq!(reply["ok"], json!(true), "{reply}");
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client thread");
    }
    let reply = ask(
        &host.dealer(),
        json!({"op": "get", "to": "counter", "slot": "count"}),
    );
    assert_eq!(reply["result"], json!(5000));
}

#[test]
fn an_oversized_message_costs_only_its_sender() {
    let host = Host::start("normal");
    let big = host.dealer();
    let payload = format!(
        "{{\"op\": \"set\", \"to\": \"lobby\", \"slot\": \"big\", \"value\": \"{}\"}}",
        "x".repeat(2 << 20)
    );
    big.send(payload.as_bytes(), 0).expect("send 2 MiB");
    // libzmq drops that connection (or the host answers too-large); either way others are served.
    let other = host.dealer();
    assert_eq!(ask(&other, json!({"op": "ping"}))["ok"], json!(true));
    let reply = ask(&other, json!({"op": "get", "to": "lobby", "slot": "big"}));
    assert_eq!(reply["error"]["code"], json!("no-such-slot"));
}

/// A REQ client whose message is refused before it is read as a request (too many frames, too
/// many bytes) still gets its one reply: REQ drops any reply without its empty delimiter.
#[test]
fn a_req_client_refused_at_the_frame_check_gets_its_reply() {
    let host = Host::start("normal");
    let req = zmq::Context::new().socket(zmq::REQ).expect("req");
    req.set_linger(0).expect("linger");
    req.set_rcvtimeo(10_000).expect("timeout");
    req.connect(&host.endpoint).expect("connect");
    req.send_multipart([&b"{}"[..], b"{}", b"{}", b"{}"], 0)
        .expect("send");
    let reply: Value = serde_json::from_slice(&req.recv_bytes(0).expect("a reply")).expect("json");
    assert_eq!(reply["error"]["code"], json!("too-large"), "{reply}");
    // A payload of exactly the limit is taken (the identity ROUTER adds does not count).
    let exact = format!(
        "{{\"op\": \"ping\", \"x\": \"{}\"}}",
        " ".repeat((1 << 20) - r#"{"op": "ping", "x": ""}"#.len())
    );
    assert_eq!(exact.len(), 1 << 20);
    req.send(exact.as_bytes(), 0).expect("send");
    let reply: Value = serde_json::from_slice(&req.recv_bytes(0).expect("a reply")).expect("json");
    assert_eq!(reply["ok"], json!(true), "{reply}");
}

/// A keyed request is answered the same whether or not its read is in the read cache: a retry
/// key applied before gets its recorded reply.
#[test]
fn a_keyed_read_gets_the_keys_recorded_reply_whatever_the_cache_holds() {
    let host = Host::start("normal");
    let client = host.dealer();
    let set = ask(
        &client,
        json!({"op": "set", "to": "lobby", "slot": "s", "value": 1, "key": "K"}),
    );
    assert_eq!(set["ok"], json!(true), "{set}");
    let cold = ask(
        &client,
        json!({"op": "get", "to": "lobby", "slot": "s", "key": "K"}),
    );
    // Warm the cache with the same read, unkeyed, then ask again with the key.
    for _ in 0..2 {
        ask(&client, json!({"op": "get", "to": "lobby", "slot": "s"}));
    }
    let warm = ask(
        &client,
        json!({"op": "get", "to": "lobby", "slot": "s", "key": "K"}),
    );
    assert_eq!(cold["replayed"], json!(true), "{cold}");
    assert_eq!(
        (warm["replayed"].clone(), warm["result"].clone()),
        (cold["replayed"].clone(), cold["result"].clone()),
        "{warm}"
    );
}

#[test]
fn a_slow_request_does_not_delay_a_ping_and_a_vanished_client_costs_nothing() {
    let host = Host::start("normal");
    let slow = host.dealer();
    let source = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/methods/infinite_loop.rs"),
    )
    .expect("source");
    let reply = ask(
        &slow,
        json!({"op": "install", "to": "lobby", "selector": "spin", "source": source}),
    );
    assert_eq!(reply["ok"], json!(true), "{reply}");
    slow.send(
        json!({"id": "slow", "op": "send", "to": "lobby", "selector": "spin"})
            .to_string()
            .as_bytes(),
        0,
    )
    .expect("send");
    let quick = host.dealer();
    let pong = ask(&quick, json!({"id": "quick", "op": "ping"}));
    assert_eq!(pong["id"], json!("quick"));
    // The slow one finishes afterwards, with its own answer.
    let late: Value =
        serde_json::from_slice(&slow.recv_bytes(0).expect("slow reply")).expect("json");
    assert_eq!(late["error"]["code"], json!("out-of-fuel"));

    // A client that sends and vanishes before its answer: the host logs it and serves on.
    let gone = host.dealer();
    gone.send(
        json!({"op": "send", "to": "lobby", "selector": "spin"})
            .to_string()
            .as_bytes(),
        0,
    )
    .expect("send");
    drop(gone);
    assert_eq!(
        ask(
            &quick,
            json!({"op": "get", "to": "counter", "slot": "count"})
        )["result"],
        json!(0)
    );
}

#[test]
fn a_client_that_never_reads_does_not_stall_the_others() {
    let host = Host::start("normal");
    let deaf = host.dealer();
    deaf.set_rcvhwm(1).expect("hwm");
    deaf.set_sndhwm(100_000).expect("hwm");
    let ping = json!({"op": "ping"}).to_string();
    for _ in 0..30_000 {
        deaf.send(ping.as_bytes(), zmq::DONTWAIT).ok();
    }
    let other = host.dealer();
    for n in 0..20 {
        let reply = ask(
            &other,
            json!({"id": n, "op": "get", "to": "counter", "slot": "count"}),
        );
        assert_eq!(reply["id"], json!(n));
    }
}

/// A client that sends thousands of requests before it reads one still gets exactly one reply
/// to each: replies past what libzmq holds for it wait in its backlog on the host, in order.
#[test]
fn a_client_that_asks_faster_than_it_reads_gets_exactly_one_reply_to_each() {
    let host = Host::start("normal");
    let eager = host.dealer();
    eager.set_rcvhwm(8).expect("hwm");
    eager.set_sndhwm(100_000).expect("hwm");
    eager.set_rcvtimeo(20_000).expect("timeout");
    let n = 3000;
    for id in 0..n {
        // Pings the socket thread answers, reads a worker answers (or the cache, or `busy`).
        let request = if id % 10 == 0 {
            json!({"id": id, "op": "get", "to": "counter", "slot": "count"})
        } else {
            json!({"id": id, "op": "ping"})
        };
        eager.send(request.to_string().as_bytes(), 0).expect("send");
    }
    let mut seen = vec![0u32; n];
    for _ in 0..n {
        let reply: Value =
            serde_json::from_slice(&eager.recv_bytes(0).expect("a reply for every request"))
                .expect("json");
        let id = reply["id"].as_u64().expect("an id") as usize;
        seen[id] += 1;
    }
    assert!(seen.iter().all(|&count| count == 1), "one reply each");
    eager.set_rcvtimeo(500).expect("timeout");
    assert!(eager.recv_bytes(0).is_err(), "and no more");
}

#[test]
fn the_command_line_talks_to_the_host() {
    let host = Host::start("normal");
    let out = host
        .scratch
        .batos_via(&host.endpoint, &["send", "counter", "increment"]);
    assert_eq!(stdout(&out), "1", "{}", stderr(&out));
    let out = host
        .scratch
        .batos_via(&host.endpoint, &["--json", "history", "--limit", "1"]);
    let history: Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert!(
        history[0]["actor"]
            .as_str()
            .unwrap_or_default()
            .starts_with("client:"),
        "{history}"
    );
    // Offline writes are refused while the host holds the lock, naming its pid.
    let out = host.scratch.batos(&["set", "lobby", "x", "1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("pid {}", host.child.id())),
        "{}",
        stderr(&out)
    );
    // Reads of the file work beside it.
    let out = host.scratch.batos(&["get", "counter", "count"]);
    assert_eq!(stdout(&out), "1");
}

/// Clients increment until told to stop, recording every acknowledged value.
fn load(host: &Host, clients: usize) -> (Arc<AtomicI64>, Vec<std::thread::JoinHandle<()>>) {
    let acknowledged = Arc::new(AtomicI64::new(0));
    let threads = (0..clients)
        .map(|_| {
            let dealer = host.dealer();
            dealer.set_rcvtimeo(10_000).expect("timeout");
            let acknowledged = Arc::clone(&acknowledged);
            std::thread::spawn(move || {
                let request =
                    json!({"op": "send", "to": "counter", "selector": "increment"}).to_string();
                loop {
                    if dealer.send(request.as_bytes(), 0).is_err() {
                        return;
                    }
                    let Ok(reply) = dealer.recv_bytes(0) else {
                        return;
                    };
                    let Ok(reply) = serde_json::from_slice::<Value>(&reply) else {
                        return;
                    };
                    match reply["result"].as_i64() {
                        Some(n) => {
                            acknowledged.fetch_max(n, Ordering::SeqCst);
                        }
                        None => return,
                    }
                }
            })
        })
        .collect();
    (acknowledged, threads)
}

fn count_in(image: &std::path::Path) -> i64 {
    let image = Image::open(image, Durability::Full).expect("reopen: no orphaned lock");
    let counter = image
        .resolve(&ObjRef::Name("counter".into()))
        .expect("counter");
    let count = image
        .get(counter, "count")
        .expect("count")
        .as_i64()
        .unwrap_or(-1);
    assert_eq!(image.replay(None).expect("replay").matches, Some(true));
    count
}

#[test]
fn sigterm_under_load_loses_nothing_acknowledged_and_exits_0() {
    let mut host = Host::start("full");
    let (acknowledged, clients) = load(&host, 8);
    while acknowledged.load(Ordering::SeqCst) < 200 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let status = host.terminate();
    assert!(status.success(), "exit status {status:?}");
    for client in clients {
        let _ = client.join();
    }
    let logged = host.log.lock().map(|l| l.join("\n")).unwrap_or_default();
    assert!(logged.contains("lock released"), "{logged}");
    let image = host.scratch.image_path();
    let count = count_in(&image);
    assert!(
        count >= acknowledged.load(Ordering::SeqCst),
        "acknowledged more than the image holds"
    );
    integrity_ok(&image);
}

#[test]
fn kill_9_under_load_then_a_restart_serves_at_once_with_everything_acknowledged() {
    let mut host = Host::start("full");
    let (acknowledged, clients) = load(&host, 8);
    while acknowledged.load(Ordering::SeqCst) < 200 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    host.child.kill().expect("kill -9");
    let _ = host.child.wait();
    for client in clients {
        let _ = client.join();
    }
    let image = host.scratch.image_path();
    integrity_ok(&image);
    let count = count_in(&image);
    assert!(
        count >= acknowledged.load(Ordering::SeqCst),
        "acknowledged more than the image holds"
    );
    // And a new host starts on it straight away.
    let restarted = Host::start_in(host.into_scratch(), "full");
    let reply = ask(
        &restarted.dealer(),
        json!({"op": "get", "to": "counter", "slot": "count"}),
    );
    assert_eq!(reply["result"], json!(count));
}

#[test]
fn a_second_signal_exits_at_once_and_the_image_stays_whole() {
    let mut host = Host::start("full");
    let dealer = host.dealer();
    let source = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/methods/infinite_loop.rs"),
    )
    .expect("source");
    let reply = ask(
        &dealer,
        json!({"op": "install", "to": "lobby", "selector": "spin", "source": source}),
    );
    assert_eq!(reply["ok"], json!(true), "{reply}");
    let (acknowledged, clients) = load(&host, 4);
    // A long request in flight, then two signals in a row.
    dealer
        .send(
            json!({"op": "send", "to": "lobby", "selector": "spin"})
                .to_string()
                .as_bytes(),
            0,
        )
        .expect("send");
    while acknowledged.load(Ordering::SeqCst) < 50 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let pid = host.child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let status = host.child.wait().expect("host exits");
    assert!(
        status.code().is_some(),
        "it exited by itself, not by a signal: {status:?}"
    );
    for client in clients {
        let _ = client.join();
    }
    let image = host.scratch.image_path();
    integrity_ok(&image);
    assert!(count_in(&image) >= acknowledged.load(Ordering::SeqCst));
}

/// The newest transaction, read from the image (ping's figure is updated just after a reply).
fn newest_tx(client: &Dealer) -> Value {
    let history = ask(client, json!({"op": "history", "limit": 1}));
    history["result"][0]["tx"].clone()
}

#[test]
fn a_client_without_the_token_is_refused_and_changes_nothing() {
    let host = Host::start("normal");
    let owner = host.dealer();
    let stranger = host.stranger();
    // ping needs no token: anyone may find out a host is there.
    assert_eq!(ask(&stranger, json!({"op": "ping"}))["ok"], json!(true));
    // However it is spelt, a ping is answered by the socket thread itself, from the envelope alone
    // (a lone surrogate in a field the envelope skips does not matter to a ping; to any other op
    // it is `bad-request`, after admission).
    for payload in [
        br#"{"id": 7, "op": "p\u0069ng"}"#.as_slice(),
        br#"{"id": 7, "op": "ping", "x": "\ud800"}"#.as_slice(),
    ] {
        stranger.send(payload, 0).expect("send");
        let reply: Value =
            serde_json::from_slice(&stranger.recv_bytes(0).expect("reply")).expect("json");
        assert_eq!(
            (reply["id"].clone(), reply["ok"].clone()),
            (json!(7), json!(true)),
            "{reply}"
        );
    }
    let before = newest_tx(&owner).clone();
    let wrong = "0".repeat(64);
    let read_token =
        std::fs::read_to_string(batos::access::read_token_path(&host.scratch.image_path()))
            .expect("read token");
    let read_token = read_token.trim();
    for token in [None, Some(wrong.as_str()), Some(""), Some("x")] {
        for request in [
            json!({"op": "set", "to": "lobby", "slot": "owned", "value": 1}),
            json!({"op": "send", "to": "counter", "selector": "increment"}),
            json!({"op": "undo", "tx": 1}),
            json!({"op": "install", "to": "lobby", "selector": "x", "source": "pub fn run() {}"}),
            json!({"op": "get", "to": "counter", "slot": "count"}),
            json!({"op": "history"}),
        ] {
            let mut request = request;
            if let Some(token) = token {
                request["token"] = json!(token);
            }
            let reply = ask(&stranger, request.clone());
            assert_eq!(
                reply["error"]["code"],
                json!("unauthorized"),
                "{request}: {reply}"
            );
            assert!(
                !reply.to_string().contains(&host.token()),
                "no token in a reply"
            );
        }
    }
    assert_eq!(newest_tx(&owner), before, "nothing committed by a stranger");
    // A retry key would answer another client's recorded reply: not without the full token, not
    // even on a ping spelt with an escape (which the socket thread's quick answer does not see).
    let keyed = ask(
        &owner,
        json!({"op": "send", "to": "counter", "selector": "increment", "key": "mine"}),
    );
    assert_eq!(keyed["result"], json!(1), "{keyed}");
    let before = newest_tx(&owner).clone();
    stranger
        .send(br#"{"op": "ping", "key": "mine"}"#.as_slice(), 0)
        .expect("send");
    let reply: Value =
        serde_json::from_slice(&stranger.recv_bytes(0).expect("reply")).expect("json");
    assert_eq!(reply["error"]["code"], json!("unauthorized"), "{reply}");
    let reply = ask(
        &stranger,
        json!({"op": "get", "to": "counter", "slot": "count", "key": "mine", "token": read_token}),
    );
    assert_eq!(reply["error"]["code"], json!("unauthorized"), "{reply}");
    // The read-only token reads, and writes nothing.
    let got = ask(
        &stranger,
        json!({"op": "get", "to": "counter", "slot": "count", "token": read_token}),
    );
    assert_eq!(got["result"], json!(1), "{got}");
    for request in [
        json!({"op": "set", "to": "lobby", "slot": "owned", "value": 1, "token": read_token}),
        json!({"op": "send", "to": "counter", "selector": "increment", "token": read_token}),
        json!({"op": "parents", "to": "lobby", "parents": [], "token": read_token}),
        json!({"op": "generate", "prompt": "hi", "token": read_token}),
    ] {
        let reply = ask(&stranger, request.clone());
        assert_eq!(
            reply["error"]["code"],
            json!("unauthorized"),
            "{request}: {reply}"
        );
    }
    assert_eq!(newest_tx(&owner), before, "nothing committed");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(batos::access::full_token_path(&host.scratch.image_path()))
        .expect("token file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "only the owner reads the token");
}

#[test]
fn compiles_wait_in_their_queue_without_holding_a_worker() {
    let host = Host::start_with_args(
        crate::support::Scratch::new(),
        "normal",
        crate::support::MIND,
        &["--compiles", "1", "--compile-timeout", "3"],
    );
    let source = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/compiles/const_eval_loop.rs"),
    )
    .expect("source");
    // More endless compiles than workers: each runs out its time limit, one at a time.
    let attackers: Vec<Dealer> = (0..5).map(|_| host.dealer()).collect();
    for (n, attacker) in attackers.iter().enumerate() {
        let request = json!({"op": "install", "to": "lobby", "selector": format!("spin{n}"), "source": source});
        attacker.send(request.to_string(), 0).expect("send");
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let reader = host.dealer();
    for n in 0..20 {
        let reply = ask(
            &reader,
            json!({"id": n, "op": "send", "to": "counter", "selector": "increment"}),
        );
        assert_eq!(reply["result"], json!(n + 1), "{reply}");
    }
    // Every read and write above was answered while the first compile still ran.
    for attacker in &attackers {
        let mut items = [attacker.as_poll_item(zmq::POLLIN)];
        zmq::poll(&mut items, 0).expect("poll");
        assert!(!items[0].is_readable(), "no compile had finished yet");
    }
    for attacker in &attackers {
        let reply: Value =
            serde_json::from_slice(&attacker.recv_bytes(0).expect("reply")).expect("json");
        assert_eq!(reply["error"]["code"], json!("compile-failed"), "{reply}");
    }
}

#[test]
fn a_retried_key_gets_the_recorded_reply_and_applies_once() {
    let host = Host::start("normal");
    let client = host.dealer();
    let first = ask(
        &client,
        json!({"id": 1, "op": "send", "to": "counter", "selector": "increment", "key": "inc-1"}),
    );
    assert_eq!(first["result"], json!(1), "{first}");
    for n in 2..5 {
        let again = ask(
            &client,
            json!({"id": n, "op": "send", "to": "counter", "selector": "increment", "key": "inc-1"}),
        );
        assert_eq!(
            (again["id"].clone(), again["result"].clone()),
            (json!(n), json!(1)),
            "{again}"
        );
        assert_eq!(again["replayed"], json!(true));
    }
    // Another key is another request.
    let second = ask(
        &client,
        json!({"op": "send", "to": "counter", "selector": "increment", "key": "inc-2"}),
    );
    assert_eq!(second["result"], json!(2));
    assert_eq!(
        ask(
            &client,
            json!({"op": "get", "to": "counter", "slot": "count"})
        )["result"],
        json!(2)
    );
    // A keyed request that failed changed nothing, so its retry runs again.
    for _ in 0..2 {
        let failed = ask(
            &client,
            json!({"op": "set", "to": "nobody", "slot": "x", "value": 1, "key": "bad-1"}),
        );
        assert_eq!(failed["error"]["code"], json!("no-such-object"), "{failed}");
        assert_eq!(failed.get("replayed"), None);
    }
    for key in [json!(7), json!(""), json!("k".repeat(129))] {
        let reply = ask(
            &client,
            json!({"op": "send", "to": "counter", "selector": "increment", "key": key}),
        );
        assert_eq!(reply["error"]["code"], json!("bad-request"), "{reply}");
    }
    // The keys survive a restart.
    let mut host = host;
    assert!(host.terminate().success());
    let host = Host::start_in(host.into_scratch(), "normal");
    let client = host.dealer();
    let again = ask(
        &client,
        json!({"op": "send", "to": "counter", "selector": "increment", "key": "inc-2"}),
    );
    assert_eq!(
        (again["result"].clone(), again["replayed"].clone()),
        (json!(2), json!(true))
    );
    assert_eq!(
        ask(
            &client,
            json!({"op": "get", "to": "counter", "slot": "count"})
        )["result"],
        json!(2)
    );
}

#[test]
fn beyond_loopback_the_host_speaks_curve_to_clients_on_its_allow_list() {
    use std::process::Stdio;
    let scratch = crate::support::Scratch::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let open = format!("tcp://0.0.0.0:{port}");
    // Without --curve such a bind is refused before anything is opened.
    let refused = scratch.batos(&["serve", "--mind", "none", "--bind", &open]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("CURVE"), "{}", stderr(&refused));
    let mut host = Command::new(env!("CARGO_BIN_EXE_batos"))
        .arg("--image")
        .arg(scratch.image_path())
        .args([
            "--durability",
            "normal",
            "serve",
            "--mind",
            "none",
            "--curve",
            "--bind",
            &open,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let mut log = std::io::BufReader::new(host.stderr.take().expect("stderr"));
    let mut line = String::new();
    while std::io::BufRead::read_line(&mut log, &mut line).expect("log") > 0 {
        if line.contains("serving") {
            break;
        }
        line.clear();
    }
    let home = scratch.image_path().with_file_name("home");
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_batos"))
            .env("HOME", &home)
            .env_remove("XDG_CONFIG_HOME")
            .arg("--image")
            .arg(scratch.image_path())
            .args(["--endpoint", &format!("tcp://127.0.0.1:{port}")])
            .args(args)
            .output()
            .expect("batos runs")
    };
    let server_key = std::fs::read_to_string(
        batos::server::curve::directory(&scratch.image_path()).join("server.public"),
    )
    .expect("the host's public key");
    let server_key = server_key.trim();
    // Not on the allow-list yet: nobody answers, so the command finds no host.
    let before = cli(&["--server-key", server_key, "send", "counter", "increment"]);
    assert!(!before.status.success(), "{}", stdout(&before));
    let key = cli(&["client-key"]);
    assert!(key.status.success(), "{}", stderr(&key));
    let mut clients = std::fs::OpenOptions::new()
        .append(true)
        .open(batos::server::curve::directory(&scratch.image_path()).join("clients"))
        .expect("allow-list");
    std::io::Write::write_all(&mut clients, format!("{}\n", stdout(&key)).as_bytes())
        .expect("allow");
    let sent = cli(&["--server-key", server_key, "send", "counter", "increment"]);
    assert!(sent.status.success(), "{}", stderr(&sent));
    assert_eq!(stdout(&sent), "1");
    let _ = host.kill();
    let _ = host.wait();
}

#[test]
fn diff_shows_each_changed_slot_at_both_transactions_and_refuses_bad_ranges() {
    let host = Host::start("normal");
    let dealer = host.dealer();
    let tx = |reply: Value| reply["result"]["tx"].as_i64().expect("a tx");
    let start = tx(ask(
        &dealer,
        json!({"op": "set", "to": "lobby", "slot": "a", "value": 1}),
    ));
    ask(
        &dealer,
        json!({"op": "set", "to": "lobby", "slot": "a", "value": 2}),
    );
    ask(
        &dealer,
        json!({"op": "set", "to": "lobby", "slot": "b", "value": "x"}),
    );
    let end = tx(ask(
        &dealer,
        json!({"op": "remove", "to": "lobby", "slot": "b"}),
    ));
    let end = end.max(start);
    let reply = ask(&dealer, json!({"op": "diff", "from": start, "until": end}));
    assert_eq!(reply["ok"], true, "{reply}");
    let objects = reply["result"]["objects"].as_array().expect("objects");
    assert_eq!(objects.len(), 1, "{reply}");
    // `a` went 1 -> 2; `b` came and went: nothing differs for it.
    assert_eq!(
        objects[0]["slots"],
        json!({"a": {"from": {"value": 1}, "until": {"value": 2}}}),
        "{reply}"
    );
    for (from, until, code) in [
        (json!(end), json!(start), "bad-request"),
        (json!(start), json!(end + 100), "no-such-transaction"),
        (json!("one"), json!(end), "bad-request"),
        (json!(-1), json!(end), "no-such-transaction"),
    ] {
        let reply = ask(&dealer, json!({"op": "diff", "from": from, "until": until}));
        assert_eq!(reply["error"]["code"], code, "{from}..{until}: {reply}");
    }
    let reply = ask(&dealer, json!({"op": "diff", "from": start}));
    assert_eq!(reply["error"]["code"], "bad-request", "{reply}");
}

#[test]
fn with_log_format_json_every_log_line_is_a_json_object_with_a_level() {
    let mut host = Host::start_with_args(
        crate::support::Scratch::new(),
        "normal",
        crate::support::MIND,
        &["--log-format", "json"],
    );
    assert_eq!(ask(&host.dealer(), json!({"op": "ping"}))["ok"], true);
    assert!(host.terminate().success());
    // The reader thread reads on until the host's stderr closes: wait for its last line.
    let waited = std::time::Instant::now();
    let lines = loop {
        let lines = host.log.lock().expect("log").clone();
        if lines
            .iter()
            .any(|l| l.contains("stopped; the image is closed"))
            || waited.elapsed() > std::time::Duration::from_secs(60)
        {
            break lines;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(!lines.is_empty(), "no log after serving");
    for line in &lines {
        let event: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(event["level"].is_string(), "{line}");
        assert!(event["fields"]["message"].is_string(), "{line}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("stopped; the image is closed")),
        "{lines:?}"
    );
}

#[test]
fn refusals_and_diagnostics_stay_bounded_and_readable_however_often_a_source_repeats_itself() {
    let host = Host::start("normal");
    let dealer = host.dealer();
    // The source gate: one refused macro three thousand times is one refusal and a count.
    let body = "    let _ = include_str!(\"a\");\n".repeat(3000);
    let source = format!(
        "use batos_sdk::prelude::*;\npub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {{\n{body}    Ok(json!(1))\n}}\n"
    );
    let reply = ask(
        &dealer,
        json!({"op": "install", "to": "lobby", "selector": "loud", "source": source}),
    );
    assert_eq!(reply["error"]["code"], "guardian-rejected", "{reply}");
    let message = reply["error"]["message"].as_str().expect("message");
    assert!(message.len() < 16 << 10, "{} bytes", message.len());
    assert!(message.contains("more refusals"), "{message}");
    // rustc: thousands of errors are cut at a whole diagnostic, never mid-JSON.
    let body: String = (0..2500)
        .map(|n| format!("    let _ = undefined_thing_{n};\n"))
        .collect();
    let source = format!(
        "use batos_sdk::prelude::*;\npub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {{\n{body}    Ok(json!(1))\n}}\n"
    );
    let reply = ask(
        &dealer,
        json!({"op": "install", "to": "lobby", "selector": "noisy", "source": source}),
    );
    assert_eq!(reply["error"]["code"], "compile-failed", "{reply}");
    let message = reply["error"]["message"].as_str().expect("message");
    assert!(message.contains("undefined_thing_0"), "{message}");
    assert!(!message.contains("$message_type"), "raw JSON in: {message}");
    assert!(message.contains("diagnostics truncated"), "{message}");
}

#[test]
fn the_readiness_line_is_written_whatever_rust_log_says() {
    let scratch = crate::support::Scratch::new();
    for filter in ["nonsense", "warn", "[{"] {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_batos"))
            .env("RUST_LOG", filter)
            .env("BATOS_MIND", "none")
            .arg("--image")
            .arg(scratch.image_path())
            .args(["serve", "--bind", &format!("tcp://127.0.0.1:{port}")])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let found = std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
                .any(|line| line.contains("serving"));
            let _ = tx.send(found);
        });
        // A host that never says it serves is a failure, not a hang (a liveness bound only).
        let found = rx
            .recv_timeout(std::time::Duration::from_secs(120))
            .unwrap_or(false);
        let _ = child.kill();
        let _ = child.wait();
        assert!(found, "RUST_LOG={filter}: no readiness line");
    }
}
