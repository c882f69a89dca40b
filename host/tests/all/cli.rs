//! The command line as a user drives it: the real binary on a real image file.

use serde_json::{Value, json};

use crate::support::{Scratch, stderr, stdout};

/// Runs `batos --json ARGS` and answers (success, parsed stdout).
fn json_of(scratch: &Scratch, args: &[&str]) -> (bool, Value) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = scratch.batos(&all);
    let text = stdout(&out);
    let value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {text}"));
    (out.status.success(), value)
}

/// Data-driven: each row is (args, expected success, expected `result` or error `code`).
fn check(scratch: &Scratch, rows: &[(&[&str], bool, Value)]) {
    for (args, ok, expected) in rows {
        let (success, got) = json_of(scratch, args);
        assert_eq!(success, *ok, "{args:?} -> {got}");
        if *ok {
            if !expected.is_null() {
                assert_eq!(&got, expected, "{args:?}");
            }
        } else {
            assert_eq!(got["code"], *expected, "{args:?} -> {got}");
        }
    }
}

#[test]
fn a_session_through_the_command_line() {
    // A bare genesis image (objects `object` and `lobby` only), so ids are predictable.
    let scratch = Scratch::new().with_image();
    check(
        &scratch,
        &[
            (
                &["create", "--name", "counter", "--slots", r#"{"count": 0}"#],
                true,
                json!({"oid": 3, "tx": 2}),
            ),
            (
                &["create", "--from", "counter", "--name", "mine"],
                true,
                json!({"oid": 4, "tx": 3}),
            ),
            (&["get", "mine", "count"], true, json!(0)),
            (&["set", "counter", "count", "5"], true, json!({"tx": 4})),
            (&["get", "4", "count"], true, json!(5)),
            (&["send", "mine", "count"], true, json!(5)),
            (
                &["send", "mine", "fly", "1", r#""high""#],
                false,
                json!("does-not-understand"),
            ),
            (
                &["parents", "mine"],
                true,
                json!({"oid": 4, "parents": [3]}),
            ),
            (
                &["parents", "mine", "lobby", "counter"],
                true,
                json!({"oid": 4, "parents": [2, 3], "tx": 5}),
            ),
            (&["parents", "object", "mine"], false, json!("parent-cycle")),
            (
                &["describe", "mine"],
                true,
                json!({"oid": 4, "name": "mine", "parents": [2, 3], "slots": {}, "methods": []}),
            ),
            (
                &["describe", "counter", "--at", "3"],
                true,
                json!({"oid": 3, "name": "counter", "parents": [1], "slots": {"count": 0}, "methods": []}),
            ),
            (&["undo", "4"], true, json!({"tx": 6})),
            (&["get", "counter", "count"], true, json!(0)),
            (&["undo", "4"], false, json!("conflict")),
            (&["undo", "6"], true, json!({"tx": 7})),
            (&["get", "counter", "count"], true, json!(5)),
            (
                &[
                    "set",
                    "counter",
                    "schema",
                    r#"{"properties": {"count": {"type": "integer"}}}"#,
                ],
                true,
                Value::Null,
            ),
            (
                &["set", "mine", "count", r#""lots""#],
                false,
                json!("schema-violation"),
            ),
            (&["get", "nobody", "count"], false, json!("no-such-object")),
            (&["get", "mine", "nothing"], false, json!("no-such-slot")),
            (&["undo", "999"], false, json!("no-such-transaction")),
            (&["undo", "1"], false, json!("conflict")),
            (
                &["describe", "mine", "--at", "999"],
                false,
                json!("no-such-transaction"),
            ),
            (&["create", "--name", "counter"], false, json!("name-taken")),
            (&["create", "--name", "12"], false, json!("bad-request")),
        ],
    );
    let (ok, replay) = json_of(&scratch, &["replay", "--verify"]);
    assert!(ok);
    assert_eq!(replay["match"], json!(true));
    let (ok, history) = json_of(
        &scratch,
        &["history", "--object", "counter", "--limit", "2"],
    );
    assert!(ok);
    assert_eq!(history.as_array().map(Vec::len), Some(2));
}

#[test]
fn bad_input_gets_one_line_and_a_non_zero_exit() {
    let scratch = Scratch::new().with_image();
    for args in [
        &["set", "lobby", "x", "not json"][..],
        &["create", "--slots", "[1, 2]"],
        &["send", "lobby", "x", "{oops"],
        &["get", "lobby", "missing"],
    ] {
        let out = scratch.batos(args);
        assert!(!out.status.success(), "{args:?}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("batos: "), "{err}");
    }
}

#[test]
fn commands_on_a_missing_image_say_how_to_make_one() {
    let scratch = Scratch::new();
    let out = scratch.batos(&["describe", "lobby"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("batos init"), "{}", stderr(&out));
    let out = scratch.batos(&["init"]);
    assert!(out.status.success());
    let out = scratch.batos(&["init"]);
    assert!(!out.status.success(), "init refuses to overwrite");
}

#[test]
fn without_a_host_writes_need_offline_and_reads_use_the_file() {
    let scratch = Scratch::new().with_image();
    let nobody = format!("ipc://{}", scratch.dir.path().join("nobody.sock").display());
    let out = scratch.batos_via(&nobody, &["set", "lobby", "greeting", r#""hello""#]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--offline"), "{}", stderr(&out));
    // `scratch.batos` passes --offline: the write goes to the file.
    let out = scratch.batos(&["set", "lobby", "greeting", r#""hello""#]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Inspecting commands fall back to reading the file.
    let out = scratch.batos_via(&nobody, &["get", "lobby", "greeting"]);
    assert_eq!(stdout(&out), r#""hello""#, "{}", stderr(&out));
}

#[test]
fn negative_numbers_are_values_not_flags() {
    let scratch = Scratch::new().with_image();
    let out = scratch.batos(&["set", "lobby", "n", "-5"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&scratch.batos(&["get", "lobby", "n"])), "-5");
}

#[test]
fn history_shows_values_before_and_after() {
    let scratch = Scratch::new().with_image();
    scratch.batos(&["set", "lobby", "x", "1"]);
    scratch.batos(&["set", "lobby", "x", "2"]);
    let out = scratch.batos(&["history", "--since", "3"]);
    let text = stdout(&out);
    assert!(text.contains("2.x: 1 -> 2"), "{text}");
    assert!(!text.contains("tx 2 "), "since is inclusive from 3: {text}");
}
