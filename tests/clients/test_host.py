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


def curve():
    """Beyond loopback only with CURVE: pyzmq clients on the allow-list connect, others do not."""
    with tempfile.TemporaryDirectory() as directory:
        image = f"{directory}/image.db"
        port = free_port()
        refused = subprocess.run([BATOS, "--image", image, "serve", "--mind", "none", "--bind", f"tcp://0.0.0.0:{port}"],
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0 and "CURVE" in refused.stderr, refused.stderr
        host = subprocess.Popen(
            [BATOS, "--image", image, "--durability", "normal", "serve", "--mind", "none", "--curve",
             "--bind", f"tcp://0.0.0.0:{port}"], stderr=subprocess.PIPE, text=True)
        try:
            for line in host.stderr:
                if "serving" in line:
                    break
            threading.Thread(target=lambda: host.stderr.read(), daemon=True).start()
            with open(f"{image}.curve/server.public") as f:
                server_key = f.read().strip().encode()
            with open(f"{image}.token") as f:
                token = f.read().strip()
            public, secret = zmq.curve_keypair()
            with open(f"{image}.curve/clients", "a") as f:
                f.write(public.decode() + "\n")

            def curve_socket(public, secret):
                s = zmq.Context.instance().socket(zmq.DEALER)
                s.setsockopt(zmq.LINGER, 0)
                s.setsockopt(zmq.RCVTIMEO, 3000)
                s.curve_serverkey, s.curve_publickey, s.curve_secretkey = server_key, public, secret
                s.connect(f"tcp://127.0.0.1:{port}")
                return s

            allowed = curve_socket(public, secret)
            assert ask(allowed, {"id": 1, "op": "ping", "token": None})["ok"]
            reply = ask(allowed, {"op": "send", "to": "counter", "selector": "increment", "token": token})
            assert reply["result"] == 1, reply
            stranger = curve_socket(*zmq.curve_keypair())
            try:
                ask(stranger, {"op": "ping", "token": None})
                raise AssertionError("a key off the allow-list was answered")
            except zmq.Again:
                pass
            plain = socket(zmq.DEALER, f"tcp://127.0.0.1:{port}")
            plain.setsockopt(zmq.RCVTIMEO, 3000)
            try:
                ask(plain, {"op": "ping", "token": None})
                raise AssertionError("a client without CURVE was answered")
            except zmq.Again:
                pass
            print("python clients over CURVE: ok")
        finally:
            host.kill()
            host.wait()


if __name__ == "__main__":
    main()
    curve()
