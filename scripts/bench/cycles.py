#!/usr/bin/env python3
"""The contract pass rate: how often the embedded model writes a Rust method that compiles,
passes the guardian (the source and component gates, the covenant among them) and gives the right
answers, on a fixed suite of missions (scripts/bench/missions.json), first try and after repairs.

    cargo build --release --bin batos
    python3 scripts/bench/cycles.py [--batos target/release/batos] [--attempts 4] [--limit N] [--json]

For each mission a fresh object is created with the mission's slots, and the missing selector is
sent to it with the mission's arguments and intent, through a real host (`batos serve --mind
image` on a new image, so the default model as shipped, Q4_1, on the native backend). The cycle's
transcript says, per attempt, how far the method got: rustc (the source compiled), the guardian
(every gate passed), the trial (its first call succeeded, and it was installed). A mission is
correct when the installed method answered the first message and every example (slots reset,
then a send) exactly as expected (numbers compared as numbers).
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import zmq

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def same(a, b):
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) < 1e-9
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


class Client:
    def __init__(self, endpoint):
        self.socket = zmq.Context.instance().socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.RCVTIMEO, 30 * 60 * 1000)
        self.socket.connect(endpoint)
        self.n = 0

    def ask(self, **request):
        self.n += 1
        request["id"] = self.n
        self.socket.send_string(json.dumps(request))
        reply = json.loads(self.socket.recv())
        assert reply["id"] == self.n, reply
        return reply


def attempt_stats(events):
    """Per attempt: how far it got (extract, rustc, guardian, trial)."""
    attempts = {}
    for e in events:
        d = e["data"]
        n = d.get("attempt")
        if n is None:
            continue
        a = attempts.setdefault(n, {"extracted": True, "rustc": False, "guardian": False, "trial": False})
        if e["kind"] == "diagnostic":
            if d.get("stage") == "extract":
                a["extracted"] = False
            elif d.get("stage") == "compile" and d.get("gate") == "component":
                a["rustc"] = True
            elif d.get("stage") == "trial":
                a["rustc"] = a["guardian"] = True
        elif e["kind"] == "compiled":
            a["rustc"] = a["guardian"] = True
        elif e["kind"] == "transition" and d.get("to") == "installing":
            a["rustc"] = a["guardian"] = a["trial"] = True
    # An attempt that reached validating passed every gate.
    for e in events:
        if e["kind"] == "transition" and e["data"].get("to") == "validating":
            a = attempts.get(e["data"].get("attempt"))
            if a:
                a["rustc"] = a["guardian"] = True
    return attempts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batos", default="target/release/batos")
    ap.add_argument("--missions", default=os.path.join(HERE, "missions.json"))
    ap.add_argument("--attempts", type=int, default=4)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--mind", default="image", help="image (the embedded model) or scripted:FILE")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    missions = json.load(open(args.missions))[: args.limit]

    with tempfile.TemporaryDirectory() as tmp:
        image = os.path.join(tmp, "image.db")
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        init = ["init", "--mind", "image" if args.mind == "image" else "none"]
        subprocess.run([args.batos, "--image", image, *init], check=True, capture_output=True)
        host = subprocess.Popen([args.batos, "--image", image, "serve", "--mind", args.mind, "--bind", endpoint],
                                stderr=subprocess.PIPE, text=True)
        try:
            for line in host.stderr:
                if "serving" in line:
                    break
            # Keep reading the host's log, so it never blocks on a full pipe.
            log = []
            threading.Thread(target=lambda: log.extend(host.stderr), daemon=True).start()
            client = Client(endpoint)
            client.ask(op="set", to="cognition", slot="attempts", value=args.attempts)
            mind = None
            results = []
            for m in missions:
                name = f"m_{m['selector']}"
                created = client.ask(op="create", name=name, slots=m["slots"])
                assert created["ok"], created
                started = time.perf_counter()
                reply = client.ask(op="send", to=name, selector=m["selector"], args=m["args"], intent=m["intent"])
                seconds = time.perf_counter() - started
                cycle = client.ask(op="cycles", limit=1)["result"][-1]
                transcript = client.ask(op="cycle", cycle=cycle["id"])
                assert transcript["ok"], transcript
                transcript = transcript["result"]
                mind = mind or cycle.get("mind")
                per_attempt = attempt_stats(transcript["events"])
                first = per_attempt.get(1, {})
                correct = reply["ok"] and same(reply["result"], m["expect"])
                if correct:
                    for ex in m["examples"]:
                        for slot, value in ex["slots"].items():
                            client.ask(op="set", to=name, slot=slot, value=value)
                        r = client.ask(op="send", to=name, selector=m["selector"], args=ex["args"])
                        correct = correct and r["ok"] and same(r["result"], ex["expect"])
                results.append({
                    "selector": m["selector"], "state": cycle["state"], "attempts": cycle["attempts"],
                    "seconds": seconds,
                    "first": {k: first.get(k, False) for k in ["rustc", "guardian", "trial"]},
                    "any": {k: any(a.get(k) for a in per_attempt.values()) for k in ["rustc", "guardian", "trial"]},
                    "correct": correct, "correct_first": correct and cycle["attempts"] == 1,
                    "reply": reply.get("result", reply.get("error")),
                })
                print(f"{m['selector']:>14}: {cycle['state']:<8} attempts {cycle['attempts']} "
                      f"{seconds:6.1f} s  correct={correct}", file=sys.stderr)
        finally:
            host.terminate()
            host.wait()

    n = len(results)
    share = lambda f: sum(1 for r in results if f(r)) / n * 100
    report = {
        "mind": mind, "missions": n, "attempts": args.attempts,
        "first_try": {"compiled": share(lambda r: r["first"]["rustc"]),
                      "guardian": share(lambda r: r["first"]["guardian"]),
                      "installed": share(lambda r: r["first"]["trial"]),
                      "correct": share(lambda r: r["correct_first"])},
        "after_repairs": {"compiled": share(lambda r: r["any"]["rustc"]),
                          "guardian": share(lambda r: r["any"]["guardian"]),
                          "installed": share(lambda r: r["any"]["trial"]),
                          "correct": share(lambda r: r["correct"])},
        "seconds_per_cycle": {"median": statistics.median(r["seconds"] for r in results),
                              "max": max(r["seconds"] for r in results)},
        "results": results,
    }
    if args.json:
        print(json.dumps(report))
        return
    print(f"mind: {mind}; {n} missions; up to {args.attempts} attempts each")
    print("| | compiled (rustc) | passed the guardian | installed (first call ok) | correct on the examples |")
    print("| --- | --- | --- | --- | --- |")
    for key, label in [("first_try", "first try"), ("after_repairs", "after repairs")]:
        r = report[key]
        print(f"| {label} | {r['compiled']:.0f}% | {r['guardian']:.0f}% | {r['installed']:.0f}% | {r['correct']:.0f}% |")
    s = report["seconds_per_cycle"]
    print(f"time per cycle: median {s['median']:.1f} s, max {s['max']:.1f} s")


if __name__ == "__main__":
    main()
