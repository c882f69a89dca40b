#!/usr/bin/env python3
"""The mind's benchmark: batos's embedded model (its native backend, and candle's for reference)
beside llama.cpp (the peer, via xllamacpp) on the same GGUF, the same prompt ids, greedy, the same
thread counts, on this machine, one after the other in one run; then import memory, the share of
memory bandwidth each engine reaches, and what the prompt prefix cache saves per turn.

    scripts/fetch-model qwen2.5-coder-1.5b
    cargo build --bin batos
    python3 scripts/bench/mind.py [--model qwen2.5-coder-1.5b] [--runs 3] [--threads 1 2]

- batos native / candle: the file as shipped, imported into an image (`batos mind import NAME`),
  `batos mind generate --raw` with the ChatML prompt (the same ids in both engines), `ignore_eos`
  so each generates exactly --max-tokens; medians of --runs fresh processes (candle: one run);
- llama.cpp: the same file and prompt (scripts/bench/llamacpp.py; its own timings, medians after a
  warm-up);
- bandwidth: one core's read bandwidth measured in the same run (the `bandwidth` example of
  batos-kernels); "share" is bytes of weights read per token × tokens/s ÷ that bandwidth;
- prefix cache: a host serving the image answers two `generate` requests whose system message and
  first part (the WIT contract, as a writer's prompt starts with the contract) are the same; the
  second starts from the first's saved state.

Peak RSS is /usr/bin/time's, of the whole process; the baseline is `batos mind info` on the image.
The kernels are compiled optimised in debug builds too (Cargo.toml), so the debug binary is what
`scripts/run` serves.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PROMPT = "Write a Rust function that returns the sum of a slice of i64."
CHATML = "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"


def timed(cmd, env=None):
    """Runs cmd under /usr/bin/time; answers (stdout, peak RSS in MiB)."""
    out = subprocess.run(["/usr/bin/time", "-f", "RSS_KB=%M", *cmd], capture_output=True, text=True,
                         env={**os.environ, **(env or {})})
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.stderr}")
    rss = [int(line.split("=")[1]) for line in out.stderr.splitlines() if line.startswith("RSS_KB=")]
    return out.stdout, rss[-1] / 1024


def common_prefix(a, b):
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def weight_bytes_per_token(path):
    """Bytes of every tensor but the token embeddings (one row of those is read per token)."""
    try:
        from gguf import GGUFReader
    except ImportError:
        return None
    reader = GGUFReader(path)
    return sum(int(t.n_bytes) for t in reader.tensors if t.name != "token_embd.weight")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prefix_cache(base, env):
    """Two generate requests through a host, sharing a long start: what the second saves."""
    import zmq
    with open(os.path.join(ROOT, "wit", "batos.wit")) as f:
        contract = f.read()
    system = "You write batos methods in Rust. Answer with one ```rust code block and nothing else."
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    host = subprocess.Popen([*base, "serve", "--bind", endpoint, "--mind", "image"], env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.connect(endpoint)
        deadline = time.time() + 120
        while True:
            sock.send_json({"id": 0, "op": "ping"})
            if sock.poll(1000):
                sock.recv_json()
                break
            if time.time() > deadline or host.poll() is not None:
                sys.exit(f"the host did not start: {host.stderr.read() if host.poll() is not None else ''}")
        with open(base[base.index("--image") + 1] + ".token") as f:
            token = f.read().strip()
        turns = []
        for i, mission in enumerate(["Write `double`: multiply the slot count by 2, store it and answer it.",
                                     "Write `push`: append args[0] to the list in slot items and answer its length."]):
            sock.send_json({"id": i + 1, "op": "generate", "token": token, "system": system, "max_tokens": 8,
                            "prompt": f"The contract:\n{contract}\n\n{mission}"})
            while True:  # skip the answers to the pings sent while the host was starting
                if not sock.poll(600_000):
                    sys.exit("no answer to generate")
                reply = sock.recv_json()
                if reply.get("id") == i + 1:
                    break
            if not reply.get("ok"):
                sys.exit(f"generate failed: {reply}")
            turns.append(reply["result"])
        return turns
    finally:
        host.terminate()
        host.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    ap.add_argument("--batos", default=os.path.join(target, "debug", "batos"))
    ap.add_argument("--model", default="qwen2.5-coder-1.5b", help="a known model's name or a GGUF file")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--no-candle", action="store_true", help="skip candle (it holds the model in f32 embeddings: slow)")
    args = ap.parse_args()
    path = args.model
    if not os.path.isfile(path):
        path = subprocess.run([os.path.join(ROOT, "scripts", "fetch-model"), args.model], check=True,
                              capture_output=True, text=True).stdout.strip()
    model_mib = os.path.getsize(path) / (1 << 20)
    per_token = weight_bytes_per_token(path)
    prompt = CHATML.format(prompt=PROMPT)
    bandwidth = float(subprocess.run(
        ["cargo", "run", "--release", "--quiet", "-p", "batos-kernels", "--example", "bandwidth"],
        cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip())

    with tempfile.TemporaryDirectory() as tmp:
        image = os.path.join(tmp, "image.db")
        base = [args.batos, "--image", image, "--durability", "normal"]
        subprocess.run([*base, "init", "--mind", "none"], check=True, capture_output=True)
        _, import_rss = timed([*base, "mind", "import", args.model])
        _, baseline = timed([*base, "mind", "info"])
        info = json.loads(subprocess.run([*base, "--json", "mind", "info"], check=True,
                                         capture_output=True, text=True).stdout)

        rows, outputs = [], {}
        for threads in args.threads:
            env = {"BATOS_MIND_THREADS": str(threads)}
            for backend in ["native"] + ([] if args.no_candle else ["candle"]):
                results, load_rss = [], 0.0
                for _ in range(args.runs if backend == "native" else 1):
                    out, rss = timed([*base, "--json", "mind", "generate", "--raw", prompt,
                                      "--max-tokens", str(args.max_tokens), "--ignore-eos",
                                      "--backend", backend], env)
                    results.append(json.loads(out))
                    load_rss = max(load_rss, rss)
                label = f"batos ({backend})"
                rows.append((label, threads,
                             statistics.median(r["prompt_tokens_per_s"] for r in results),
                             statistics.median(r["tokens_per_s"] for r in results), load_rss))
                outputs[(label, threads)] = results[-1]
            peer = json.loads(subprocess.run(
                [sys.executable, os.path.join(HERE, "llamacpp.py"), "--model", path, "--threads",
                 str(threads), "--runs", str(args.runs), "--max-tokens", str(args.max_tokens), "--json"],
                check=True, capture_output=True, text=True).stdout)
            rows.append(("llama.cpp", threads, peer["prompt_tokens_per_s"],
                         peer["generation_tokens_per_s"], None))
            outputs[("llama.cpp", threads)] = {"ids": peer["generated_token_ids"], "text": peer["text"],
                                               "version": peer["xllamacpp_version"],
                                               "prompt_tokens": peer["prompt_tokens"]}
        turns = prefix_cache(base, {"BATOS_MIND_THREADS": str(args.threads[0])})

    print(f"model: {os.path.basename(path)} ({model_mib:.0f} MiB; {info['architecture']}, "
          f"{info['parameters'] / 1e9:.2f} B parameters, {info.get('file_type') or info['quantization']}); "
          f"prompt {PROMPT!r} (ChatML, raw, {outputs[('llama.cpp', args.threads[0])]['prompt_tokens']} tokens); "
          f"greedy; {args.max_tokens} tokens; medians of {args.runs} runs; one core reads {bandwidth:.1f} GB/s\n")
    print("| import | stored | process baseline | peak RSS of import | above baseline |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| {info.get('file_type') or info['quantization']} | {info['size'] / (1 << 20):.0f} MiB | {baseline:.1f} MiB "
          f"| {import_rss:.1f} MiB | {import_rss - baseline:.1f} MiB |")
    print()
    print("| engine | threads | prompt tokens/s | vs llama.cpp | generation tokens/s | vs llama.cpp | share of one core's bandwidth | peak RSS (load + generate) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    peer = {t: (p, g) for (name, t, p, g, _) in rows if name == "llama.cpp"}
    for name, threads, p, g, rss in rows:
        share = "-" if per_token is None else f"{per_token * g / (bandwidth * 1e9):.0%}"
        print(f"| {name} | {threads} | {p:.1f} | {p / peer[threads][0]:.2f}x | {g:.1f} | {g / peer[threads][1]:.2f}x "
              f"| {share} | {'-' if rss is None else f'{rss:.0f} MiB'} |")
    print()
    t = args.threads[0]
    peer_ids = outputs[("llama.cpp", t)]["ids"]
    print(f"greedy output, {t} thread(s) (llama.cpp via xllamacpp {outputs[('llama.cpp', t)]['version']}):")
    for (label, threads), out in outputs.items():
        if threads != t:
            continue
        same = common_prefix(out["ids"], peer_ids)
        native = common_prefix(out["ids"], outputs[("batos (native)", t)]["ids"])
        text = out["text"][:80].replace("\n", "\\n")
        print(f"- {label}: first {same} tokens as llama.cpp's, first {native} as batos native's: {text!r}")
    print()
    first, second = turns
    saved = first["prompt_tokens"] / first["prompt_tokens_per_s"] - \
        (second["prompt_tokens"] - second["cached_prompt_tokens"]) / second["prompt_tokens_per_s"]
    print(f"prefix cache ({t} thread(s)): turn 1 read {first['prompt_tokens']} prompt tokens "
          f"({first['cached_prompt_tokens']} from the cache) in {first['prompt_tokens'] / first['prompt_tokens_per_s']:.1f} s; "
          f"turn 2 read {second['prompt_tokens'] - second['cached_prompt_tokens']} of {second['prompt_tokens']} "
          f"({second['cached_prompt_tokens']} from the cache) in "
          f"{(second['prompt_tokens'] - second['cached_prompt_tokens']) / second['prompt_tokens_per_s']:.1f} s: "
          f"about {saved:.1f} s saved per turn")


if __name__ == "__main__":
    main()
