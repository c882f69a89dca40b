#!/usr/bin/env python3
"""Benchmark of the *seed design* that batos is compared against.

The seed design is a prototype object model on ZODB: a ``UvmObject`` is a
``persistent.Persistent`` holding a ``_slots`` PersistentMapping and a
``_parents`` list of other UvmObjects.  Attribute access looks in the object's
own slots, then in its parents depth first, left to right (with a visited
set).  Setting a slot writes into ``_slots`` and sets ``self._p_changed``.
Objects live in a ZODB FileStorage in a temporary directory (default
fsync-on-commit behaviour is kept).

Two operations are measured:

1. lookup  -- a chain of 9 objects, each with the previous as its only parent
   (8-deep delegation); the slot lives only on the root-most object.  The
   chain is committed, then read back through a fresh connection, and N
   lookups are timed from the leaf (N adaptive, about --lookup-seconds).
2. commit  -- each iteration sets one slot on one object and calls
   ``transaction.commit()`` (for about --commit-seconds, at least 200 commits).

Run:  pip install ZODB && python3 scripts/bench/seed_zodb.py --json
"""
import argparse
import json
import os
import platform
import tempfile
import time
from importlib.metadata import version

import persistent
import transaction
import ZODB
import ZODB.FileStorage
from persistent.mapping import PersistentMapping

CHAIN_LEN = 9  # 9 objects -> 8 delegation hops from leaf to root-most object


class UvmObject(persistent.Persistent):
    def __init__(self, parents=(), **slots):
        super().__init__()
        self._slots = PersistentMapping(slots)
        self._parents = list(parents)

    def _lookup(self, name, visited):
        if id(self) in visited:
            raise AttributeError(name)
        visited.add(id(self))
        slots = self._slots
        if name in slots:
            return slots[name]
        for parent in self._parents:
            try:
                return parent._lookup(name, visited)
            except AttributeError:
                pass
        raise AttributeError(name)

    def __getattr__(self, name):
        # Only called when normal lookup fails.  Private / persistence names
        # never go to slots (also protects against recursion while unpickling).
        if name.startswith("_"):
            raise AttributeError(name)
        return self._lookup(name, set())

    def __setattr__(self, name, value):
        if name.startswith("_"):
            super().__setattr__(name, value)
        else:
            self._slots[name] = value
            self._p_changed = True


def bench_lookup(db, seconds):
    conn = db.open()
    leaf = conn.root()["leaf"]  # ghosts loaded from storage via a fresh connection
    assert leaf.greeting == "hello"  # warm: unghosts the whole chain
    n, batch, elapsed = 0, 1000, 0.0
    while elapsed < seconds:
        t0 = time.perf_counter()
        for _ in range(batch):
            leaf.greeting
        elapsed += time.perf_counter() - t0
        n += batch
        batch = min(batch * 2, 1_000_000)
    conn.close()
    return elapsed * 1e9 / n, n / elapsed


def bench_commit(db, seconds, min_commits=200):
    conn = db.open()
    obj = conn.root()["leaf"]
    n, t0 = 0, time.perf_counter()
    while True:
        obj.counter = n
        transaction.commit()
        n += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds and n >= min_commits:
            break
    conn.close()
    return elapsed * 1e6 / n, n / elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--lookup-seconds", type=float, default=1.0)
    ap.add_argument("--commit-seconds", type=float, default=2.0)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="seed_zodb_") as tmp:
        storage = ZODB.FileStorage.FileStorage(os.path.join(tmp, "seed.fs"))
        db = ZODB.DB(storage)
        try:
            conn = db.open()
            obj = UvmObject(greeting="hello")  # root-most object holds the slot
            for _ in range(CHAIN_LEN - 1):
                obj = UvmObject(parents=[obj])
            conn.root()["leaf"] = obj
            transaction.commit()
            conn.close()
            db.cacheMinimize()

            lookup_ns, lookups_per_s = bench_lookup(db, args.lookup_seconds)
            commit_us, commits_per_s = bench_commit(db, args.commit_seconds)
        finally:
            db.close()

    result = {
        "lookup_ns": lookup_ns,
        "lookups_per_s": lookups_per_s,
        "commit_us": commit_us,
        "commits_per_s": commits_per_s,
        "zodb_version": version("ZODB"),
        "python": platform.python_version(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"seed design (ZODB {result['zodb_version']}, Python {result['python']})")
        print(f"{'operation':<28}{'per op':>14}{'ops/s':>14}")
        print(f"{'lookup (8-deep delegation)':<28}{lookup_ns:>11.1f} ns{lookups_per_s:>14,.0f}")
        print(f"{'durable commit (fsync)':<28}{commit_us:>11.1f} us{commits_per_s:>14,.0f}")


if __name__ == "__main__":
    main()
