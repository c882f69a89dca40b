#!/usr/bin/env python3
"""The mind's benchmark: memory of import and load, and prompt and generation speed of the
embedded model in batos (its native backend, and candle's for reference) beside llama.cpp (the peer, via xllamacpp) on the same GGUF,
the same prompt, the same thread count, on this machine, one after the other.

    cargo build --release --bin batos
    python3 scripts/bench/mind.py [--batos target/release/batos] [--runs 3] [--threads 1 2]

Configurations:
- batos q4_1: the file as shipped, imported unchanged (the default), on the native backend;
- batos q8_0: the same file requantized at import (`batos mind import --quantize q8_0`), native;
- batos q4_1 / q8_0 (candle): the same two images on candle's quantized Llama (`--backend candle`);
- llama.cpp q4_1: the file as shipped (scripts/bench/llamacpp.py).

Every run is greedy, with the ChatML prompt given raw (the same 25 tokens in both engines) and
`ignore_eos`, so each engine generates exactly --max-tokens. batos's figures are the medians of
--runs fresh processes (each loads the model from the image, then generates); llama.cpp's are
the medians of its own timings after a warm-up. Peak RSS is /usr/bin/time's, of the whole
process; the baseline is `batos mind info` on the same image.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
                     "batos", "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batos", default="target/release/batos")
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    model_mib = os.path.getsize(args.model) / (1 << 20)
    prompt = CHATML.format(prompt=PROMPT)

    with tempfile.TemporaryDirectory() as tmp:
        images, memory = {}, []
        for quant in ["q4_1", "q8_0"]:
            image = os.path.join(tmp, f"{quant}.db")
            base = [args.batos, "--image", image, "--durability", "normal"]
            subprocess.run([*base, "init", "--mind", "none"], check=True, capture_output=True)
            extra = [] if quant == "q4_1" else ["--quantize", "q8_0"]
            _, import_rss = timed([*base, "mind", "import", args.model, *extra])
            _, baseline = timed([*base, "mind", "info"])
            info = json.loads(subprocess.run([*base, "--json", "mind", "info"], check=True,
                                             capture_output=True, text=True).stdout)
            images[quant] = base
            memory.append((quant, info["size"] / (1 << 20), baseline, import_rss))

        rows, outputs = [], {}
        for threads in args.threads:
            env = {"BATOS_MIND_THREADS": str(threads)}
            for backend in ["native", "candle"]:
                for quant, base in images.items():
                    results, load_rss = [], 0.0
                    for _ in range(args.runs):
                        out, rss = timed([*base, "--json", "mind", "generate", "--raw", prompt,
                                          "--max-tokens", str(args.max_tokens), "--ignore-eos",
                                          "--backend", backend], env)
                        results.append(json.loads(out))
                        load_rss = max(load_rss, rss)
                    label = f"batos {quant}" + ("" if backend == "native" else " (candle)")
                    rows.append((label, threads,
                                 statistics.median(r["prompt_tokens_per_s"] for r in results),
                                 statistics.median(r["tokens_per_s"] for r in results), load_rss))
                    outputs[(label, threads)] = results[-1]
            peer = json.loads(subprocess.run(
                [sys.executable, os.path.join(HERE, "llamacpp.py"), "--model", args.model, "--threads",
                 str(threads), "--runs", str(args.runs), "--max-tokens", str(args.max_tokens), "--json"],
                check=True, capture_output=True, text=True).stdout)
            rows.append(("llama.cpp q4_1", threads, peer["prompt_tokens_per_s"],
                         peer["generation_tokens_per_s"], None))
            outputs[("llama.cpp", threads)] = {"ids": peer["generated_token_ids"], "text": peer["text"],
                                               "version": peer["xllamacpp_version"]}

    print(f"model: {os.path.basename(args.model)} ({model_mib:.1f} MiB); prompt: {PROMPT!r} "
          f"(ChatML, raw); greedy; {args.max_tokens} tokens; median of {args.runs} runs\n")
    print("| import | stored | process baseline | peak RSS of import | above baseline |")
    print("| --- | --- | --- | --- | --- |")
    for quant, stored, baseline, rss in memory:
        print(f"| {quant} | {stored:.1f} MiB | {baseline:.1f} MiB | {rss:.1f} MiB | {rss - baseline:.1f} MiB |")
    print()
    print("| engine | threads | prompt tokens/s | generation tokens/s | vs llama.cpp (generation) | peak RSS (load + generate) |")
    print("| --- | --- | --- | --- | --- | --- |")
    peer_speed = {t: g for (name, t, _, g, _) in rows if name.startswith("llama.cpp")}
    for name, threads, p, g, rss in rows:
        ratio = f"{g / peer_speed[threads]:.2f}x"
        print(f"| {name} | {threads} | {p:.1f} | {g:.1f} | {ratio} | {'-' if rss is None else f'{rss:.1f} MiB'} |")
    print()
    t = args.threads[0]
    peer_ids = outputs[("llama.cpp", t)]["ids"]
    print(f"greedy output, {t} thread(s) (llama.cpp via xllamacpp {outputs[('llama.cpp', t)]['version']}):")
    labels = ["batos q4_1", "batos q8_0", "batos q4_1 (candle)", "batos q8_0 (candle)"]
    for key, label in [*(((l, t), l) for l in labels), (("llama.cpp", t), "llama.cpp q4_1")]:
        out = outputs[key]
        same = common_prefix(out["ids"], peer_ids)
        same_q4 = common_prefix(out["ids"], outputs[("batos q4_1", t)]["ids"])
        text = out["text"][:90].replace("\n", "\\n")
        print(f"- {label}: first {same} tokens as llama.cpp, first {same_q4} as batos q4_1: {text!r}")


if __name__ == "__main__":
    main()
