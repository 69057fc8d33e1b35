"""Batch-1 decode on one GPU: camelid's decoder (bf16, int8, int4) against `transformers`' generate.

The shapes of shared/bench/hf_baseline_gpu.py: the 1.26B (`1b`) and `llama-7b` architectures, random
weights in bf16, a 16-token prompt, 128 new tokens, greedy. Rows: camelid bf16 / int8 / int4 (weight-only, groups
of 32), each eager and with the decode step compiled with CUDA graphs (mode "reduce-overhead"); transformers
eager (dynamic cache) and with a static cache + compiled forward (the baseline's "decode static+compile" row,
which failed in shared/bench's run). Each row also gives the fraction of the
memory-bandwidth roofline (weight bytes read per token against the copy bandwidth measured first).
Each row runs in its own process with a time limit; results go to $OUT (default benchmarks/results/).

    PYTHONPATH=. python benchmarks/decode_gpu.py            # on a GPU machine
    PYTHONPATH=. python benchmarks/decode_gpu.py --smoke    # `debug` preset on the CPU: checks the script runs
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import benchrows
import torch

NEW = 128


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def copy_bandwidth() -> float:
    """Device copy bandwidth (bytes/s, read + write) on a 2 GiB buffer."""
    x = torch.empty(1024**3, device="cuda", dtype=torch.bfloat16).normal_()
    y = torch.empty_like(x)
    y.copy_(x)
    sync("cuda")
    t0 = time.perf_counter()
    for _ in range(10):
        y.copy_(x)
    sync("cuda")
    return 2 * x.numel() * 2 * 10 / (time.perf_counter() - t0)


def camelid_row(name: str, mode: str, device: str, quant: str = "none") -> dict:
    from camelid.generate import GREEDY, generate_ids
    from camelid.model import build_model, preset
    from camelid.transforms.quantize import quantize_model, quantized_bytes

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = build_model(preset(name), device="meta")
    model.to_empty(device=device)
    model.tie_weights()
    torch.manual_seed(0)
    with torch.no_grad():  # random weights made on the device (camelid's seeded CPU init is slow at 7B)
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0, 0.02)
    model = model.to(dtype).eval()
    if quant != "none":
        quantize_model(model, {"int8": 8, "int4": 4}[quant], 32)
    prompt = torch.randint(3, model.args.vocab_size, (16,), generator=torch.Generator().manual_seed(0)).tolist()
    compile_ = None if mode == "eager" else mode
    t0 = time.perf_counter()
    generate_ids(model, [prompt], NEW, GREEDY, compile=compile_)  # warm-up: compiles (same cache size as below)
    first = time.perf_counter() - t0
    rows, stats = generate_ids(model, [prompt], NEW, GREEDY, compile=compile_)
    sync(device)
    eager_rows, _ = generate_ids(model, [prompt], 16, GREEDY) if compile_ else (rows, None)
    return {
        "tok_s": stats.tokens_per_s,
        "first_call_s": first,
        "weight_GB": quantized_bytes(model) / 1e9,
        "same_first_16_tokens_as_eager": rows[0].ids[:16] == eager_rows[0].ids[:16],
    }


def hf_row(name: str, static: bool, device: str) -> dict:
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    m = benchrows.hf_llama(name, device, dtype).eval()
    ids = torch.randint(3, m.config.vocab_size, (1, 16), device=device)
    kw = dict(max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False)
    if static:
        m.generation_config.cache_implementation = "static"
        m.forward = torch.compile(m.forward, fullgraph=True)
    with torch.no_grad():
        t0 = time.perf_counter()
        m.generate(ids, **kw)
        sync(device)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = m.generate(ids, **kw)
        sync(device)
        dt = time.perf_counter() - t0
    return {
        "tok_s": (out.shape[1] - ids.shape[1]) / dt,
        "first_call_s": first,
        "weight_GB": sum(p.numel() * p.element_size() for p in m.parameters()) / 1e9,
    }


def child(spec: dict) -> dict:
    if spec["who"] == "camelid":
        return camelid_row(spec["name"], spec["mode"], spec["device"], spec.get("quant", "none"))
    return hf_row(spec["name"], spec["mode"] == "static-compile", spec["device"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="the `debug` preset on the CPU, to check the script")
    ap.add_argument("--budget", type=float, default=420, help="seconds for all rows; later rows are skipped")
    benchrows.add_child_args(ap)
    a = ap.parse_args()
    started = benchrows.start(a, child)
    if isinstance(started, int):
        return started
    device, res = started
    t_start = time.perf_counter()
    res["new_tokens"] = NEW
    if device == "cuda":
        res["copy_GBps"] = copy_bandwidth() / 1e9
    out = Path(os.environ.get("OUT", "benchmarks/results"))
    out.mkdir(parents=True, exist_ok=True)
    out_file = out / f"decode_gpu_{res['date']}{'_smoke' if a.smoke else ''}.json"
    names = ["1b", "llama-7b"] if not a.smoke else ["debug"]
    plan = []
    for name in names:
        compiled = "reduce-overhead" if device == "cuda" else "default"  # CUDA graphs need a GPU
        for quant in ("none", "int8", "int4"):
            for mode in ("eager", compiled):
                spec = {"who": "camelid", "name": name, "mode": mode, "device": device, "quant": quant}
                plan.append((f"camelid_{name}_{'bf16' if quant == 'none' else quant}_{mode}", spec))
        for mode in ("eager", "static-compile"):
            plan.append((f"hf_{name}_{mode}", {"who": "hf", "name": name, "mode": mode, "device": device}))
    for key, spec in plan:
        left = a.budget - (time.perf_counter() - t_start)
        if left < 30:
            res[key] = f"skipped: {left:.0f} s of the budget left"
            continue
        res[key] = benchrows.run_row(__file__, spec, min(150, left))
        row = res[key]
        if isinstance(row, dict) and "copy_GBps" in res:
            row["roofline_fraction"] = row["tok_s"] * row["weight_GB"] / res["copy_GBps"]
        print(f"[{time.perf_counter() - t_start:5.0f} s] {key}: {row}", flush=True)
        out_file.write_text(json.dumps(res, indent=1))
    print(f"\n{'row':<40} {'tok/s':>9} {'roofline':>9} {'vs HF eager':>12}")
    for key, _ in plan:
        row, base = res.get(key), res.get(f"hf_{key.split('_')[1]}_eager")
        if isinstance(row, dict):
            ratio = f"{row['tok_s'] / base['tok_s']:.2f}" if isinstance(base, dict) else "-"
            roof = f"{row['roofline_fraction']:.1%}" if "roofline_fraction" in row else "-"
            print(f"{key:<40} {row['tok_s']:>9.1f} {roof:>9} {ratio:>12}")
    res["wall_s"] = time.perf_counter() - t_start
    out_file.write_text(json.dumps(res, indent=1))
    print(f"wrote {out_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
