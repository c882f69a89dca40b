//! The image through its library API: delegation on real rows, schemas, undo, replay, as-of.

use batos::image::{Change, Durability, HistoryFilter, Image, ImageError};
use batos::object::{Dispatch, ObjRef, Oid, Slot, TxId};
use batos::protocol::Coded;
use serde_json::{Map, Value, json};

fn slots(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn create(image: &mut Image, parents: &[Oid], name: Option<&str>, s: Value) -> Oid {
    image
        .transact("test", "create", |tx| {
            tx.create_object(parents, name, slots(s))
        })
        .expect("create")
        .0
}

fn set(image: &mut Image, oid: Oid, slot: &str, value: Value) -> Result<TxId, ImageError> {
    image
        .transact("test", "set", |tx| {
            tx.set_slot(oid, slot, Slot::Value(value))
        })
        .map(|(_, tx)| tx)
}

fn value(image: &Image, oid: Oid, slot: &str) -> Option<Value> {
    image.get(oid, slot).ok()
}

#[test]
fn genesis_holds_object_and_lobby_in_tx_1() {
    let image = Image::in_memory().expect("image");
    let object = image
        .resolve(&ObjRef::Name("object".into()))
        .expect("object");
    let lobby = image.resolve(&ObjRef::Name("lobby".into())).expect("lobby");
    assert_eq!(image.parents(lobby).ok(), Some(vec![object]));
    let history = image.history(&HistoryFilter::default()).expect("history");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].tx, TxId(1));
    assert_eq!(history[0].actor, "genesis");
}

#[test]
fn delegation_order_on_a_real_image_diamond() {
    let mut image = Image::in_memory().expect("image");
    let top = create(&mut image, &[], None, json!({"who": "top"}));
    let left = create(&mut image, &[top], None, json!({}));
    let right = create(&mut image, &[top], None, json!({"who": "right"}));
    let bottom = create(&mut image, &[left, right], None, json!({}));
    // Depth first, left to right: bottom, left, top (found) before right.
    assert_eq!(value(&image, bottom, "who"), Some(json!("top")));
    let found = image
        .lookup(bottom, "who")
        .expect("lookup")
        .map(|f| f.holder);
    assert_eq!(found, Some(top));
    // Reordering the parents changes the answer.
    image
        .transact("test", "reorder", |tx| {
            tx.set_parents(bottom, vec![right, left])
        })
        .expect("reparent");
    assert_eq!(value(&image, bottom, "who"), Some(json!("right")));
}

#[test]
fn send_answers_values_and_distinguishes_does_not_understand() {
    let mut image = Image::in_memory().expect("image");
    let proto = create(&mut image, &[], Some("proto"), json!({"greeting": "hi"}));
    let clone = create(&mut image, &[proto], None, json!({}));
    assert_eq!(
        image.dispatch(clone, "greeting").ok(),
        Some(Dispatch::Answer(json!("hi")))
    );
    assert_eq!(
        image.dispatch(clone, "missing").ok(),
        Some(Dispatch::DoesNotUnderstand {
            receiver: clone,
            selector: "missing".into()
        })
    );
}

#[test]
fn parent_cycles_are_refused_and_nothing_is_written() {
    let mut image = Image::in_memory().expect("image");
    let a = create(&mut image, &[], None, json!({}));
    let b = create(&mut image, &[a], None, json!({}));
    let before = image.newest_tx().expect("tx");
    let err = image.transact("test", "cycle", |tx| tx.set_parents(a, vec![b]));
    assert!(
        matches!(err, Err(ImageError::ParentCycle { .. })),
        "{err:?}"
    );
    let err = image.transact("test", "self", |tx| tx.set_parents(a, vec![a]));
    assert!(
        matches!(err, Err(ImageError::ParentCycle { .. })),
        "{err:?}"
    );
    assert_eq!(image.newest_tx().ok(), Some(before));
}

#[test]
fn schema_violation_names_slot_and_rule_and_writes_nothing() {
    let mut image = Image::in_memory().expect("image");
    let schema = json!({"properties": {"count": {"type": "integer", "minimum": 0}}});
    let proto = create(
        &mut image,
        &[],
        Some("counter"),
        json!({"count": 0, "schema": schema}),
    );
    let clone = create(&mut image, &[proto], None, json!({}));
    let before = image.newest_tx().expect("tx");
    // The clone inherits the schema through delegation.
    let err = set(&mut image, clone, "count", json!(-1)).err();
    match err {
        Some(ImageError::SchemaViolation { oid, violation }) => {
            assert_eq!(oid, clone);
            assert_eq!(violation.slot, "count");
            assert_eq!(violation.rule, "/properties/count/minimum");
        }
        other => panic!("expected a schema violation, got {other:?}"),
    }
    assert_eq!(image.newest_tx().ok(), Some(before));
    assert_eq!(
        value(&image, clone, "count"),
        Some(json!(0)),
        "inherited value untouched"
    );
    assert!(set(&mut image, clone, "count", json!(4)).is_ok());
    // A multi-write transaction that ends in a violation leaves none of its writes.
    let err = image.transact("test", "two writes", |tx| {
        tx.set_slot(clone, "other", Slot::Value(json!(1)))?;
        tx.set_slot(clone, "count", Slot::Value(json!("many")))
    });
    assert!(matches!(err, Err(ImageError::SchemaViolation { .. })));
    assert_eq!(value(&image, clone, "other"), None);
}

#[test]
fn an_invalid_schema_is_refused() {
    let mut image = Image::in_memory().expect("image");
    let o = create(&mut image, &[], None, json!({}));
    let err = set(&mut image, o, "schema", json!({"type": 5})).err();
    assert!(
        matches!(err, Some(ImageError::SchemaViolation { .. })),
        "{err:?}"
    );
}

#[test]
fn undo_reverts_and_undo_of_undo_redoes() {
    let mut image = Image::in_memory().expect("image");
    let o = create(&mut image, &[], None, json!({"x": 1}));
    let t = set(&mut image, o, "x", json!(2)).expect("set");
    let u = image.undo(t, "test").expect("undo");
    assert_eq!(value(&image, o, "x"), Some(json!(1)));
    let r = image.undo(u, "test").expect("redo");
    assert_eq!(value(&image, o, "x"), Some(json!(2)));
    assert!(r > u);
}

#[test]
fn undo_conflicts_when_a_later_transaction_changed_the_same_slot() {
    let mut image = Image::in_memory().expect("image");
    let o = create(&mut image, &[], None, json!({"x": 1, "y": 1}));
    let t = set(&mut image, o, "x", json!(2)).expect("set");
    set(&mut image, o, "y", json!(5)).expect("other slot");
    // A later change to another slot does not conflict...
    let u = image.undo(t, "test").expect("undo");
    // ...but one to the same slot does.
    set(&mut image, o, "x", json!(9)).expect("set again");
    let err = image.undo(u, "test").err();
    assert!(matches!(err, Some(ImageError::Conflict { .. })), "{err:?}");
    assert_eq!(err.map(|e| e.code().as_str()), Some("conflict"));
}

#[test]
fn undo_of_a_creation_removes_the_object_and_redo_brings_it_back() {
    let mut image = Image::in_memory().expect("image");
    let (o, t) = image
        .transact("test", "create", |tx| {
            tx.create_object(&[], Some("ghost"), slots(json!({"a": 1})))
        })
        .expect("create");
    let u = image.undo(t, "test").expect("undo creation");
    assert!(image.resolve(&ObjRef::Name("ghost".into())).is_err());
    assert!(matches!(
        image.describe(o, None),
        Err(ImageError::NoSuchObject(_))
    ));
    image.undo(u, "test").expect("redo creation");
    assert_eq!(image.resolve(&ObjRef::Name("ghost".into())).ok(), Some(o));
    assert_eq!(value(&image, o, "a"), Some(json!(1)));
    // Oids are never reused: the next object gets a new one.
    let next = create(&mut image, &[], None, json!({}));
    assert!(next > o);
    assert_eq!(image.replay(None).expect("replay").matches, Some(true));
}

#[test]
fn undo_of_a_creation_conflicts_once_the_object_was_used() {
    let mut image = Image::in_memory().expect("image");
    let (o, t) = image
        .transact("test", "create", |tx| {
            tx.create_object(&[], None, Map::new())
        })
        .expect("create");
    create(&mut image, &[o], None, json!({}));
    let err = image.undo(t, "test").err();
    assert_eq!(err.map(|e| e.code().as_str()), Some("conflict"));
}

#[test]
fn history_is_newest_last_and_filters_by_object() {
    let mut image = Image::in_memory().expect("image");
    let a = create(&mut image, &[], None, json!({}));
    let b = create(&mut image, &[], None, json!({}));
    for i in 0..5 {
        set(&mut image, a, "n", json!(i)).expect("set a");
        set(&mut image, b, "n", json!(i)).expect("set b");
    }
    let all = image.history(&HistoryFilter::default()).expect("history");
    assert!(all.windows(2).all(|w| w[0].tx < w[1].tx));
    let last3 = image
        .history(&HistoryFilter {
            limit: Some(3),
            ..Default::default()
        })
        .expect("history");
    assert_eq!(last3.last().map(|t| t.tx), all.last().map(|t| t.tx));
    assert_eq!(last3.len(), 3);
    let only_a = image
        .history(&HistoryFilter {
            object: Some(a),
            ..Default::default()
        })
        .expect("history");
    assert_eq!(only_a.len(), 6);
    assert!(only_a.iter().flat_map(|t| &t.changes).all(|c| c.oid() == a));
    // Every slot change carries its value before and after.
    let Some(Change::Slot { before, after, .. }) =
        only_a.last().and_then(|t| t.changes.first()).cloned()
    else {
        panic!("a slot change");
    };
    assert_eq!(
        (before, after),
        (Some(Slot::Value(json!(3))), Some(Slot::Value(json!(4))))
    );
}

#[test]
fn describe_at_shows_the_object_as_it_was() {
    let mut image = Image::in_memory().expect("image");
    let o = create(&mut image, &[], Some("thing"), json!({"v": 1}));
    let t1 = image.newest_tx().expect("tx");
    set(&mut image, o, "v", json!(2)).expect("set");
    image
        .transact("test", "rename", |tx| tx.rename(o, Some("renamed")))
        .expect("rename");
    let then = image.describe(o, Some(t1)).expect("as of");
    assert_eq!(then.slots.get("v"), Some(&json!(1)));
    assert_eq!(then.name.as_deref(), Some("thing"));
    let now = image.describe(o, None).expect("now");
    assert_eq!(now.slots.get("v"), Some(&json!(2)));
    assert_eq!(now.name.as_deref(), Some("renamed"));
    // Before it existed it is no object at all.
    assert!(image.describe(o, Some(TxId(1))).is_err());
    assert!(matches!(
        image.describe(o, Some(TxId(999))),
        Err(ImageError::NoSuchTransaction(_))
    ));
}

#[test]
fn names_are_unique_and_not_numbers() {
    let mut image = Image::in_memory().expect("image");
    create(&mut image, &[], Some("taken"), json!({}));
    let err = image.transact("test", "dup", |tx| {
        tx.create_object(&[], Some("taken"), Map::new())
    });
    assert!(matches!(err, Err(ImageError::NameTaken { .. })));
    let err = image.transact("test", "digits", |tx| {
        tx.create_object(&[], Some("42"), Map::new())
    });
    assert!(matches!(err, Err(ImageError::BadName { .. })));
}

#[test]
fn replay_until_an_earlier_transaction_hashes_that_state() {
    let mut image = Image::in_memory().expect("image");
    let o = create(&mut image, &[], None, json!({"x": 0}));
    let mut hashes = vec![];
    for i in 1..=4 {
        let tx = set(&mut image, o, "x", json!(i)).expect("set");
        hashes.push((tx, image.state_hash().expect("hash")));
    }
    for (tx, hash) in hashes {
        let report = image.replay(Some(tx)).expect("replay");
        assert_eq!(report.state_hash, hash, "state at tx {tx}");
    }
    let newest = image.replay(None).expect("replay");
    assert_eq!(newest.matches, Some(true));
    assert_eq!(
        newest.live_hash.as_deref(),
        Some(newest.state_hash.as_str())
    );
}

fn slot_in(tx: &batos::image::Tx, oid: Oid, name: &str) -> Slot {
    tx.lookup(oid, name).expect("lookup").expect("found").slot
}

#[test]
fn a_transaction_reads_its_own_writes_and_committed_state_through_the_cache() {
    let mut image = Image::in_memory().expect("image");
    let proto = create(&mut image, &[], None, json!({"x": 1}));
    let child = create(&mut image, &[proto], None, json!({}));
    assert_eq!(value(&image, child, "x"), Some(json!(1)), "fills the cache");
    image
        .transact("test", "reads", |tx| {
            assert_eq!(slot_in(tx, child, "x"), Slot::Value(json!(1)));
            tx.set_slot(proto, "x", Slot::Value(json!(2)))?;
            // The child is untouched (read through the cache), its parent written (SQLite).
            assert_eq!(slot_in(tx, child, "x"), Slot::Value(json!(2)));
            let savepoint = tx.savepoint()?;
            tx.set_slot(child, "x", Slot::Value(json!(3)))?;
            assert_eq!(slot_in(tx, child, "x"), Slot::Value(json!(3)));
            tx.rollback_to(savepoint)?;
            assert_eq!(slot_in(tx, child, "x"), Slot::Value(json!(2)));
            Ok::<_, ImageError>(())
        })
        .expect("transaction");
    assert_eq!(value(&image, child, "x"), Some(json!(2)));
    let failed = image.transact("test", "fails", |tx| {
        tx.set_slot(proto, "x", Slot::Value(json!(9)))?;
        assert_eq!(slot_in(tx, child, "x"), Slot::Value(json!(9)));
        Err::<(), _>(ImageError::Corrupt("on purpose".into()))
    });
    assert!(failed.is_err());
    assert_eq!(
        value(&image, child, "x"),
        Some(json!(2)),
        "nothing of it stays"
    );
    image
        .transact("test", "after", |tx| {
            assert_eq!(slot_in(tx, child, "x"), Slot::Value(json!(2)));
            Ok::<_, ImageError>(())
        })
        .expect("transaction");
}

#[test]
fn a_siblings_commit_is_seen_inside_the_next_transaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a = Image::create(&dir.path().join("image.db"), Durability::Normal).expect("image");
    let mut b = a.open_sibling(Durability::Normal).expect("sibling");
    let x = create(&mut a, &[], None, json!({"n": 1}));
    assert_eq!(value(&a, x, "n"), Some(json!(1)), "cached in a");
    assert_eq!(value(&b, x, "n"), Some(json!(1)), "cached in b");
    set(&mut b, x, "n", json!(2)).expect("b writes");
    a.transact("test", "reads", |tx| {
        assert_eq!(slot_in(tx, x, "n"), Slot::Value(json!(2)));
        tx.set_slot(x, "n", Slot::Value(json!(3)))
    })
    .expect("a writes");
    assert_eq!(value(&b, x, "n"), Some(json!(3)));
    assert_eq!(value(&a, x, "n"), Some(json!(3)));
}

/// An object undone away and undone back is the same object at both ends: `diff` across that
/// says nothing of it; across its undoing alone it was destroyed; across its making, created.
#[test]
fn diff_follows_an_object_through_undo_and_the_undo_of_that_undo() {
    let mut image = Image::in_memory().expect("image");
    let root = Oid(1);
    let before = image.newest_tx().expect("newest");
    let x = create(&mut image, &[root], None, json!({"a": 1}));
    let made = image.newest_tx().expect("newest");
    let gone = image.undo(made, "test").expect("undo the create");
    let back = image.undo(gone, "test").expect("undo the undo");
    let oids = |from: TxId, until: TxId| -> Vec<(Oid, bool, bool)> {
        image
            .diff(from, until)
            .expect("diff")
            .iter()
            .map(|d| (d.oid, d.created, d.destroyed))
            .collect()
    };
    assert_eq!(oids(made, back), vec![], "the same object at both ends");
    assert_eq!(oids(made, gone), vec![(x, false, true)]);
    assert_eq!(oids(before, made), vec![(x, true, false)]);
    assert_eq!(oids(before, gone), vec![], "made and unmade in between");
    assert_eq!(oids(gone, back), vec![(x, true, false)]);
}
