//! The host's bounds, driven from outside: frames, bytes, requests in flight, nesting, and a
//! bounded fuzz run of arbitrary frames and JSON against the real socket.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

use crate::support::{Host, MIND, Scratch, ask};

/// The reply: the last frame (a request's envelope frames come back before it).
fn recv(socket: &zmq::Socket) -> Value {
    let frames = socket.recv_multipart(0).expect("reply");
    let last = frames.last().expect("a frame");
    serde_json::from_slice(last).unwrap_or_else(|e| panic!("reply is JSON: {e}: {last:?}"))
}

#[test]
fn a_message_of_many_frames_is_refused_and_costs_only_its_sender() {
    let host = Host::start("normal");
    let attacker = host.dealer();
    let frame = vec![b'x'; 64 << 10];
    let frames: Vec<&[u8]> = (0..16).map(|_| frame.as_slice()).collect();
    attacker.send_multipart(frames, 0).expect("send");
    let reply = recv(&attacker);
    assert_eq!(reply["error"]["code"], json!("too-large"), "{reply}");
    let other = host.dealer();
    assert_eq!(
        ask(
            &other,
            json!({"op": "get", "to": "counter", "slot": "count"})
        )["result"],
        json!(0)
    );
}

#[test]
fn values_too_deep_are_refused_at_set_and_what_is_kept_can_be_read_back() {
    let host = Host::start("normal");
    let client = host.dealer();
    let nest = |n: usize| -> Value {
        let mut v = json!(1);
        for _ in 0..n {
            v = json!([v]);
        }
        v
    };
    let reply = ask(
        &client,
        json!({"op": "set", "to": "lobby", "slot": "deep", "value": nest(100)}),
    );
    assert_eq!(reply["error"]["code"], json!("bad-request"), "{reply}");
    let kept = ask(
        &client,
        json!({"op": "set", "to": "lobby", "slot": "deep", "value": nest(64)}),
    );
    assert_eq!(kept["ok"], json!(true), "{kept}");
    for request in [
        json!({"op": "describe", "to": "lobby"}),
        json!({"op": "history", "limit": 1}),
        json!({"op": "get", "to": "lobby", "slot": "deep"}),
        json!({"op": "replay"}),
    ] {
        let reply = ask(&client, request.clone());
        assert_eq!(reply["ok"], json!(true), "{request}: {reply}");
    }
}

#[test]
fn requests_past_a_clients_share_or_a_reply_past_its_size_are_refused_alone() {
    let host = Host::start_with_args(
        Scratch::new(),
        "normal",
        MIND,
        &[
            "--max-in-flight-per-client",
            "2",
            "--max-reply-bytes",
            "4096",
        ],
    );
    let source = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/methods/infinite_loop.rs"),
    )
    .expect("source");
    let client = host.dealer();
    let installed = ask(
        &client,
        json!({"op": "install", "to": "lobby", "selector": "spin", "source": source}),
    );
    assert_eq!(installed["ok"], json!(true), "{installed}");
    let greedy = host.dealer();
    for n in 0..6 {
        let request = json!({"id": n, "op": "send", "to": "lobby", "selector": "spin"});
        greedy.send(request.to_string(), 0).expect("send");
    }
    let replies: Vec<Value> = (0..6).map(|_| recv(&greedy)).collect();
    let busy = replies
        .iter()
        .filter(|r| r["error"]["code"] == "busy")
        .count();
    assert_eq!(busy, 4, "two taken, four refused: {replies:?}");
    // Another client is not held to the greedy one's share.
    assert_eq!(ask(&client, json!({"op": "ping"}))["ok"], json!(true));

    let big = "y".repeat(8192);
    assert_eq!(
        ask(
            &client,
            json!({"op": "set", "to": "lobby", "slot": "big", "value": big})
        )["ok"],
        json!(true)
    );
    let reply = ask(
        &client,
        json!({"id": "g", "op": "get", "to": "lobby", "slot": "big"}),
    );
    assert_eq!(
        (reply["id"].clone(), reply["error"]["code"].clone()),
        (json!("g"), json!("too-large")),
        "{reply}"
    );
}

/// Arbitrary payloads, frame counts and JSON requests into the real socket: every message gets
/// exactly one reply, and the host serves on.
#[test]
fn fuzzed_frames_and_requests_each_get_one_reply() {
    let host = Host::start("normal");
    let token = host.token();
    let fuzzer = host.stranger();
    fuzzer.set_rcvtimeo(30_000).expect("timeout");
    let ops = prop_oneof![
        Just("ping"),
        Just("get"),
        Just("set"),
        Just("send"),
        Just("create"),
        Just("describe"),
        Just("history"),
        Just("undo"),
        Just("methods"),
        Just("method"),
        Just("replay"),
        Just("parents"),
        Just("rename"),
        Just("remove"),
        Just("cycles"),
        Just("nonsense"),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-z\\u{0}-\\u{ff}]{0,12}".prop_map(Value::from),
    ];
    let value = leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    let request = (
        ops,
        proptest::collection::btree_map(
            prop_oneof![
                Just("to".to_owned()),
                Just("slot".to_owned()),
                Just("value".to_owned()),
                Just("selector".to_owned()),
                Just("args".to_owned()),
                Just("tx".to_owned()),
                Just("key".to_owned()),
                Just("from".to_owned()),
                Just("limit".to_owned()),
                "[a-z]{1,5}",
            ],
            value,
            0..5,
        ),
        any::<bool>(),
    )
        .prop_map(move |(op, fields, signed)| {
            let mut request: serde_json::Map<String, Value> = fields.into_iter().collect();
            request.insert("op".into(), json!(op));
            if signed {
                request.insert("token".into(), json!(token));
            }
            Value::Object(request).to_string().into_bytes()
        });
    let message = prop_oneof![
        request.clone().prop_map(|r| vec![r]),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(|b| vec![b]),
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..16), 2..7),
    ];
    let mut runner = TestRunner::new(Config {
        cases: 300,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&message, |frames| {
            fuzzer.send_multipart(&frames, 0).expect("send");
            let reply = recv(&fuzzer);
            prop_assert!(reply.get("ok").is_some(), "{reply}");
            if reply["ok"] == json!(false) {
                prop_assert_ne!(&reply["error"]["code"], &json!("internal"), "{}", reply);
            }
            Ok(())
        })
        .expect("every message got one well-formed reply");
    let mut items = [fuzzer.as_poll_item(zmq::POLLIN)];
    zmq::poll(&mut items, 200).expect("poll");
    assert!(!items[0].is_readable(), "no message got two replies");
    assert_eq!(
        ask(&host.dealer(), json!({"op": "ping"}))["ok"],
        json!(true)
    );
}

proptest! {
    #![proptest_config(Config { cases: 2000, failure_persistence: None, ..Config::default() })]

    /// The decoder and the admission check take any bytes and any JSON without panicking.
    #[test]
    fn the_decoder_and_admission_take_anything(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
        op in "[a-z-]{0,10}",
        fields in proptest::collection::btree_map("[a-z_]{1,8}", any::<i64>().prop_map(Value::from), 0..6),
    ) {
        let scratch = Scratch::new();
        let tokens = batos::access::Tokens::ensure(&scratch.image_path()).expect("tokens");
        if let Ok(incoming) = batos::protocol::envelope::Incoming::decode(&bytes) {
            let _ = batos::access::admit(&tokens, &incoming);
            let _ = incoming.parse(&bytes);
        }
        if let Ok(value) = serde_json::from_slice::<Value>(&bytes) {
            let _ = batos::protocol::Request::decode(&value);
        }
        let mut request: serde_json::Map<String, Value> = fields.into_iter().collect();
        request.insert("op".into(), json!(op));
        let request = Value::Object(request);
        let _ = batos::protocol::Request::decode(&request);
        let incoming = batos::protocol::envelope::Incoming::decode(request.to_string().as_bytes())
            .expect("an object");
        let refused = batos::access::admit(&tokens, &incoming);
        prop_assert!(op == "ping" || refused.is_err(), "no token, no entry");
    }
}
