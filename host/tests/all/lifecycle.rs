//! Two processes and crashes: the writer lock, readers beside a writer, kill -9 mid-commit.

use std::io::Write;
use std::time::Duration;

use batos::image::{Durability, Image, ImageError};
use batos::object::{ObjRef, Slot};
use serde_json::json;

use crate::support::{
    CHILD_ENV, Scratch, batos_at, integrity_ok, read_child_lines, spawn_child, stderr, stdout,
};

/// Child body: holds the writer lock until its stdin closes.
#[test]
fn lock_holder_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let _image = Image::open(path.as_ref(), Durability::Full).expect("child opens the image");
    println!("locked");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

#[test]
fn a_second_writer_is_refused_with_the_holders_pid_and_readers_still_read() {
    let scratch = Scratch::new().with_image();
    let path = scratch.image_path();
    let mut child = spawn_child("lifecycle::lock_holder_child", &path.display().to_string());
    read_child_lines(&mut child, "locked", |_| false);

    match Image::open(&path, Durability::Full) {
        Err(ImageError::Locked { pid, .. }) => assert_eq!(pid, Some(child.id())),
        other => panic!("expected the lock to be refused, got {other:?}"),
    }
    // The command line says so in one line, naming the pid.
    let out = scratch.batos(&["set", "lobby", "x", "1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("pid {}", child.id())),
        "{}",
        stderr(&out)
    );
    // Readers need no lock.
    let out = scratch.batos(&["describe", "lobby"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("lobby"));

    // Closing the holder's stdin lets it exit normally; then the lock is free.
    drop(child.stdin.take());
    let _ = child.wait();
    assert!(Image::open(&path, Durability::Full).is_ok());
}

#[test]
fn a_killed_writer_leaves_no_orphan_lock() {
    let scratch = Scratch::new().with_image();
    let path = scratch.image_path();
    let mut child = spawn_child("lifecycle::lock_holder_child", &path.display().to_string());
    read_child_lines(&mut child, "locked", |_| false);
    child.kill().expect("kill -9");
    let _ = child.wait();
    // The lock file is still there, and locks nothing.
    assert!(path.with_extension("db.lock").exists());
    assert!(Image::open(&path, Durability::Full).is_ok());
}

/// Child body: commits one slot write after another forever, printing each acknowledged value.
#[test]
fn committing_writer_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut image = Image::open(path.as_ref(), Durability::Full).expect("child opens the image");
    let counter = image
        .resolve(&ObjRef::Name("counter".into()))
        .expect("counter");
    let mut out = std::io::stdout().lock();
    for n in 1.. {
        image
            .transact("child", "tick", |tx| {
                tx.set_slot(counter, "count", Slot::Value(json!(n)))?;
                tx.set_slot(counter, "mirror", Slot::Value(json!(n)))
            })
            .expect("commit");
        // Acknowledged only after commit returned.
        if writeln!(out, "committed {n}")
            .and_then(|()| out.flush())
            .is_err()
        {
            return;
        }
    }
}

#[test]
fn kill_9_in_a_loop_of_commits_loses_nothing_acknowledged() {
    let scratch = Scratch::new();
    let path = scratch.image_path();
    {
        let mut image = Image::create(&path, Durability::Full).expect("genesis");
        image
            .transact("test", "counter", |tx| {
                tx.create_object(&[], Some("counter"), Default::default())
            })
            .expect("counter");
    }
    let mut child = spawn_child(
        "lifecycle::committing_writer_child",
        &path.display().to_string(),
    );
    let mut last = 0i64;
    read_child_lines(&mut child, "committed ", |n| {
        last = n.trim().parse().unwrap_or(last);
        last < 150
    });
    // Let it get into the middle of further commits, then kill -9.
    std::thread::sleep(Duration::from_millis(20));
    child.kill().expect("kill -9");
    let _ = child.wait();

    // The next writer starts at once: no orphaned lock.
    let image = Image::open(&path, Durability::Full).expect("reopen after kill -9");
    let counter = image
        .resolve(&ObjRef::Name("counter".into()))
        .expect("counter");
    let count = image
        .get(counter, "count")
        .expect("count")
        .as_i64()
        .unwrap_or(0);
    let mirror = image
        .get(counter, "mirror")
        .expect("mirror")
        .as_i64()
        .unwrap_or(-1);
    assert!(count >= last, "acknowledged {last}, image has {count}");
    assert_eq!(count, mirror, "a transaction is all or nothing");
    let report = image.replay(None).expect("replay");
    assert_eq!(report.matches, Some(true));
    drop(image);
    let out = batos_at(&path, &["replay", "--verify"]);
    assert!(out.status.success(), "{}", stderr(&out));
    integrity_ok(&path);
}

#[test]
fn a_tampered_image_fails_replay_verification_naming_object_and_slot() {
    let scratch = Scratch::new().with_image();
    let out = scratch.batos(&["create", "--name", "counter", "--slots", r#"{"count": 1}"#]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Someone edits the live tables behind the log's back.
    let conn = rusqlite::Connection::open(scratch.image_path()).expect("sqlite");
    conn.execute("UPDATE slots SET value = '99' WHERE name = 'count'", [])
        .expect("tamper");
    drop(conn);
    let out = scratch.batos(&["replay", "--verify"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("object 3 slot `count`"), "{err}");
    assert!(err.contains("live 99, replayed 1"), "{err}");
}

#[test]
fn the_log_cannot_be_rewritten() {
    let scratch = Scratch::new().with_image();
    let conn = rusqlite::Connection::open(scratch.image_path()).expect("sqlite");
    assert!(conn.execute("DELETE FROM changes", []).is_err());
    assert!(
        conn.execute("UPDATE transactions SET actor = 'x'", [])
            .is_err()
    );
}
