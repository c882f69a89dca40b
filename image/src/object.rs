//! The object model: identities, slots and delegation.
//!
//! An object is an id ([`Oid`]), an optional unique name, named slots and an ordered list of
//! parents. A message's selector is looked up in the receiver's own slots first, then in its
//! parents, depth first and left to right. The walk keeps a visited set, so a diamond visits a
//! shared ancestor once and a parent cycle (refused when written, but possible in a hand-edited
//! file) still terminates. A chain deeper than [`MAX_DELEGATION_DEPTH`] is an error, not a hang.
//!
//! This module knows nothing of SQL: [`lookup`] walks any [`ObjectGraph`], which the image
//! implements over its connection and tests implement over a map.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How far delegation may go from the receiver before lookup gives up with
/// [`LookupError::TooDeep`]. Deep enough for any sane hierarchy, small enough to answer at once.
pub const MAX_DELEGATION_DEPTH: usize = 64;

/// An object's identity: stable for the image's whole life, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Oid(pub i64);

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A transaction's id: transactions are numbered from 1 (genesis) without gaps in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TxId(pub i64);

impl fmt::Display for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How a client names an object: by id or by name (`"lobby"`, `"counter"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ObjRef {
    Id(i64),
    Name(String),
}

impl fmt::Display for ObjRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjRef::Id(id) => write!(f, "{id}"),
            ObjRef::Name(name) => write!(f, "{name}"),
        }
    }
}

impl FromStr for ObjRef {
    type Err = std::convert::Infallible;

    /// All digits is an id, anything else a name: `batos get 3 count`, `batos get counter count`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.parse::<i64>() {
            Ok(id) => ObjRef::Id(id),
            Err(_) => ObjRef::Name(s.to_owned()),
        })
    }
}

impl From<Oid> for ObjRef {
    fn from(oid: Oid) -> Self {
        ObjRef::Id(oid.0)
    }
}

/// What a slot holds. Values are any JSON; method slots (a later kind) point at an installed
/// method, so the kind is explicit in the image rather than guessed from the value's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Slot {
    Value(Value),
    /// An installed method (one version of it).
    Method(MethodId),
}

impl Slot {
    /// The kind as stored in the image's `slots.kind` column.
    pub fn kind(&self) -> &'static str {
        match self {
            Slot::Value(_) => "value",
            Slot::Method(_) => "method",
        }
    }
}

/// An installed method version's id: stable, never reused, its row never changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MethodId(pub i64);

impl fmt::Display for MethodId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A buffer of parents that lives on the stack for the usual few.
pub type Parents = smallvec::SmallVec<[Oid; 8]>;

/// What delegation asks of wherever objects live.
pub trait ObjectGraph {
    type Error;
    /// Looks at one object: answers its own slot `name` if it has one; otherwise appends its
    /// parents, in order, to `parents` (a buffer the walk reuses, so a lookup allocates little).
    fn visit(
        &self,
        oid: Oid,
        name: &str,
        parents: &mut Parents,
    ) -> Result<Option<Slot>, Self::Error>;
}

/// Where a lookup found its slot: `holder` may be the receiver or any ancestor.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub holder: Oid,
    pub slot: Slot,
}

#[derive(Debug, thiserror::Error)]
pub enum LookupError<E> {
    #[error(
        "looking up `{selector}` from object {receiver} went deeper than {MAX_DELEGATION_DEPTH} parents; \
         shorten the delegation chain"
    )]
    TooDeep { receiver: Oid, selector: String },
    #[error(transparent)]
    Graph(E),
}

/// The objects a walk has seen: a short list on the stack while small (the common case: no
/// hashing, no allocation), a set once a graph turns out large.
#[derive(Default)]
struct Visited {
    few: smallvec::SmallVec<[Oid; 32]>,
    many: Option<std::collections::HashSet<Oid>>,
}

impl Visited {
    /// Records `oid`; false if it was seen before.
    fn insert(&mut self, oid: Oid) -> bool {
        match &mut self.many {
            Some(many) => many.insert(oid),
            None => {
                if self.few.contains(&oid) {
                    return false;
                }
                if self.few.len() < self.few.inline_size() {
                    self.few.push(oid);
                } else {
                    let mut many: std::collections::HashSet<Oid> = self.few.drain(..).collect();
                    many.insert(oid);
                    self.many = Some(many);
                }
                true
            }
        }
    }
}

/// Finds `selector` for `receiver`: own slots, then parents depth first, left to right.
///
/// Returns `Ok(None)` when no object on the way has the slot: the caller turns that into
/// `does-not-understand`.
pub fn lookup<G: ObjectGraph>(
    graph: &G,
    receiver: Oid,
    selector: &str,
) -> Result<Option<Found>, LookupError<G::Error>> {
    // No recursion: a hostile graph cannot blow the host's stack. The next object to visit is
    // `next` (the leftmost parent of the last one); its siblings wait on `pending`, pushed in
    // reverse so the leftmost comes off first. A plain chain never touches `pending`.
    let mut next = Some((receiver, 0usize));
    let mut pending: smallvec::SmallVec<[(Oid, usize); 16]> = smallvec::SmallVec::new();
    let mut parents = Parents::new();
    let mut visited = Visited::default();
    while let Some((oid, depth)) = next.take().or_else(|| pending.pop()) {
        if !visited.insert(oid) {
            continue;
        }
        parents.clear();
        if let Some(slot) = graph
            .visit(oid, selector, &mut parents)
            .map_err(LookupError::Graph)?
        {
            return Ok(Some(Found { holder: oid, slot }));
        }
        let Some((&first, rest)) = parents.split_first() else {
            continue;
        };
        if depth + 1 > MAX_DELEGATION_DEPTH {
            return Err(LookupError::TooDeep {
                receiver,
                selector: selector.to_owned(),
            });
        }
        pending.extend(rest.iter().rev().map(|p| (*p, depth + 1)));
        next = Some((first, depth + 1));
    }
    Ok(None)
}

/// Whether making `parents` the parents of `child` would close a delegation cycle: true when
/// `child` is among them or reachable from any of them. `parents_of` answers one object's parents.
pub fn would_cycle<E>(
    parents_of: impl Fn(Oid) -> Result<Vec<Oid>, E>,
    child: Oid,
    parents: &[Oid],
) -> Result<bool, E> {
    let mut stack: Vec<Oid> = parents.to_vec();
    let mut visited = Visited::default();
    while let Some(oid) = stack.pop() {
        if oid == child {
            return Ok(true);
        }
        if visited.insert(oid) {
            stack.extend(parents_of(oid)?);
        }
    }
    Ok(false)
}

/// Where a message dispatches to: a value slot's answer, a method to run, or the distinct
/// "nobody has this selector", which is where cognition plugs in.
#[derive(Debug, Clone, PartialEq)]
pub enum Dispatch {
    Answer(Value),
    /// The selector names a method: the caller runs it with `self` = the receiver.
    Method {
        holder: Oid,
        method: MethodId,
    },
    DoesNotUnderstand {
        receiver: Oid,
        selector: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    /// An in-memory graph: (own slots, parents) per object, and a log of visited objects.
    #[derive(Default)]
    struct Graph {
        objects: HashMap<Oid, (HashMap<String, Value>, Vec<Oid>)>,
        visits: std::cell::RefCell<Vec<Oid>>,
    }

    impl Graph {
        fn add(&mut self, id: i64, parents: &[i64], slots: &[(&str, Value)]) {
            self.objects.insert(
                Oid(id),
                (
                    slots
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), v.clone()))
                        .collect(),
                    parents.iter().map(|p| Oid(*p)).collect(),
                ),
            );
        }
    }

    impl Graph {
        fn parents_of(&self, oid: Oid) -> Result<Vec<Oid>, std::convert::Infallible> {
            Ok(self
                .objects
                .get(&oid)
                .map(|(_, p)| p.clone())
                .unwrap_or_default())
        }
    }

    impl ObjectGraph for Graph {
        type Error = std::convert::Infallible;
        fn visit(
            &self,
            oid: Oid,
            name: &str,
            parents: &mut Parents,
        ) -> Result<Option<Slot>, Self::Error> {
            self.visits.borrow_mut().push(oid);
            let Some((slots, ps)) = self.objects.get(&oid) else {
                return Ok(None);
            };
            if let Some(v) = slots.get(name) {
                return Ok(Some(Slot::Value(v.clone())));
            }
            parents.extend(ps.iter().copied());
            Ok(None)
        }
    }

    fn holder(g: &Graph, receiver: i64, selector: &str) -> Option<i64> {
        match lookup(g, Oid(receiver), selector) {
            Ok(found) => found.map(|f| f.holder.0),
            Err(e) => panic!("lookup failed: {e}"),
        }
    }

    #[test]
    fn own_slot_wins_over_parents() {
        let mut g = Graph::default();
        g.add(1, &[], &[("x", json!(1))]);
        g.add(2, &[1], &[("x", json!(2))]);
        assert_eq!(holder(&g, 2, "x"), Some(2));
    }

    #[test]
    fn depth_first_left_to_right() {
        // 4 -> [2, 3]; 2 -> [1]; 1 has x; 3 has x. Depth first: 4, 2, 1 (found) before 3.
        let mut g = Graph::default();
        g.add(1, &[], &[("x", json!("deep-left"))]);
        g.add(2, &[1], &[]);
        g.add(3, &[], &[("x", json!("shallow-right"))]);
        g.add(4, &[2, 3], &[]);
        assert_eq!(holder(&g, 4, "x"), Some(1));
    }

    #[test]
    fn diamond_visits_shared_ancestor_once() {
        // 4 -> [2, 3]; 2 -> [1]; 3 -> [1]. Order: 4, 2, 1, 3; 1 is not visited twice.
        let mut g = Graph::default();
        g.add(1, &[], &[]);
        g.add(2, &[1], &[]);
        g.add(3, &[1], &[("y", json!(3))]);
        g.add(4, &[2, 3], &[]);
        assert_eq!(holder(&g, 4, "y"), Some(3));
        assert_eq!(*g.visits.borrow(), vec![Oid(4), Oid(2), Oid(1), Oid(3)]);
    }

    #[test]
    fn cycle_terminates_without_answer() {
        let mut g = Graph::default();
        g.add(1, &[2], &[]);
        g.add(2, &[1], &[]);
        assert_eq!(holder(&g, 1, "missing"), None);
        assert_eq!(holder(&g, 2, "missing"), None);
    }

    #[test]
    fn a_large_graph_switches_to_a_set_and_still_terminates() {
        let mut g = Graph::default();
        // 60 objects each with every earlier one as parent: many revisits, one answer.
        g.add(0, &[], &[("x", json!(0))]);
        for i in 1..60 {
            let ps: Vec<i64> = (0..i).rev().collect();
            g.add(i, &ps, &[]);
        }
        assert_eq!(holder(&g, 59, "x"), Some(0));
        assert_eq!(holder(&g, 59, "missing"), None);
    }

    #[test]
    fn self_parent_terminates() {
        let mut g = Graph::default();
        g.add(1, &[1], &[]);
        assert_eq!(holder(&g, 1, "x"), None);
    }

    #[test]
    fn too_deep_is_a_clear_error() {
        let mut g = Graph::default();
        let n = MAX_DELEGATION_DEPTH as i64 + 2;
        g.add(0, &[], &[("x", json!(0))]);
        for i in 1..=n {
            g.add(i, &[i - 1], &[]);
        }
        assert!(matches!(
            lookup(&g, Oid(n), "x"),
            Err(LookupError::TooDeep { .. })
        ));
        // Exactly at the limit still answers.
        assert_eq!(holder(&g, MAX_DELEGATION_DEPTH as i64, "x"), Some(0));
    }

    #[test]
    fn would_cycle_detects_direct_and_indirect() {
        let mut g = Graph::default();
        g.add(1, &[], &[]);
        g.add(2, &[1], &[]);
        g.add(3, &[2], &[]);
        let p = |o| g.parents_of(o);
        assert!(matches!(would_cycle(p, Oid(1), &[Oid(3)]), Ok(true)));
        assert!(matches!(would_cycle(p, Oid(1), &[Oid(1)]), Ok(true)));
        assert!(matches!(would_cycle(p, Oid(3), &[Oid(1)]), Ok(false)));
    }

    #[test]
    fn objref_parses_ids_and_names() {
        assert_eq!("12".parse::<ObjRef>().ok(), Some(ObjRef::Id(12)));
        assert_eq!(
            "lobby".parse::<ObjRef>().ok(),
            Some(ObjRef::Name("lobby".into()))
        );
    }
}
