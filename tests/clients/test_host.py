#!/usr/bin/env python3
"""Drives a real `batos serve` over TCP with pyzmq clients, DEALER and REQ: ids, malformed input,
50 clients x 100 increments, a 2 MiB payload, SIGTERM. Run by scripts/test:

    python3 tests/clients/test_host.py path/to/batos
"""
import json
import os
import socket as socketlib
import subprocess
import sys
import tempfile
import threading

import zmq

BATOS = sys.argv[1]


def free_port():
    with socketlib.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(directory):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    host = subprocess.Popen(
        [BATOS, "--image", f"{directory}/image.db", "--durability", "normal", "serve", "--mind", "none", "--bind", endpoint],
        stderr=subprocess.PIPE, text=True)
    for line in host.stderr:
        if "serving" in line:
            break
    else:
        raise SystemExit("the host did not start")
    threading.Thread(target=lambda: host.stderr.read(), daemon=True).start()
    return host, endpoint


def socket(kind, endpoint):
    s = zmq.Context.instance().socket(kind)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, 30_000)
    s.connect(endpoint)
    return s


TOKEN = None


def ask(s, request):
    """One request with the image's token (unless it brings its own, or `token=None` is asked)."""
    request = dict(request)
    if "token" not in request:
        request["token"] = TOKEN
    elif request["token"] is None:
        del request["token"]
    s.send_json(request)
    return s.recv_json()


def main():
    with tempfile.TemporaryDirectory() as directory:
        host, endpoint = start(directory)
        global TOKEN
        with open(f"{directory}/image.db.token") as f:
            TOKEN = f.read().strip()
        try:
            dealer, req = socket(zmq.DEALER, endpoint), socket(zmq.REQ, endpoint)
            assert ask(dealer, {"id": "a", "op": "ping"})["id"] == "a"
            assert ask(req, {"id": "b", "op": "ping"})["id"] == "b"
            assert ask(req, {"op": "send", "to": "counter", "selector": "increment"})["result"] == 1
            # Without the image's token nothing but ping is answered, and nothing changes.
            for token in [None, "0" * 64]:
                reply = ask(dealer, {"op": "send", "to": "counter", "selector": "increment", "token": token})
                assert reply["error"]["code"] == "unauthorized", reply
            signed = json.dumps({"token": TOKEN})[1:-1]
            for payload, code in [(b"nope", "bad-request"), (b"[]", "bad-request"),
                                  (b'{"op": "fly", %s}' % signed.encode(), "unknown-op"),
                                  (b'{"op": "get", "to": "lobby", %s}' % signed.encode(), "bad-request")]:
                dealer.send(payload)
                reply = dealer.recv_json()
                assert reply["ok"] is False and reply["error"]["code"] == code, (payload, reply)

            def client():
                s = socket(zmq.DEALER, endpoint)
                for _ in range(100):
                    assert ask(s, {"op": "send", "to": "counter", "selector": "increment"})["ok"]

            threads = [threading.Thread(target=client) for _ in range(50)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            count = ask(dealer, {"op": "get", "to": "counter", "slot": "count"})["result"]
            assert count == 5001, count

            big = socket(zmq.DEALER, endpoint)
            big.send_json({"op": "set", "to": "lobby", "slot": "big", "value": "x" * (2 << 20), "token": TOKEN})
            assert ask(dealer, {"op": "ping"})["ok"], "others are served after an oversized message"
            host.terminate()
            assert host.wait(timeout=30) == 0, "SIGTERM exits 0"
            print("python clients: ok")
        finally:
            if host.poll() is None:
                host.kill()


if __name__ == "__main__":
    main()
