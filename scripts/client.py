#!/usr/bin/env python3
"""A short batos client in Python (pyzmq, DEALER): send, install, inspect.

Start a host first (`scripts/run`, or `batos serve`), then:

    python3 scripts/client.py [tcp://127.0.0.1:5555]

Every request but ping carries the image's access token: $BATOS_TOKEN, else the file beside the
image ($BATOS_IMAGE, default image.db, so image.db.token), which only its owner can read.
"""
import itertools
import json
import os
import sys

import zmq

ENDPOINT = sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:5555"
ids = itertools.count(1)
socket = zmq.Context.instance().socket(zmq.DEALER)
socket.setsockopt(zmq.LINGER, 0)
socket.setsockopt(zmq.RCVTIMEO, 60_000)
socket.connect(ENDPOINT)


def token():
    if os.environ.get("BATOS_TOKEN"):
        return os.environ["BATOS_TOKEN"]
    path = os.environ.get("BATOS_IMAGE", "image.db") + ".token"
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as e:
        raise SystemExit(f"no access token: set BATOS_TOKEN or run beside the image ({e})")


TOKEN = token()


def call(op, **fields):
    """One request, one reply: the result, or an exception with the error's code."""
    request = {"id": next(ids), "op": op, "token": TOKEN, **fields}
    socket.send_json(request)
    reply = socket.recv_json()
    assert reply["id"] == request["id"], "replies come back in order on one DEALER"
    if not reply["ok"]:
        raise RuntimeError(f"{reply['error']['code']}: {reply['error']['message']}")
    return reply["result"]


print("ping:", call("ping"))
print("counter.increment ->", call("send", to="counter", selector="increment"))

GREET = """use batos_sdk::prelude::*;

/// lobby.greet: answer a greeting for args[0].
pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {
    let who = args.first().and_then(|v| v.as_str()).unwrap_or("world");
    Ok(json!(format!("hello, {who}")))
}
"""
installed = call("install", to="lobby", selector="greet", source=GREET)
print(f"installed lobby.greet v{installed['version']} in tx {installed['tx']}")
print("lobby.greet ->", call("send", to="lobby", selector="greet", args=["batos"]))

method = call("method", to="lobby", selector="greet")
print("imports:", [i["name"] for i in method["imports"]])
print("versions:", [v["version"] for v in method["versions"]])
print("last transaction:", json.dumps(call("history", limit=1)[-1], indent=1)[:400])
try:
    call("send", to="lobby", selector="fly")
except RuntimeError as e:
    print("as expected:", e)
