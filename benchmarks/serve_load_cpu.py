"""`camelid serve` under load on this CPU: continuous batching against the same requests sent one at a time.

Starts `camelid serve` (the embedded SmolLM2 Q4_1 GGUF, on the int4 kernels) on a free port, pinned with
`taskset` to --cores (the clients run on the same cores), and sends 16 clients x 8 streamed greedy
completions of at most 64 tokens:

- one at a time: each of the 128 requests alone, in turn (the baseline, and each prompt's reference output);
- 16 concurrent clients, each sending its 8 requests back to back.

Prints aggregate tokens/s of both and their ratio, p50/p99 latency and time to the first token, the count of
5xx answers and of responses that differ from the request's output alone. Then 64 clients at once against a
server whose queue holds 32: the excess gets 429s, every client gets an answer, and the server still answers
afterwards. One run; results to benchmarks/results/serve_load_cpu_DATE.json.

    PYTHONPATH=. python benchmarks/serve_load_cpu.py [--cores 0,1]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

TOPICS = ["a lighthouse", "the moon", "a small river", "an old library", "a robot", "the desert", "a city at night",
          "a mountain village", "the ocean", "a garden", "a train journey", "winter", "a cat", "the first computer",
          "a violin", "a market"]  # fmt: skip
PROMPTS = [f"Here is a short story about {t}, part {k + 1}:" for t in TOPICS for k in range(8)]
MAX_TOKENS = 64


def start(cores: str, *options: str) -> tuple[subprocess.Popen, str]:
    cmd = ["taskset", "-c", cores, sys.executable, "-m", "camelid", "serve", "--port", "0", "--device", "cpu",
           *options]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("serving"):
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return proc, line.split(" on ")[-1].strip()


def complete(base: str, prompt: str) -> dict:
    """One streamed greedy completion: its text, tokens, status, latency and time to the first text."""
    body = {"prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    req = urllib.request.Request(base + "/completions", json.dumps(body).encode(), {"Content-Type": "application/json"})
    t0 = time.perf_counter()
    text, first, tokens = "", None, 0
    try:
        with urllib.request.urlopen(req, timeout=900) as r:
            for line in r:
                if not line.startswith(b"data: {"):
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    return {"status": 500, "error": event["error"]["message"]}
                if event.get("usage"):
                    tokens = event["usage"]["completion_tokens"]
                for c in event["choices"]:
                    if c["text"] and first is None:
                        first = time.perf_counter() - t0
                    text += c["text"]
    except urllib.error.HTTPError as e:
        return {"status": e.code, "error": json.loads(e.read())["error"]["message"]}
    return {"status": 200, "text": text, "tokens": tokens, "latency": time.perf_counter() - t0, "ttft": first}


def clients(base: str, groups: list[list[str]]) -> tuple[list[list[dict]], float]:
    """Each group's prompts sent in turn by one thread, all threads at once; the wall time of the whole."""
    out: list[list[dict]] = [[] for _ in groups]

    def client(i: int) -> None:
        for p in groups[i]:
            out[i].append(complete(base, p))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(groups))]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out, time.perf_counter() - t0


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cores", default="0,1")
    a = ap.parse_args()
    proc, base = start(a.cores, "--slots", "16", "--max-queue", "64")
    try:
        complete(base, "Warm-up:")
        alone, alone_s = clients(base, [PROMPTS])
        (alone,) = alone
        groups = [PROMPTS[i::16] for i in range(16)]  # client i: 8 prompts
        together, together_s = clients(base, groups)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    ref = dict(zip(PROMPTS, alone))
    flat = [(p, r) for g, rs in zip(groups, together) for p, r in zip(g, rs)]
    ok = [r for _, r in flat if r["status"] == 200]
    differ = sum(r.get("text") != ref[p].get("text") for p, r in flat)
    tok_alone = sum(r.get("tokens", 0) for r in alone)
    tok_together = sum(r["tokens"] for r in ok)

    proc, base = start(a.cores, "--slots", "16", "--max-queue", "32")
    try:
        complete(base, "Warm-up:")
        burst, burst_s = clients(base, [[p] for p in PROMPTS[:64]])
        after = complete(base, PROMPTS[0])
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    statuses = [r[0]["status"] for r in burst]

    res = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{os.cpu_count()} CPUs, server and clients pinned to cores {a.cores}",
        "model": "smollm2-135m (the embedded Q4_1 GGUF on the int4 kernels), greedy, max_tokens 64, streamed",
        "one_at_a_time": {"requests": len(alone), "tokens": tok_alone, "wall_s": alone_s,
                          "tokens_per_s": tok_alone / alone_s,
                          "latency_p50_s": pct([r["latency"] for r in alone], 0.5),
                          "ttft_p50_s": pct([r["ttft"] for r in alone if r["ttft"]], 0.5)},
        "16_clients_x_8": {"requests": len(flat), "tokens": tok_together, "wall_s": together_s,
                           "tokens_per_s": tok_together / together_s,
                           "latency_p50_s": pct([r["latency"] for r in ok], 0.5),
                           "latency_p99_s": pct([r["latency"] for r in ok], 0.99),
                           "ttft_p50_s": pct([r["ttft"] for r in ok if r["ttft"]], 0.5),
                           "ttft_p99_s": pct([r["ttft"] for r in ok if r["ttft"]], 0.99),
                           "5xx": sum(r["status"] >= 500 for _, r in flat),
                           "differ_from_alone": differ},
        "64_clients_queue_32": {"200": statuses.count(200), "429": statuses.count(429),
                                "5xx": sum(s >= 500 for s in statuses), "wall_s": burst_s,
                                "next_request_status": after["status"]},
    }  # fmt: skip
    res["speedup"] = res["16_clients_x_8"]["tokens_per_s"] / res["one_at_a_time"]["tokens_per_s"]
    one, many, b = res["one_at_a_time"], res["16_clients_x_8"], res["64_clients_queue_32"]
    print("| run | requests | tokens | wall s | tokens/s | p50 latency s | p99 latency s | p50 TTFT s | p99 TTFT s |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| one at a time | {one['requests']} | {one['tokens']} | {one['wall_s']:.1f} | {one['tokens_per_s']:.1f} "
          f"| {one['latency_p50_s']:.2f} | | {one['ttft_p50_s']:.3f} | |")  # fmt: skip
    print(f"| 16 clients x 8 | {many['requests']} | {many['tokens']} | {many['wall_s']:.1f} | "
          f"{many['tokens_per_s']:.1f} | {many['latency_p50_s']:.2f} | {many['latency_p99_s']:.2f} | "
          f"{many['ttft_p50_s']:.3f} | {many['ttft_p99_s']:.3f} |")  # fmt: skip
    print(f"aggregate speed-up {res['speedup']:.2f}x; 5xx: {many['5xx']}; responses differing from alone: {differ}")
    print(f"64 clients, queue 32: {b['200']} x 200, {b['429']} x 429, {b['5xx']} x 5xx in {b['wall_s']:.1f} s; "
          f"the next request: {b['next_request_status']}")  # fmt: skip
    out = Path(os.environ.get("OUT", "benchmarks/results")) / f"serve_load_cpu_{res['date']}.json"
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
