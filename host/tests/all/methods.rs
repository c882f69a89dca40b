//! Methods end to end: real sources through the real forge, gates and sandbox, on a real image.
//! The hostile corpus lives in `tests/methods/` at the repository root; each file's first line
//! says the error it must get.

use batos::protocol::Coded;
use std::path::PathBuf;

use batos::forge::default_cache_dir;
use batos::image::{Durability, Image, NewMethod, Origin};
use batos::method::{Runtime, Sent};
use batos::object::{ObjRef, Oid, Slot};
use batos::sandbox::Limits;
use serde_json::{Value, json};

use crate::support::{Scratch, stderr, stdout};

fn methods() -> Runtime {
    Runtime::new(default_cache_dir(), Limits::default())
}

/// A fresh image with the genesis methods (and `counter`), and the machinery to run them.
fn genesis_image(scratch: &Scratch) -> (Image, Runtime) {
    let mut image = Image::create(&scratch.image_path(), Durability::Normal).expect("image");
    let methods = methods();
    methods
        .install_genesis(&mut image)
        .expect("genesis methods");
    (image, methods)
}

/// A fresh image with a `victim` object (count 0) to point hostile methods at.
fn image_with_victim(scratch: &Scratch) -> (Image, Oid) {
    let mut image = Image::create(&scratch.image_path(), Durability::Normal).expect("image");
    let (victim, _) = image
        .transact("test", "victim", |tx| {
            let mut slots = serde_json::Map::new();
            slots.insert("count".into(), json!(0));
            tx.create_object(&[], Some("victim"), slots)
        })
        .expect("victim");
    (image, victim)
}

fn code_of(result: Result<Sent, batos::method::MethodError>) -> String {
    match result {
        Ok(Sent::Value(v)) => format!("answered value {v}"),
        Ok(Sent::Ran(report)) => format!("answered {}", report.value),
        Ok(Sent::DoesNotUnderstand { .. }) => "does-not-understand".into(),
        Err(e) => e.code().as_str().to_owned(),
    }
}

#[test]
fn the_hostile_corpus_gets_the_errors_it_must_and_leaves_the_image_intact() {
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/methods");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .expect("tests/methods")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    files.sort();
    assert!(files.len() >= 12, "the corpus is there");
    let methods = methods();
    let mut failures = Vec::new();
    for file in files {
        let source = std::fs::read_to_string(&file).expect("source");
        let expect = source
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("// expect: "))
            .expect("first line: // expect: <code>")
            .trim()
            .to_owned();
        let scratch = Scratch::new();
        let (mut image, victim) = image_with_victim(&scratch);
        let before = image.state_hash().expect("hash");
        // No error or diagnostic may quote a host file or the host's environment.
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let secrets: Vec<String> = passwd
            .lines()
            .take(1)
            .map(str::to_owned)
            .chain(std::env::var("HOME").ok().filter(|h| h.len() > 1))
            .collect();
        let got = match methods.install(
            &mut image,
            victim,
            "hostile",
            &source,
            Origin::Architect,
            "test",
        ) {
            Err(e) => {
                let text = e.to_string();
                for secret in &secrets {
                    if text.contains(secret.as_str()) {
                        failures.push(format!("{}: the error quotes {secret:?}", file.display()));
                    }
                }
                e.code().as_str().to_owned()
            }
            Ok(_) => {
                let after_install = image.state_hash().expect("hash");
                let sent = methods.send(&mut image, victim, "hostile", vec![], "test");
                // Whatever the call did, its failure left the image as the install left it.
                if image.state_hash().expect("hash") != after_install {
                    failures.push(format!(
                        "{}: the failed call changed the image",
                        file.display()
                    ));
                }
                code_of(sent)
            }
        };
        if got != expect {
            failures.push(format!("{}: expected {expect}, got {got}", file.display()));
        }
        if got == "guardian-rejected" || got == "compile-failed" {
            assert_eq!(
                image.state_hash().expect("hash"),
                before,
                "a refused install writes nothing"
            );
        }
        assert_eq!(
            image.get(victim, "count").ok(),
            Some(json!(0)),
            "{}",
            file.display()
        );
        let replay = image.replay(None).expect("replay");
        assert_eq!(replay.matches, Some(true), "{}", file.display());
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn the_run_time_gate_catches_a_covenant_breach_the_source_gate_would_have_refused() {
    // Bypass gate 1: compile the plainly covenant-breaking source with the forge directly and
    // store it as if it had been installed.
    let source = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/methods/write_without_notify.rs"),
    )
    .expect("source");
    let methods = methods();
    let compiled = methods
        .forge()
        .expect("forge")
        .compile(&source)
        .expect("compiles");
    let scratch = Scratch::new();
    let (mut image, victim) = image_with_victim(&scratch);
    image
        .transact("test", "smuggle", |tx| {
            tx.install_method(
                victim,
                "hostile",
                &NewMethod {
                    source: &source,
                    wasm: &compiled.wasm,
                    sha256: &compiled.sha256,
                    contract: "batos:image@0.1.0",
                    report: &json!({"smuggled": true}),
                    origin: Origin::Architect,
                },
            )
        })
        .expect("smuggled in");
    let before = image.newest_tx().expect("tx");
    let sent = methods.send(&mut image, victim, "hostile", vec![], "test");
    assert_eq!(code_of(sent), "covenant-violation");
    assert_eq!(image.get(victim, "count").ok(), Some(json!(0)));
    assert_eq!(image.newest_tx().ok(), Some(before), "nothing committed");
}

#[test]
fn self_is_the_receiver_and_versions_can_be_reverted() {
    let scratch = Scratch::new();
    let (mut image, methods) = genesis_image(&scratch);
    let counter = image
        .resolve(&ObjRef::Name("counter".into()))
        .expect("counter");
    let (mine, _) = image
        .transact("test", "clone", |tx| {
            tx.create_object(&[counter], None, serde_json::Map::new())
        })
        .expect("clone");
    // The method lives on `counter`, runs with `self` = the clone, and writes the clone.
    for expected in 1..=3 {
        let sent = methods.send(&mut image, mine, "increment", vec![], "test");
        assert_eq!(code_of(sent), format!("answered {expected}"));
    }
    assert_eq!(image.get(counter, "count").ok(), Some(json!(0)));
    assert_eq!(image.get(mine, "count").ok(), Some(json!(3)));

    // Version 2 adds ten; the clone picks it up through delegation.
    let by_ten =
        include_str!("../../../methods/genesis/counter_increment.rs").replace("+ 1", "+ 10");
    let installed = methods
        .install(
            &mut image,
            counter,
            "increment",
            &by_ten,
            Origin::Architect,
            "test",
        )
        .expect("version 2");
    assert_eq!(installed.version, 2);
    assert_eq!(
        code_of(methods.send(&mut image, mine, "increment", vec![], "test")),
        "answered 13"
    );
    let versions = image
        .method_versions(counter, "increment")
        .expect("versions");
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(versions[1].origin, "architect");

    methods
        .revert(&mut image, counter, "increment", 1, "test")
        .expect("revert");
    assert_eq!(
        code_of(methods.send(&mut image, mine, "increment", vec![], "test")),
        "answered 14"
    );
    // Undoing the revert brings version 2 back.
    let newest = image.newest_tx().expect("tx");
    let revert_tx = batos::object::TxId(newest.0 - 1);
    image.undo(revert_tx, "test").expect("undo the revert");
    assert_eq!(
        code_of(methods.send(&mut image, mine, "increment", vec![], "test")),
        "answered 24"
    );
    assert_eq!(image.replay(None).expect("replay").matches, Some(true));
}

#[test]
fn a_method_composes_by_sending_in_one_transaction() {
    let scratch = Scratch::new();
    let (mut image, methods) = genesis_image(&scratch);
    let lobby = image.resolve(&ObjRef::Name("lobby".into())).expect("lobby");
    let before = image.newest_tx().expect("tx");
    let sent = methods.send(&mut image, lobby, "ping_counter", vec![], "test");
    match sent {
        Ok(Sent::Ran(report)) => {
            assert_eq!(report.value, json!(1));
            assert_eq!(report.log, vec!["counter is now 1".to_owned()]);
        }
        other => panic!("expected a run, got {other:?}"),
    }
    assert_eq!(
        image.newest_tx().ok().map(|t| t.0),
        Some(before.0 + 1),
        "one transaction"
    );
    // A read-only method commits nothing.
    let describe = methods.send(&mut image, lobby, "describe", vec![json!("count")], "test");
    assert!(matches!(describe, Ok(Sent::Ran(_))));
    assert_eq!(image.newest_tx().ok().map(|t| t.0), Some(before.0 + 1));
}

#[test]
fn a_write_refused_by_a_schema_answers_the_method_err_and_writes_nothing() {
    let scratch = Scratch::new();
    let (mut image, methods) = genesis_image(&scratch);
    let counter = image
        .resolve(&ObjRef::Name("counter".into()))
        .expect("counter");
    image
        .transact("test", "schema", |tx| {
            tx.set_slot(
                counter,
                "schema",
                Slot::Value(json!({"properties": {"count": {"type": "integer", "maximum": 1}}})),
            )
        })
        .expect("schema");
    assert_eq!(
        code_of(methods.send(&mut image, counter, "increment", vec![], "test")),
        "answered 1"
    );
    let second = code_of(methods.send(&mut image, counter, "increment", vec![], "test"));
    assert_eq!(second, "method-error");
    assert_eq!(image.get(counter, "count").ok(), Some(json!(1)));
}

#[test]
fn the_command_line_installs_inspects_and_sends() {
    let scratch = Scratch::new();
    let out = scratch.batos(&["init"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let file = scratch.dir.path().join("double.rs");
    std::fs::write(
        &file,
        "use batos_sdk::prelude::*;\n\npub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {\n    \
         let n = args.first().and_then(|v| v.as_i64()).ok_or(\"give me a number\")?;\n    Ok(json!(n * 2))\n}\n",
    )
    .expect("write");
    let out = scratch.batos(&[
        "--json",
        "install",
        "lobby",
        "double",
        file.to_str().unwrap_or_default(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let installed: Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(installed["version"], json!(1));
    assert_eq!(
        installed["report"]["component_gate"]["exports"],
        json!(["invoke"])
    );
    // The report is the contract's type, as stored and as answered.
    let report: batos::contract::Report =
        serde_json::from_value(installed["report"].clone()).expect("a report");
    assert_eq!(report.contract, batos::contract::id());
    assert!(report.source_gate.passed && report.component_gate.passed);
    let out = scratch.batos(&["--json", "method", "lobby.double", "--report"]);
    let stored: Value = serde_json::from_str(&stdout(&out)).expect("json");
    let stored: batos::contract::Report =
        serde_json::from_value(stored.get("report").cloned().unwrap_or(stored))
            .expect("the stored report");
    assert_eq!(stored, report);
    let out = scratch.batos(&["send", "lobby", "double", "21"]);
    assert_eq!(stdout(&out), "42");
    let out = scratch.batos(&["send", "lobby", "double", r#""x""#]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("give me a number"),
        "{}",
        stderr(&out)
    );
    // A method changes by installing, not by `set`.
    let out = scratch.batos(&["set", "lobby", "double", "5"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is a method"), "{}", stderr(&out));
    let out = scratch.batos(&["method", "lobby.double", "--source"]);
    assert!(stdout(&out).contains("n * 2"));
    let out = scratch.batos(&["method", "lobby.double", "--wit"]);
    assert!(stdout(&out).contains("notify-changed"));
    let out = scratch.batos(&["--json", "method", "lobby.double"]);
    let method: Value = serde_json::from_str(&stdout(&out)).expect("json");
    let imports: Vec<&str> = method["imports"]
        .as_array()
        .map(|a| a.iter().filter_map(|i| i["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        imports
            .iter()
            .all(|i| !i.starts_with("wasi:filesystem") && !i.starts_with("wasi:sockets"))
    );
    let out = scratch.batos(&["--json", "methods", "--object", "lobby"]);
    let listed: Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(2),
        "ping_counter and double"
    );
    // A second version, and the diff between the two.
    let source = std::fs::read_to_string(&file)
        .expect("read")
        .replace("n * 2", "n * 3");
    std::fs::write(&file, source).expect("write");
    let out = scratch.batos(&[
        "install",
        "lobby",
        "double",
        file.to_str().unwrap_or_default(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&scratch.batos(&["send", "lobby", "double", "-7"])),
        "-21"
    );
    let out = scratch.batos(&["method", "lobby.double", "--diff", "1", "2"]);
    let diff = stdout(&out);
    assert!(
        diff.contains("-    Ok(json!(n * 2))") && diff.contains("+    Ok(json!(n * 3))"),
        "{diff}"
    );
    let out = scratch.batos(&["revert", "lobby.double", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&scratch.batos(&["send", "lobby", "double", "-7"])),
        "-14"
    );
    let out = scratch.batos(&["replay", "--verify"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// The jail is the guarantee the gate's refusals rest on: with the source gate bypassed, every
/// compile in `tests/compiles/` fails (each file's first line names the code), within bounded
/// time and memory, and no diagnostic quotes what the file asked for.
#[test]
fn the_jail_holds_when_the_source_gate_is_bypassed() {
    use batos::forge::{Forge, ForgeLimits, Jail};
    let limits = ForgeLimits {
        compile_time: std::time::Duration::from_secs(8),
        allow_unjailed: false,
        ..ForgeLimits::default()
    };
    let forge = Forge::open(&default_cache_dir(), limits).expect("forge");
    assert!(
        matches!(forge.jail(), Jail::Bubblewrap { .. }),
        "scripts/setup installs bubblewrap: {}",
        forge.jail().describe()
    );
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/compiles");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .expect("tests/compiles")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    files.sort();
    assert!(files.len() >= 7, "the corpus is there");
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let secrets: Vec<&str> = passwd
        .lines()
        .take(1)
        .chain([home.as_str(), "PATH=", "HOME="])
        .filter(|s| s.len() > 1)
        .collect();
    let mut failures = Vec::new();
    for file in files {
        let source = std::fs::read_to_string(&file)
            .expect("source")
            .replace("HOST_PID", &std::process::id().to_string())
            .replace("HOST_HOME", &home);
        let expect = source
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("// expect: "))
            .expect("first line: // expect: <code>")
            .trim()
            .to_owned();
        let started = std::time::Instant::now();
        match forge.compile(&source) {
            Ok(_) => failures.push(format!("{}: compiled", file.display())),
            Err(e) => {
                let first = e
                    .to_string()
                    .lines()
                    .skip(1)
                    .find(|l| !l.is_empty())
                    .map(str::to_owned);
                eprintln!("{}: {}", file.display(), first.unwrap_or_default());
                if e.code().as_str() != expect {
                    failures.push(format!("{}: expected {expect}, got {e}", file.display()));
                }
                let text = e.to_string();
                for secret in &secrets {
                    if text.contains(secret) {
                        failures.push(format!("{}: the error quotes {secret:?}", file.display()));
                    }
                }
            }
        }
        eprintln!(
            "{}: {:.1} s",
            file.display(),
            started.elapsed().as_secs_f64()
        );
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
