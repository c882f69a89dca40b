#!/usr/bin/env python3
"""The cycles' pass rate: how often the embedded model writes a Rust method that compiles,
passes the guardian (the source and component gates, the covenant among them) and is correct, on a
fixed suite of 44 missions (scripts/bench/missions.json: numbers, strings, lists, several slots,
errors, sends to other objects, creating objects), first try and after repairs, per setting.

    cargo build --bin batos
    python3 scripts/bench/cycles.py [--setting plain given intent] [--attempts 4] [--candidates 1 2]
                                    [--limit N] [--json]

Settings: `plain` sends each mission's message with its intent only; `given` also gives the
message's own expected answer (and slots after it) as an example, which the cycle checks on a
scratch clone before installing; `intent` turns on the cognition setting `examples_from_intent`
(the examples persona writes them). `--candidates K...` runs each setting once per K (the cognition
setting `candidates`: K drawn per attempt, the first greedy, the others sampled). A trap in an
installed method is answered as it is here (`repair_traps` off): the held-out checks judge the
method the cycle installed. Each setting runs on a new image (`batos init`, the default
mind unless BATOS_MODEL names another) served by a real host.

For each mission a fresh object is created with the mission's slots, and the missing selector is
sent to it. The cycle's transcript says, per attempt, how far the method got: rustc (the source
compiled), the guardian (every gate passed), installed (examples passed and its first call was
answered). A mission is correct when the first answer (or error), the slots after it, and every
held-out check (slots reset, then a send: not given to the cycle) are as expected (numbers compared
as numbers).
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
    def __init__(self, endpoint, token):
        self.token = token
        self.socket = zmq.Context.instance().socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.RCVTIMEO, 30 * 60 * 1000)
        self.socket.connect(endpoint)
        self.n = 0

    def ask(self, **request):
        self.n += 1
        request["id"] = self.n
        request["token"] = self.token
        self.socket.send_string(json.dumps(request))
        reply = json.loads(self.socket.recv())
        assert reply["id"] == self.n, reply
        return reply


def attempt_stats(events):
    """Per attempt: how far it got (extracted, rustc, guardian, trial: examples passed and
    installed). Events without an attempt belong to the latest one."""
    attempts = {}
    current = None
    for e in events:
        d = e["data"]
        current = d.get("attempt", current)
        if current is None:
            continue
        a = attempts.setdefault(current, {"extracted": True, "rustc": False, "guardian": False, "trial": False})
        if e["kind"] == "diagnostic":
            if d.get("stage") == "extract":
                a["extracted"] = False
            elif d.get("stage") == "compile" and d.get("gate") == "component":
                a["rustc"] = True
            elif d.get("stage") in ("trial", "examples"):
                a["rustc"] = a["guardian"] = True
        elif e["kind"] == "compiled":
            a["rustc"] = a["guardian"] = True
        elif e["kind"] == "transition" and d.get("to") == "validating":
            a["rustc"] = a["guardian"] = True
        elif e["kind"] == "transition" and d.get("to") == "installing":
            a["rustc"] = a["guardian"] = a["trial"] = True
    return attempts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(os.path.dirname(os.path.dirname(HERE)), "target"))
    ap.add_argument("--batos", default=os.path.join(target, "debug", "batos"))
    ap.add_argument("--setting", nargs="+", default=["plain", "given"], choices=["plain", "given", "intent"])
    ap.add_argument("--missions", default=os.path.join(HERE, "missions.json"))
    ap.add_argument("--attempts", type=int, default=4)
    ap.add_argument("--candidates", type=int, nargs="+", default=[1])
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--mind", default="image",
                    help="image (the embedded model), openai:http://HOST:PORT/v1 (an external engine, with --model) or scripted:FILE")
    ap.add_argument("--model", default=None, help="the model an external mind asks its engine for")
    ap.add_argument("--peer", default=None, metavar="GGUF",
                    help="also run every setting on llama.cpp's server (xllamacpp) serving this GGUF as an external mind, "
                         "after the embedded mind: the same missions, side by side")
    ap.add_argument("--threads", type=int, default=2, help="inference threads, for both engines")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--transcripts", default=os.path.join(tempfile.gettempdir(), "batos-cycles-transcripts"),
                    help="where the transcripts of missions that were not correct are written")
    args = ap.parse_args()
    missions = json.load(open(args.missions))[: args.limit]
    os.environ["BATOS_MIND_THREADS"] = str(args.threads)
    reports = [run_setting(args, missions, setting, k) for setting in args.setting for k in args.candidates]
    if args.peer:
        port = free_port()
        server = subprocess.Popen([sys.executable, os.path.join(HERE, "..", "..", "tests", "engines", "llama_server.py"),
                                   str(port), args.peer, str(args.threads)],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert server.stdout.readline().strip() == "ready", "llama.cpp's server did not start"
            args.mind, args.model = f"openai:http://127.0.0.1:{port}/v1", os.path.basename(args.peer)
            reports += [run_setting(args, missions, setting, k) for setting in args.setting for k in args.candidates]
        finally:
            server.terminate()
            server.wait()
    if args.json:
        print(json.dumps(reports))
        return
    print(f"{len(missions)} missions; up to {args.attempts} attempts each; {args.threads} inference thread(s)")
    print("| mind | setting | candidates | | compiled (rustc) | passed the guardian | installed | correct | median cycle | p90 cycle |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for report in reports:
        s = report["seconds_per_cycle"]
        for key, label in [("first_try", "first try"), ("after_repairs", "after repairs")]:
            r = report[key]
            print(f"| {report['mind']} | {report['setting']} | {report['candidates']} | {label} | {r['compiled']:.0f}% | {r['guardian']:.0f}% | {r['installed']:.0f}% "
                  f"| {r['correct']:.0f}% | {s['median']:.1f} s | {s['p90']:.1f} s |")


def given_example(m):
    """The mission's own message as an example: its expected answer (or error) and slots."""
    example = {"args": m["args"]}
    if m.get("expect_error"):
        example["error"] = True
    else:
        example["answer"] = m["expect"]
    if m.get("expect_slots"):
        example["slots"] = m["expect_slots"]
    return example


def as_expected(reply, expect_error, expect):
    if expect_error:
        return not reply["ok"] and reply["error"]["code"] == "method-error"
    return reply["ok"] and same(reply["result"], expect)


def run_setting(args, missions, setting, candidates):
    with tempfile.TemporaryDirectory() as tmp:
        image = os.path.join(tmp, "image.db")
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        init = ["init", "--mind", "image" if args.mind == "image" else "none"]
        subprocess.run([args.batos, "--image", image, *init], check=True, capture_output=True)
        model = ["--model", args.model] if args.model else []
        host = subprocess.Popen([args.batos, "--image", image, "serve", "--mind", args.mind, *model, "--bind", endpoint],
                                stderr=subprocess.PIPE, text=True)
        try:
            for line in host.stderr:
                if "serving" in line:
                    break
            # Keep reading the host's log, so it never blocks on a full pipe.
            log = []
            threading.Thread(target=lambda: log.extend(host.stderr), daemon=True).start()
            with open(image + ".token") as f:
                client = Client(endpoint, f.read().strip())
            client.ask(op="set", to="cognition", slot="attempts", value=args.attempts)
            client.ask(op="set", to="cognition", slot="examples_from_intent", value=setting == "intent")
            client.ask(op="set", to="cognition", slot="candidates", value=candidates)
            client.ask(op="set", to="cognition", slot="repair_traps", value="off")
            mind = None
            results = []
            for m in missions:
                name = f"m_{m['selector']}"
                created = client.ask(op="create", name=name, slots=m["slots"])
                assert created["ok"], created
                started = time.perf_counter()
                extra = {"examples": [given_example(m)]} if setting == "given" else {}
                reply = client.ask(op="send", to=name, selector=m["selector"], args=m["args"], intent=m["intent"], **extra)
                seconds = time.perf_counter() - started
                cycle = client.ask(op="cycles", limit=1)["result"][-1]
                transcript = client.ask(op="cycle", cycle=cycle["id"])
                assert transcript["ok"], transcript
                transcript = transcript["result"]
                mind = mind or cycle.get("mind")
                per_attempt = attempt_stats(transcript["events"])
                first = per_attempt.get(1, {})
                installed = cycle["state"] == "complete"
                correct = installed and as_expected(reply, m.get("expect_error"), m.get("expect"))
                for slot, value in (m.get("expect_slots") or {}).items():
                    got = client.ask(op="get", to=name, slot=slot)
                    correct = correct and got["ok"] and same(got["result"], value)
                if correct:
                    for ex in m["examples"]:
                        for slot, value in ex["slots"].items():
                            client.ask(op="set", to=name, slot=slot, value=value)
                        r = client.ask(op="send", to=name, selector=m["selector"], args=ex["args"])
                        correct = correct and as_expected(r, ex.get("expect_error"), ex.get("expect"))
                if not correct:
                    os.makedirs(args.transcripts, exist_ok=True)
                    path = os.path.join(args.transcripts, f"{setting}-k{candidates}-{m['selector']}.json")
                    with open(path, "w") as f:
                        json.dump({"mission": m, "reply": reply, "cycle": cycle, "transcript": transcript}, f, indent=1)
                results.append({
                    "selector": m["selector"], "state": cycle["state"], "attempts": cycle["attempts"],
                    "seconds": seconds,
                    "first": {k: first.get(k, False) for k in ["rustc", "guardian", "trial"]},
                    "any": {k: any(a.get(k) for a in per_attempt.values()) for k in ["rustc", "guardian", "trial"]},
                    "correct": correct, "correct_first": correct and cycle["attempts"] == 1,
                    "reply": reply.get("result", reply.get("error")),
                })
                print(f"{setting:>6} k={candidates} {m['selector']:>14}: {cycle['state']:<8} attempts {cycle['attempts']} "
                      f"{seconds:6.1f} s  correct={correct}", file=sys.stderr)
        finally:
            host.terminate()
            host.wait()

    n = len(results)
    share = lambda f: sum(1 for r in results if f(r)) / n * 100
    seconds = sorted(r["seconds"] for r in results)
    return {
        "setting": setting, "candidates": candidates, "mind": mind, "missions": n, "attempts": args.attempts,
        "first_try": {"compiled": share(lambda r: r["first"]["rustc"]),
                      "guardian": share(lambda r: r["first"]["guardian"]),
                      "installed": share(lambda r: r["first"]["trial"]),
                      "correct": share(lambda r: r["correct_first"])},
        "after_repairs": {"compiled": share(lambda r: r["any"]["rustc"]),
                          "guardian": share(lambda r: r["any"]["guardian"]),
                          "installed": share(lambda r: r["any"]["trial"]),
                          "correct": share(lambda r: r["correct"])},
        "seconds_per_cycle": {"median": statistics.median(seconds),
                              "p90": seconds[min(len(seconds) - 1, int(0.9 * len(seconds)))],
                              "max": seconds[-1]},
        "results": results,
    }


if __name__ == "__main__":
    main()
