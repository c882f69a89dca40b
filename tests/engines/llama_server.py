#!/usr/bin/env python3
"""llama.cpp's server (the xllamacpp wheel) on loopback, for the external-mind tests and benchmarks.

    tests/engines/llama_server.py PORT MODEL.gguf [THREADS]

Serves the OpenAI-compatible API at http://127.0.0.1:PORT/v1 until it is killed; prints
"ready" on stdout once /v1/models answers.
"""
import signal
import sys
import time
import urllib.request

import xllamacpp


def main():
    port, model = int(sys.argv[1]), sys.argv[2]
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    params = xllamacpp.CommonParams()
    params.model.path = model
    params.n_ctx = 4096
    params.cpuparams.n_threads = threads
    params.port = port
    params.hostnames = ["127.0.0.1"] if isinstance(params.hostnames, list) else "127.0.0.1"
    server = xllamacpp.Server(params)
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1).read()
            break
        except OSError:
            time.sleep(0.1)
    print("ready", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            time.sleep(3600)
    finally:
        del server


if __name__ == "__main__":
    main()
