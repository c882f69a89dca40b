//! The object cache: committed objects' slots and parents, kept in memory for lookups.
//!
//! A message send walks the delegation chain, one object per step; reading each from SQLite
//! costs microseconds, reading it from here costs nanoseconds. The cache belongs to the image's
//! writer, the only process that can change the image, and is coherent by construction: objects
//! are loaded lazily from committed state, and every commit drops the objects it touched. A
//! transaction, which holds the write lock, reads and fills it only for objects it has not
//! written (their committed state is their state in the transaction). Read-only connections
//! (which another process may write under) do not cache.

use std::cell::RefCell;

use crate::object::{Oid, Slot};

#[derive(Debug, Clone)]
struct CachedObject {
    /// Own slots sorted by name: a binary search beats hashing for the few slots objects have.
    slots: Vec<(String, Slot)>,
    parents: Vec<Oid>,
}

/// Objects indexed by oid (oids are dense: AUTOINCREMENT from 1).
#[derive(Debug, Default)]
pub struct ObjectCache {
    objects: RefCell<Vec<Option<CachedObject>>>,
    /// About how many bytes the cached objects take.
    bytes: std::cell::Cell<usize>,
}

/// Objects a cache holds at most; past this a lookup reads SQLite instead of growing it.
const MAX_CACHED_OID: i64 = 1 << 22;

/// About how many bytes one connection's cache may hold; past it the cache starts over. Every
/// worker has its own, so this is per connection.
const MAX_CACHED_BYTES: usize = 8 << 20;

/// An object larger than this is never cached: lookups read it from SQLite (the cache is for
/// the small objects a delegation chain walks through, not for bulk data).
const MAX_OBJECT_BYTES: usize = 64 << 10;

/// About how much memory a slot value takes.
fn value_bytes(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => 16,
        Value::String(s) => 24 + s.len(),
        Value::Array(items) => 24 + items.iter().map(value_bytes).sum::<usize>(),
        Value::Object(map) => {
            48 + map
                .iter()
                .map(|(k, v)| 24 + k.len() + value_bytes(v))
                .sum::<usize>()
        }
    }
}

fn object_bytes(slots: &[(String, Slot)], parents: &[Oid]) -> usize {
    64 + parents.len() * 8
        + slots
            .iter()
            .map(|(name, slot)| {
                32 + name.len()
                    + match slot {
                        Slot::Value(v) => value_bytes(v),
                        Slot::Method(_) => 16,
                    }
            })
            .sum::<usize>()
}

impl ObjectCache {
    fn index(oid: Oid) -> Option<usize> {
        (oid.0 > 0 && oid.0 < MAX_CACHED_OID).then_some(oid.0 as usize)
    }

    /// Answers what [`crate::object::ObjectGraph::visit`] asks, if `oid` is cached.
    #[inline]
    pub fn visit(
        &self,
        oid: Oid,
        name: &str,
        parents: &mut crate::object::Parents,
    ) -> Option<Option<Slot>> {
        let index = Self::index(oid)?;
        let objects = self.objects.borrow();
        let object = objects.get(index)?.as_ref()?;
        if let Ok(at) = object.slots.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            return Some(Some(object.slots[at].1.clone()));
        }
        parents.extend_from_slice(&object.parents);
        Some(None)
    }

    /// The fast path for the common case, a single-parent chain: walks it under one borrow.
    /// Answers `None` ("ask the general walk") at anything else: an object not cached, one with
    /// several parents, or a chain longer than the delegation limit (a cycle ends up there too).
    /// Where it answers, the answer is the one depth-first, left-to-right lookup gives.
    pub fn lookup_chain(&self, receiver: Oid, selector: &str) -> Option<Option<(Oid, Slot)>> {
        let objects = self.objects.borrow();
        let mut oid = receiver;
        for _ in 0..=crate::object::MAX_DELEGATION_DEPTH {
            let object = objects.get(Self::index(oid)?)?.as_ref()?;
            if let Ok(at) = object
                .slots
                .binary_search_by(|(n, _)| n.as_str().cmp(selector))
            {
                return Some(Some((oid, object.slots[at].1.clone())));
            }
            match object.parents.as_slice() {
                [] => return Some(None),
                [parent] => oid = *parent,
                _ => return None,
            }
        }
        None
    }

    /// Remembers a committed object's own slots and parents.
    pub fn insert(&self, oid: Oid, mut slots: Vec<(String, Slot)>, parents: Vec<Oid>) {
        let Some(index) = Self::index(oid) else {
            return;
        };
        let size = object_bytes(&slots, &parents);
        if size > MAX_OBJECT_BYTES {
            return;
        }
        slots.sort_by(|a, b| a.0.cmp(&b.0));
        let mut objects = self.objects.borrow_mut();
        if self.bytes.get() + size > MAX_CACHED_BYTES {
            objects.clear();
            self.bytes.set(0);
        }
        if objects.len() <= index {
            objects.resize(index + 1, None);
        }
        // A replaced entry's bytes are not taken back: the count only errs high, and the next
        // start over resets it.
        self.bytes.set(self.bytes.get() + size);
        objects[index] = Some(CachedObject { slots, parents });
    }

    /// Forgets everything (another connection committed).
    pub fn clear(&self) {
        self.objects.borrow_mut().clear();
        self.bytes.set(0);
    }

    /// Forgets objects a commit changed.
    pub fn invalidate(&self, oids: impl IntoIterator<Item = Oid>) {
        let mut objects = self.objects.borrow_mut();
        for oid in oids {
            if let Some(slot) = Self::index(oid).and_then(|i| objects.get_mut(i))
                && let Some(gone) = slot.take()
            {
                let size = object_bytes(&gone.slots, &gone.parents);
                self.bytes.set(self.bytes.get().saturating_sub(size));
            }
        }
    }
}
