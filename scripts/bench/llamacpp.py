#!/usr/bin/env python3
"""Prompt-processing and generation speed of llama.cpp (the peer) on a GGUF file, through the
PyPI package `xllamacpp`, which embeds llama.cpp's own server (prebuilt CPU wheels).

    python3 -m pip install xllamacpp==2026.10.11549
    python3 scripts/bench/llamacpp.py [--model PATH] [--threads 1] [--max-tokens 128] [--runs 3] [--json]

The prompt is wrapped in the ChatML template by hand and sent as raw text to llama.cpp's native
`/completion` endpoint on the embedded server (loopback HTTP), which tokenizes it with special
tokens parsed (so `<|im_start|>` is one token) and adds BOS only if the GGUF asks for it
(SmolLM2 does not, so nothing is doubled). Sampling is greedy (temperature 0, top_k 1),
`ignore_eos` keeps it going to exactly `--max-tokens`, and `cache_prompt` is off so every run
processes the whole prompt. The same `--threads` is used for prompt processing and generation.

One warm-up run, then `--runs` measured runs; the figures are medians over those runs. Timings are
llama.cpp's own (`timings.prompt_per_second` and `timings.predicted_per_second` in the response,
measured inside the server around its decode calls), not wall clock, so HTTP/JSON overhead is
excluded. The text and token ids are those of the last run.
"""
import argparse
import json
import os
import statistics
import sys
import urllib.request

import xllamacpp

DEFAULT_MODEL = os.path.expanduser("~/.cache/batos/models/SmolLM2-135M-Instruct.Q4_1.gguf")
DEFAULT_PROMPT = "Write a Rust function that returns the sum of a slice of i64."
CHATML = "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prompt", default=DEFAULT_PROMPT)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--verbose", action="store_true", help="keep llama.cpp's info logs on stderr")
    args = ap.parse_args()

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.n_ctx = 4096
    params.n_parallel = 1
    params.cpuparams.n_threads = args.threads  # generation
    params.cpuparams_batch.n_threads = args.threads  # prompt processing
    params.verbosity = 3 if args.verbose else 1  # 1: errors only
    server = xllamacpp.Server(params)
    base = server.listening_address

    def post(path, body):
        request = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request) as response:
            return json.load(response)

    text = CHATML.format(prompt=args.prompt)
    prompt_ids = post("/tokenize", {"content": text, "add_special": True, "parse_special": True})["tokens"]
    request = {"prompt": text, "n_predict": args.max_tokens, "temperature": 0, "top_k": 1,
               "ignore_eos": True, "cache_prompt": False, "return_tokens": True}
    post("/completion", request)  # warm-up
    results = [post("/completion", request) for _ in range(args.runs)]
    del server

    last = results[-1]
    report = {
        "engine": "llama.cpp",
        "xllamacpp_version": xllamacpp.__version__,
        "llama_cpp_build": xllamacpp.BUILD_INFO,
        "cpu_features": xllamacpp.get_system_info().strip(),
        "model": args.model,
        "threads": args.threads,
        "runs": args.runs,
        "timing_source": "llama.cpp timings (prompt_per_second, predicted_per_second)",
        "prompt_tokens": last["timings"]["prompt_n"],
        "prompt_tokens_per_s": statistics.median(r["timings"]["prompt_per_second"] for r in results),
        "generated_tokens": last["timings"]["predicted_n"],
        "generation_tokens_per_s": statistics.median(r["timings"]["predicted_per_second"] for r in results),
        "stop_type": last["stop_type"],
        "prompt_token_ids": prompt_ids,
        "generated_token_ids": last["tokens"],
        "text": last["content"],
    }
    if args.json:
        json.dump(report, sys.stdout)
        print()
        return
    print(f"llama.cpp via xllamacpp {report['xllamacpp_version']} ({report['cpu_features']})")
    print(f"model {args.model}, {args.threads} thread(s), median of {args.runs} run(s) after 1 warm-up; "
          f"timings from llama.cpp")
    print("| phase | tokens | tokens/s |")
    print("| --- | --- | --- |")
    print(f"| prompt processing | {report['prompt_tokens']} | {report['prompt_tokens_per_s']:,.1f} |")
    print(f"| generation | {report['generated_tokens']} | {report['generation_tokens_per_s']:,.1f} |")
    print(f"prompt ids: {prompt_ids}")
    print(f"generated ids: {last['tokens']}")
    print("--- generated text (last run) ---")
    print(report["text"])


if __name__ == "__main__":
    main()
