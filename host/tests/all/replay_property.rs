//! Property: any sequence of creates, sets, removes, reparents and undos replays to the live
//! image's hash, at the newest transaction and at every transaction on the way; and every
//! object's "as of now" view folded from the log equals its live view.

use batos::image::Image;
use batos::object::{Oid, Slot, TxId};
use proptest::prelude::*;
use serde_json::json;

#[derive(Debug, Clone)]
enum Op {
    Create {
        proto: usize,
        slot: Option<(u8, i64)>,
    },
    Set {
        obj: usize,
        slot: u8,
        value: i64,
    },
    SetText {
        obj: usize,
        slot: u8,
    },
    Remove {
        obj: usize,
        slot: u8,
    },
    Reparent {
        obj: usize,
        parents: Vec<usize>,
    },
    Undo {
        back: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (any::<usize>(), proptest::option::of((0u8..4, -3i64..3)))
            .prop_map(|(proto, slot)| Op::Create { proto, slot }),
        (any::<usize>(), 0u8..4, -3i64..3).prop_map(|(obj, slot, value)| Op::Set {
            obj,
            slot,
            value
        }),
        (any::<usize>(), 0u8..4).prop_map(|(obj, slot)| Op::SetText { obj, slot }),
        (any::<usize>(), 0u8..4).prop_map(|(obj, slot)| Op::Remove { obj, slot }),
        (
            any::<usize>(),
            proptest::collection::vec(any::<usize>(), 0..3)
        )
            .prop_map(|(obj, parents)| Op::Reparent { obj, parents }),
        (0usize..6).prop_map(|back| Op::Undo { back }),
    ]
}

fn slot_name(i: u8) -> String {
    format!("s{i}")
}

fn live_objects(image: &Image) -> Vec<Oid> {
    (1..=200)
        .map(Oid)
        .filter(|o| image.describe(*o, None).is_ok())
        .collect()
}

/// Applies one op; errors the op may legitimately meet (conflict, cycle, missing slot) are fine.
fn apply(image: &mut Image, op: &Op, txs: &mut Vec<(TxId, String)>) {
    let objects = live_objects(image);
    let pick = |i: usize| objects[i % objects.len()];
    let result = match op {
        Op::Create { proto, slot } => image
            .transact("prop", "create", |tx| {
                let mut slots = serde_json::Map::new();
                if let Some((s, v)) = slot {
                    slots.insert(slot_name(*s), json!(v));
                }
                tx.create_object(&[pick(*proto)], None, slots)
            })
            .map(|(_, t)| t),
        Op::Set { obj, slot, value } => image
            .transact("prop", "set", |tx| {
                tx.set_slot(pick(*obj), &slot_name(*slot), Slot::Value(json!(value)))
            })
            .map(|(_, t)| t),
        Op::SetText { obj, slot } => image
            .transact("prop", "set", |tx| {
                tx.set_slot(
                    pick(*obj),
                    &slot_name(*slot),
                    Slot::Value(json!({"nested": ["ü", null, 1.5]})),
                )
            })
            .map(|(_, t)| t),
        Op::Remove { obj, slot } => image
            .transact("prop", "remove", |tx| {
                tx.remove_slot(pick(*obj), &slot_name(*slot))
            })
            .map(|(_, t)| t),
        Op::Reparent { obj, parents } => image
            .transact("prop", "reparent", |tx| {
                tx.set_parents(pick(*obj), parents.iter().map(|p| pick(*p)).collect())
            })
            .map(|(_, t)| t),
        Op::Undo { back } => {
            let newest = image.newest_tx().expect("newest").0;
            let target = TxId((newest - *back as i64).max(2));
            image.undo(target, "prop")
        }
    };
    if let Ok(tx) = result {
        txs.push((tx, image.state_hash().expect("hash")));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn any_history_replays_to_the_live_hash(ops in proptest::collection::vec(op(), 1..40)) {
        let mut image = Image::in_memory().expect("image");
        let mut txs = Vec::new();
        for op in &ops {
            apply(&mut image, op, &mut txs);
        }
        let report = image.replay(None).expect("replay");
        prop_assert_eq!(report.matches, Some(true), "{:?}", report.first_difference);
        for (tx, hash) in &txs {
            let at = image.replay(Some(*tx)).expect("replay until");
            prop_assert_eq!(&at.state_hash, hash, "state at tx {}", tx);
        }
        // The cached lookup (with its single-parent fast path) answers what the uncached
        // walk inside a transaction answers, for every object and slot.
        let objects = live_objects(&image);
        for oid in &objects {
            for s in 0..5u8 {
                let cached = image.lookup(*oid, &slot_name(s)).expect("cached lookup");
                let (uncached, _) = image
                    .transact("prop", "look", |tx| {
                        tx.discard_if_unchanged();
                        tx.lookup(*oid, &slot_name(s))
                    })
                    .expect("uncached lookup");
                prop_assert_eq!(cached, uncached);
            }
        }
        let newest = image.newest_tx().expect("newest");
        for oid in live_objects(&image) {
            let now = image.describe(oid, None).expect("live");
            let folded = image.describe(oid, Some(newest)).expect("as of newest");
            prop_assert_eq!(now, folded);
        }
        // `diff` between two transactions names exactly the slots whose values differ between
        // the object as of each, with those values.
        let mut points: Vec<TxId> = txs.iter().map(|(t, _)| *t).collect();
        points.insert(0, TxId(0));
        let (from, until) = (points[points.len() / 3], newest);
        let diff = image.diff(from, until).expect("diff");
        for oid in live_objects(&image) {
            let (Ok(then), Ok(now)) = (image.describe(oid, Some(from)), image.describe(oid, Some(until))) else {
                continue;
            };
            let entry = diff.iter().find(|d| d.oid == oid);
            for s in 0..4u8 {
                let name = slot_name(s);
                let (a, b) = (then.slots.get(&name), now.slots.get(&name));
                let span = entry.and_then(|e| e.slots.get(&name));
                if a == b {
                    prop_assert!(span.is_none(), "{oid}.{name} is the same at both, yet {span:?}");
                } else {
                    let span = span.expect("a slot that differs is in the diff");
                    let value = |s: &Option<Slot>| match s {
                        Some(Slot::Value(v)) => Some(v.clone()),
                        _ => None,
                    };
                    prop_assert_eq!(value(&span.from), a.cloned(), "{}.{} from", oid, name);
                    prop_assert_eq!(value(&span.until), b.cloned(), "{}.{} until", oid, name);
                }
            }
            let parents = entry.and_then(|e| e.parents.as_ref());
            if then.parents == now.parents {
                prop_assert!(parents.is_none(), "{oid}'s parents are the same at both");
            } else {
                prop_assert_eq!(parents.map(|p| p.until.clone()), Some(now.parents.clone()));
            }
        }
    }
}
