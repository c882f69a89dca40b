#!/usr/bin/env python3
"""The crash harness: kill -9 a loaded host, restart it, retry what was in flight, and count
acknowledged writes lost and writes applied twice.

Each trial: a host serves the image (durability full, the default); 8 clients send keyed
`counter.increment`s (each key used once, retried with the same key); after a random 0.2-1.0 s the
host is killed with SIGKILL. The next host starts on the same file; each client retries the one
request it had in flight with its key, which answers the recorded reply if the request was applied
before the kill, or runs it now. Then:

- lost: an acknowledged increment whose effect is not in the count;
- applied twice: the count is above the number of distinct keys applied, or two keys got the same
  value back;
- replay: `replay` from genesis must match the live state hash; `PRAGMA integrity_check` must be ok.

    python3 scripts/bench/crash.py [--trials 100] [--batos target/debug/batos]
"""
import argparse
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

import zmq

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLIENTS = 8


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(batos, image, endpoint):
    host = subprocess.Popen([batos, "--image", image, "serve", "--mind", "none", "--bind", endpoint],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in host.stderr:
        if "serving" in line:
            break
    else:
        sys.exit(f"the host did not start: {host.wait()}")
    threading.Thread(target=host.stderr.read, daemon=True).start()
    with open(image + ".token") as f:
        return host, f.read().strip()


def dealer(endpoint, timeout_ms):
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, timeout_ms)
    s.connect(endpoint)
    return s


def increment(s, token, key):
    s.send_json({"op": "send", "to": "counter", "selector": "increment", "key": key, "token": token})
    reply = s.recv_json()
    if not reply.get("ok"):
        raise RuntimeError(reply)
    return reply["result"], reply.get("replayed", False)


def load(endpoint, token, trial, client, acked, pending, stop):
    """Sends keyed increments until the host dies; remembers the one in flight."""
    s = dealer(endpoint, 3000)
    n = 0
    while not stop.is_set():
        key = f"t{trial}-c{client}-{n}"
        pending[client] = key
        try:
            value, _ = increment(s, token, key)
        except (zmq.Again, zmq.ZMQError):
            return  # the host is gone: `key` is in flight
        acked.append((key, value))
        pending[client] = None
        n += 1
    s.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--batos", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "debug", "batos"))
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    lost = twice = replay_failures = integrity_failures = 0
    acknowledged_total = retried_replayed = retried_fresh = 0
    with tempfile.TemporaryDirectory() as tmp:
        image = os.path.join(tmp, "image.db")
        subprocess.run([args.batos, "--image", image, "init", "--mind", "none"], check=True, capture_output=True)
        applied = {}  # key -> value, every key whose increment took effect (acknowledged or retried)
        for trial in range(args.trials):
            endpoint = f"tcp://127.0.0.1:{free_port()}"
            host, token = start(args.batos, image, endpoint)
            acked, pending, stop = [], [None] * CLIENTS, threading.Event()
            threads = [threading.Thread(target=load, args=(endpoint, token, trial, c, acked, pending, stop))
                       for c in range(CLIENTS)]
            for t in threads:
                t.start()
            time.sleep(rng.uniform(0.2, 1.0))
            os.kill(host.pid, signal.SIGKILL)
            host.wait()
            stop.set()
            for t in threads:
                t.join()
            acknowledged_total += len(acked)
            for key, value in acked:
                applied[key] = value
            # The next host, and the retries of what was in flight.
            endpoint = f"tcp://127.0.0.1:{free_port()}"
            host, token = start(args.batos, image, endpoint)
            s = dealer(endpoint, 30_000)
            for key in pending:
                if key is None:
                    continue
                value, was_replayed = increment(s, token, key)
                if isinstance(value, dict) and value.get("reply_lost"):
                    # Applied by the dead host, whose reply was never recorded: applied once.
                    value = None
                applied[key] = value
                if was_replayed:
                    retried_replayed += 1
                else:
                    retried_fresh += 1
            s.send_json({"op": "get", "to": "counter", "slot": "count", "token": token})
            count = s.recv_json()["result"]
            values = [v for v in applied.values() if v is not None]
            if count < len(applied):
                lost += len(applied) - count
            if count > len(applied) or len(set(values)) != len(values):
                twice += max(count - len(applied), len(values) - len(set(values)))
            s.send_json({"op": "replay", "token": token})
            replay = s.recv_json()
            if not replay.get("ok") or replay["result"].get("match") is not True:
                replay_failures += 1
            s.close()
            host.terminate()
            host.wait()
            with sqlite3.connect(f"file:{image}?mode=ro", uri=True) as db:
                if db.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                    integrity_failures += 1
            print(f"trial {trial + 1}/{args.trials}: count {count}, keys applied {len(applied)}", file=sys.stderr)
    print(f"| trials | acknowledged writes | retried: replayed / run now | lost | applied twice | replay mismatches | integrity failures |")
    print(f"| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {args.trials} | {acknowledged_total} | {retried_replayed} / {retried_fresh} | {lost} | {twice} | {replay_failures} | {integrity_failures} |")
    sys.exit(1 if lost or twice or replay_failures or integrity_failures else 0)


if __name__ == "__main__":
    main()
