"""`camelid serve` against camelid in-process on this CPU: the HTTP server's cost per request.

Starts `camelid serve` on a free port with the embedded SmolLM2 and times, for the same greedy 128-token
completion: camelid's `generate` in this process, the server without streaming, and the server streaming
(time to the first token and to the last). Then a batch of 16 scored prompts (`echo` + `logprobs`, the
request lm-eval's `local-completions` sends) against `Evaluator`-free direct scoring. Median of 3 runs each.

    PYTHONPATH=. python benchmarks/serve_cpu.py
"""

from __future__ import annotations

import datetime
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import torch

from camelid.formats import load
from camelid.generate import SamplingParams, generate, score_ids

PROMPT = "The history of the Roman Empire begins"
NEW = 128


def post(url: str, body: dict, stream: bool = False):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as r:
        if not stream:
            return time.perf_counter() - t0, None, json.loads(r.read())
        first = None
        for line in r:
            if line.startswith(b"data: {") and first is None and b'"text": ""' not in line:
                first = time.perf_counter() - t0
        return time.perf_counter() - t0, first, None


def median(f, n=3):
    return statistics.median(f() for _ in range(n))


def main() -> int:
    m = load("smollm2-135m", device="cpu")
    params = SamplingParams(temperature=0)
    generate(m.model, m.tokenizer, [PROMPT], 8, params)  # warm-up
    direct = median(lambda: _timed(lambda: generate(m.model, m.tokenizer, [PROMPT], NEW, params)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "camelid", "serve", "--port", "0", "--device", "cpu"], stdout=subprocess.PIPE, text=True
    )
    try:
        base = proc.stdout.readline().split(" on ")[-1].strip()
        body = {"prompt": PROMPT, "max_tokens": NEW, "temperature": 0}
        post(base + "/completions", {**body, "max_tokens": 8})  # warm-up
        _, _, out = post(base + "/completions", body)
        assert out["usage"]["completion_tokens"] == NEW
        served = median(lambda: post(base + "/completions", body)[0])
        runs = [post(base + "/completions", {**body, "stream": True}, stream=True) for _ in range(3)]
        stream_total = statistics.median(r[0] for r in runs)
        first = statistics.median(r[1] for r in runs)
        ids = [
            m.tokenizer.encode(f"Question {i}: what is {i} + {i}? Answer: {2 * i}", bos=False) * 4 for i in range(16)
        ]
        scored = median(
            lambda: post(base + "/completions", {"prompt": ids, "max_tokens": 1, "echo": True, "logprobs": 1})[0]
        )
        direct_scores = median(lambda: _timed(lambda: [score_ids(m.model, x) for x in ids]))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    res = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{os.cpu_count()} CPUs, torch {torch.__version__}",
        "model": "smollm2-135m (fp32)",
        "greedy_128_tokens_s": {"in_process": direct, "server": served, "server_streaming": stream_total},
        "server_time_to_first_token_s": first,
        "score_16_prompts_s": {"in_process_score_ids": direct_scores, "server_echo_logprobs": scored},
    }
    print(f"greedy {NEW} tokens: in-process {direct:.2f} s ({NEW / direct:.1f} tok/s), server {served:.2f} s "
          f"({NEW / served:.1f} tok/s, {served / direct:.2f}x), streaming {stream_total:.2f} s, "
          f"first token {first:.3f} s")  # fmt: skip
    print(f"16 prompts scored ({sum(map(len, ids))} tokens): in-process one by one {direct_scores:.2f} s, "
          f"server (batched, + top-1 and token texts) {scored:.2f} s")  # fmt: skip
    out = Path(os.environ.get("OUT", "benchmarks/results")) / f"serve_cpu_{res['date']}.json"
    out.write_text(json.dumps(res, indent=1))
    print(f"wrote {out}")
    return 0


def _timed(f) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


if __name__ == "__main__":
    raise SystemExit(main())
