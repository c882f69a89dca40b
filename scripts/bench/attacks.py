#!/usr/bin/env python3
"""What the issue's attacks cost the host now: its RSS under the frame and cache attacks, beside
its configured budget, and how long an unrelated `get` waits while endless compiles run.

- frames: one client sends messages of 16 frames of 1 MB each, never reading a reply
  (2000 of them, as fast as it can);
- deaf: one client sends 2000 `get`s of a 1 MB slot and never reads a reply;
- cache: 2000 different `get`s (different request ids do not count: different slots) of 1 MB
  values, read one by one;
- compiles: four installs of a const-eval loop at once (each runs out its --compile-timeout),
  while another client's `get`s are timed: the worst and the median, beside the same `get`s with
  no attack.

    python3 scripts/bench/attacks.py [--batos target/debug/batos]
"""
import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import zmq

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Host:
    def __init__(self, batos, directory, *extra):
        self.image = os.path.join(directory, "image.db")
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.process = subprocess.Popen([batos, "--image", self.image, "--durability", "normal", "serve", "--mind", "none",
                                         "--bind", self.endpoint, *extra], stderr=subprocess.PIPE, text=True)
        for line in self.process.stderr:
            if "serving" in line:
                break
        threading.Thread(target=self.process.stderr.read, daemon=True).start()
        with open(self.image + ".token") as f:
            self.token = f.read().strip()

    def dealer(self, timeout_ms=120_000):
        s = zmq.Context.instance().socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RCVTIMEO, timeout_ms)
        s.setsockopt(zmq.SNDHWM, 100_000)
        s.connect(self.endpoint)
        return s

    def ask(self, s, **request):
        request["token"] = self.token
        s.send_json(request)
        return s.recv_json()

    def stop(self):
        self.process.kill()
        self.process.wait()


def peak_while(pid, action):
    peak = [rss_mb(pid)]
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb(pid))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        action()
        time.sleep(1.0)
    finally:
        done.set()
        watcher.join()
    return peak[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batos", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "debug", "batos"))
    parser.add_argument("--messages", type=int, default=2000)
    args = parser.parse_args()
    rows = []
    big = "x" * ((1 << 20) - 200)

    def frames(host):
        s = host.dealer()
        frame = b"y" * (1 << 20)
        for _ in range(args.messages):
            s.send_multipart([frame] * 16, zmq.DONTWAIT)

    def deaf(host):
        assert host.ask(host.dealer(), op="set", to="lobby", slot="big", value=big)["ok"]
        s = host.dealer()
        for n in range(args.messages):
            s.send_json({"id": n, "op": "get", "to": "lobby", "slot": "big", "token": host.token}, zmq.DONTWAIT)

    def cache(host):
        s = host.dealer()
        for n in range(64):
            host.ask(s, op="set", to="lobby", slot=f"v{n}", value=big)
        for n in range(args.messages):
            host.ask(s, op="get", to="lobby", slot=f"v{n % 64}", id=n, limit=n)

    # Each attack on a fresh host: what one leaves behind does not count against the next.
    for name, attack in [
        (f"{args.messages} messages of 16 frames x 1 MB, never read", frames),
        (f"{args.messages} gets of a 1 MB slot, never read", deaf),
        (f"{args.messages} different gets of 1 MB values (64 slots)", cache),
    ]:
        with tempfile.TemporaryDirectory() as directory:
            host = Host(args.batos, directory)
            try:
                before = rss_mb(host.process.pid)
                peak = peak_while(host.process.pid, lambda: attack(host))
                after = rss_mb(host.process.pid)
                rows.append((name, before, peak, after))
            finally:
                host.stop()

    print("| attack (each on a fresh host) | RSS before (MB) | peak RSS (MB) | RSS after (MB) | budget: requests in flight + read cache (MB) |")
    print("| --- | --- | --- | --- | --- |")
    for name, before, peak, after in rows:
        print(f"| {name} | {before:.0f} | {peak:.0f} | {after:.0f} | 64 + 64 |")

    with open(os.path.join(ROOT, "tests", "compiles", "const_eval_loop.rs")) as f:
        spin = f.read()
    with tempfile.TemporaryDirectory() as directory:
        host = Host(args.batos, directory, "--compile-timeout", "10")
        try:
            reader = host.dealer()

            def timed(n):
                waits = []
                for _ in range(n):
                    start = time.perf_counter()
                    host.ask(reader, op="get", to="counter", slot="count")
                    waits.append((time.perf_counter() - start) * 1000)
                    time.sleep(0.01)
                return waits

            quiet = timed(200)
            attackers = [host.dealer() for _ in range(4)]
            for n, a in enumerate(attackers):
                a.send_json({"op": "install", "to": "lobby", "selector": f"spin{n}", "source": spin, "token": host.token})
            time.sleep(0.2)
            loaded = timed(200)
            for a in attackers:
                a.recv_json()
        finally:
            host.stop()
    print()
    print("| a `get` by another client | median (ms) | worst (ms) |")
    print("| --- | --- | --- |")
    print(f"| no attack | {statistics.median(quiet):.2f} | {max(quiet):.2f} |")
    print(f"| during 4 endless compiles | {statistics.median(loaded):.2f} | {max(loaded):.2f} |")


if __name__ == "__main__":
    main()
