#!/usr/bin/env python3
"""Round trips per second and p50/p99 latency of `batos serve` against a plain pyzmq ROUTER echo
server, with 1 and 16 DEALER clients (each its own process), for `ping` and for `get`.

    python3 scripts/bench/host.py [path/to/batos] [--seconds 2]

Both servers run on this machine, one after the other, on loopback TCP, and face the same clients.
"""
import argparse
import multiprocessing as mp
import os
import subprocess
import tempfile
import time

import zmq

REQUESTS = {
    "ping": b'{"id": 1, "op": "ping"}',
    "get": b'{"id": 1, "op": "get", "to": "counter", "slot": "count"}',
}


def echo_server(endpoint, ready):
    socket = zmq.Context().socket(zmq.ROUTER)
    socket.bind(endpoint)
    ready.set()
    while True:
        frames = socket.recv_multipart()
        socket.send_multipart(frames)


def client(endpoint, payload, seconds, out):
    socket = zmq.Context().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(endpoint)
    socket.send(payload)  # warm the connection
    socket.recv()
    latencies = []
    end = time.perf_counter() + seconds
    while True:
        start = time.perf_counter()
        if start > end:
            break
        socket.send(payload)
        socket.recv()
        latencies.append(time.perf_counter() - start)
    out.put(latencies)


def measure(endpoint, payload, clients, seconds):
    out = mp.Queue()
    procs = [mp.Process(target=client, args=(endpoint, payload, seconds, out)) for _ in range(clients)]
    for p in procs:
        p.start()
    latencies = []
    for _ in procs:
        latencies.extend(out.get())
    for p in procs:
        p.join()
    latencies.sort()
    n = len(latencies)
    return n / seconds, latencies[n // 2] * 1e6, latencies[min(n - 1, int(n * 0.99))] * 1e6


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("batos", nargs="?", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "batos"))
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()

    results = {}
    ready = mp.Event()
    echo = mp.Process(target=echo_server, args=("tcp://127.0.0.1:5801", ready), daemon=True)
    echo.start()
    ready.wait()
    for op, payload in REQUESTS.items():
        for clients in (1, 16):
            results[("echo", op, clients)] = measure("tcp://127.0.0.1:5801", payload, clients, args.seconds)
    echo.terminate()

    with tempfile.TemporaryDirectory() as directory:
        host = subprocess.Popen([args.batos, "--image", f"{directory}/image.db", "serve", "--mind", "none", "--bind", "tcp://127.0.0.1:5802"],
                                stderr=subprocess.PIPE, text=True)
        for line in host.stderr:
            if "serving" in line:
                break
        with open(f"{directory}/image.db.token") as f:
            token = f.read().strip()
        try:
            for op, payload in REQUESTS.items():
                # The same request, with the image's token (ping needs none, but carries it alike).
                signed = payload[:-1] + b', "token": "' + token.encode() + b'"}'
                for clients in (1, 16):
                    results[("batos", op, clients)] = measure("tcp://127.0.0.1:5802", signed, clients, args.seconds)
        finally:
            host.terminate()
            host.wait()

    print("| op | clients | batos round trips/s | p50 / p99 (us) | echo round trips/s | p50 / p99 (us) | batos / echo |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for op in REQUESTS:
        for clients in (1, 16):
            b, e = results[("batos", op, clients)], results[("echo", op, clients)]
            print(f"| {op} | {clients} | {b[0]:,.0f} | {b[1]:,.0f} / {b[2]:,.0f} | {e[0]:,.0f} | {e[1]:,.0f} / {e[2]:,.0f} | {b[0] / e[0]:.2f}x |")


if __name__ == "__main__":
    main()
