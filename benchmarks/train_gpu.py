"""Training throughput on one GPU: camelid's trainer against a Hugging Face `LlamaForCausalLM` baseline.

One GPU, the same shapes and settings as shared/bench/hf_baseline_gpu.py (134M at seq 1024, micro-batch 32;
1.26B at seq 2048, micro-batch 8; AdamW, bf16 autocast, clip 1.0), compiled and eager, plus one `llama-7b`
training step (pure bf16, full activation checkpointing). Before the training rows it times the
scaled_dot_product_attention backends on both attention shapes (forward + backward, checked against the
flash kernel) and gives camelid the fastest one that agrees (`training.sdpa_backend`).

Each row runs in its own process with a time limit, so a crash or a hang costs one row, and the rows run
in order of importance until `--budget` seconds are spent. Results go to $OUT (default benchmarks/results/)
after every row; the table at the end gives tokens/s, MFU and the camelid/baseline ratio.

    PYTHONPATH=. python benchmarks/train_gpu.py            # on a GPU machine
    PYTHONPATH=. python benchmarks/train_gpu.py --smoke    # tiny shapes on the CPU: checks the script runs

Timing: 3 warm-up steps (compilation included, reported as warmup_s), then `--steps` steps between two
device synchronisations. Weights are initialised on the device (N(0, 0.02)) instead of by camelid's
seeded CPU generator, which only saves set-up time: it is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import benchrows
import numpy as np
import torch

PEAK = 989e12  # dense bf16, H100/H200 (shared/SPEC.md)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_steps(step, steps: int, device: str) -> tuple[float, float]:
    """(warm-up seconds for 3 steps, seconds per step over the next `steps`)."""
    t0 = time.perf_counter()
    for _ in range(3):
        step()
    sync(device)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return warm, (time.perf_counter() - t0) / steps


def result_row(args, seq: int, mb: int, warm: float, dt: float, device: str) -> dict:
    """tokens/s and MFU (shared/bench's convention: 6 N + 12 L d T, N without the input embedding)."""
    from camelid.train.metrics import flops_per_token

    tok_s = mb * seq / dt
    peak_mem = torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else float("nan")
    return {
        "tok_s": tok_s,
        "mfu_989": tok_s * flops_per_token(args, seq) / PEAK,
        "step_s": dt,
        "warmup_s": warm,
        "peak_mem_GB": peak_mem,
    }


# -- the rows (each run in a child process) --------------------------------------------------------------


def device_init(model, seed: int) -> None:
    """Fill the parameters on their own device: norms 1, everything else N(0, 0.02)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)


def camelid_row(name: str, seq: int, mb: int, compile_: bool, steps: int, device: str, extra: list[str]) -> dict:
    """Time `steps` optimizer steps of camelid's Trainer (after 3 warm-up steps) on random tokens."""
    import camelid.train.trainer as trainer_mod
    from camelid.config import load_config
    from camelid.data.shards import write_documents
    from camelid.model import preset

    trainer_mod.init_weights = device_init
    args = preset(name)
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        data = Path(tmp) / "data"
        tokens = (steps + 4) * mb * seq + 1
        write_documents(data / "part_00000.ds", [rng.integers(3, args.vocab_size, tokens).tolist()], args.vocab_size)
        overrides = [
            *("--model.preset", name, "--job.run_dir", f"{tmp}/run", "--data.seq_len", str(seq)),
            *("--data.train", f'[{{path = "{data}", weight = 1.0}}]', "--training.micro_batch", str(mb)),
            *("--training.global_batch_tokens", str(mb * seq), "--training.steps", str(steps + 3)),
            *("--training.compile", "true" if compile_ else "false", "--training.device", device),
            *("--checkpoint.interval", "0", "--metrics.progress", "false", "--metrics.tensorboard", "false"),
            *("--optimizer.warmup_steps", "1"),
            *extra,
        ]
        trainer = trainer_mod.Trainer(load_config(None, overrides))
        warm, dt = time_steps(trainer.train_step, steps, device)
        last = trainer.train_step().read()
        row = result_row(args, seq, mb, warm, dt, device)
        row["loss_last"] = last["loss"]
    return row


def hf_row(name: str, seq: int, mb: int, compile_: bool, steps: int, device: str) -> dict:
    """The baseline, as shared/bench/hf_baseline_gpu.py: LlamaForCausalLM (SDPA), fused AdamW, bf16 autocast,
    clip 1.0, the whole model under torch.compile."""
    from camelid.model import preset

    a = preset(name)
    m = benchrows.hf_llama(name, device)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=device == "cuda")
    fwd = torch.compile(m) if compile_ else m
    ids = torch.randint(0, a.vocab_size, (mb, seq), device=device)
    losses = []

    def step():
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = fwd(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach())

    warm, dt = time_steps(step, steps, device)
    row = result_row(a, seq, mb, warm, dt, device)
    row["loss_last"] = float(losses[-1])
    return row


def sdpa_row(shapes: list[tuple[int, int, int, int]], device: str) -> dict:
    """Forward + backward time of each SDPA backend on causal bf16 attention, and its largest difference
    from the flash kernel's output and input gradients."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from camelid.train.trainer import SDPA_BACKENDS

    out: dict = {}
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    names = ["flash", "cudnn", "efficient"] if device == "cuda" else ["math"]
    for b, h, t, d in shapes:
        key = f"b{b}_h{h}_t{t}_d{d}"
        gen = torch.Generator(device=device).manual_seed(0)
        q, k, v = (torch.randn(b, h, t, d, device=device, dtype=dtype, generator=gen) for _ in range(3))
        dout = torch.randn(b, h, t, d, device=device, dtype=dtype, generator=gen)
        ref = None
        rows = {}
        for name in names:
            backend = getattr(SDPBackend, SDPA_BACKENDS[name])
            qq, kk, vv = (x.detach().requires_grad_() for x in (q, k, v))

            def run(backend=backend, qq=qq, kk=kk, vv=vv, dout=dout):
                with sdpa_kernel(backend):
                    o = torch.nn.functional.scaled_dot_product_attention(qq, kk, vv, is_causal=True)
                o.backward(dout)
                return o

            try:
                o = run()
                vals = [x.detach().clone() for x in (o, qq.grad, kk.grad, vv.grad)]
                if ref is None:
                    ref = vals
                diff = max(float((x.float() - y.float()).abs().max()) for x, y in zip(vals, ref))
                for _ in range(3):
                    run()
                sync(device)
                iters = 10
                t0 = time.perf_counter()
                for _ in range(iters):
                    run()
                sync(device)
                ms = (time.perf_counter() - t0) / iters * 1e3
                flops = 4 * b * h * t * t * d / 2 * 3.5  # causal: half the square; backward 2.5x forward
                rows[name] = {"ms": ms, "tflops": flops / ms / 1e9, "max_diff_vs_flash": diff}
            except Exception as e:
                rows[name] = {"error": repr(e)[:200]}
        out[key] = rows
    return out


def child(spec: dict) -> dict:
    kind = spec["kind"]
    if kind == "sdpa":
        return sdpa_row([tuple(s) for s in spec["shapes"]], spec["device"])
    if kind == "camelid":
        return camelid_row(
            spec["name"], spec["seq"], spec["mb"], spec["compile"], spec["steps"], spec["device"], spec["extra"]
        )
    return hf_row(spec["name"], spec["seq"], spec["mb"], spec["compile"], spec["steps"], spec["device"])


# -- the parent: plan, run each row with a limit, keep what came back --------------------------------------


def run_row(spec: dict, limit: float) -> dict | str:
    return benchrows.run_row(__file__, spec, limit)


def best_backend(sdpa: dict) -> str:
    """The fastest backend, summed over the shapes, whose results agree with flash (bf16: within 0.05)."""
    totals: dict[str, float] = {}
    for rows in sdpa.values():
        for name, r in rows.items():
            if "ms" not in r or r["max_diff_vs_flash"] > 0.05:
                totals[name] = float("inf")
            elif totals.get(name) != float("inf"):
                totals[name] = totals.get(name, 0.0) + r["ms"]
    good = {n: t for n, t in totals.items() if t != float("inf")}
    return min(good, key=good.get) if good else "auto"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU, to check the script")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per row (after 3 warm-up steps)")
    ap.add_argument("--budget", type=float, default=520, help="seconds for all rows; later rows are skipped")
    ap.add_argument("--skip", nargs="*", default=[], help="names of rows to skip")
    benchrows.add_child_args(ap)
    a = ap.parse_args()
    started = benchrows.start(a, child)
    if isinstance(started, int):
        return started
    device, res = started
    t_start = time.perf_counter()
    res["steps_timed"] = a.steps
    out = Path(os.environ.get("OUT", "benchmarks/results"))
    out.mkdir(parents=True, exist_ok=True)
    out_file = out / f"train_gpu_{res['date']}{'_smoke' if a.smoke else ''}.json"

    big, small = (("1b", 2048, 8), ("125m", 1024, 32)) if not a.smoke else (("debug", 128, 4), ("debug", 64, 8))
    base = {"device": device, "steps": a.steps}
    shapes = [(8, 16, 2048, 128), (32, 12, 1024, 64)] if not a.smoke else [(2, 4, 64, 16)]
    res["sdpa_backends"] = run_row({"kind": "sdpa", "shapes": shapes, **base}, 120)
    backend = best_backend(res["sdpa_backends"]) if isinstance(res["sdpa_backends"], dict) else "auto"
    if a.smoke:
        backend = "math"
    res["camelid_sdpa_backend"] = backend
    print(f"sdpa backends: {json.dumps(res['sdpa_backends'])}\ncamelid uses: {backend}", flush=True)
    sdpa = ["--training.sdpa_backend", backend]

    def tag(shape, compile_):
        name, seq, mb = shape
        return f"{name}_seq{seq}_mbs{mb}_{'compile' if compile_ else 'eager'}"

    plan = []  # (key, spec, limit in s), most important first
    for shape in (big, small):
        for who in ("camelid", "hf"):
            spec = {"kind": who, "name": shape[0], "seq": shape[1], "mb": shape[2], "compile": True, **base}
            spec["extra"] = sdpa if who == "camelid" else []
            plan.append((f"{who}_{tag(shape, True)}", spec, 180))
    if not a.smoke:
        spec = {"kind": "camelid", "name": "llama-7b", "seq": 2048, "mb": 1, "compile": True, **base, "steps": 3}
        spec["extra"] = [*sdpa, "--training.precision", "bf16", "--training.activation_checkpointing", "full"]
        plan.append(("camelid_llama-7b_seq2048_mbs1_compile_bf16_fullac", spec, 180))
    for shape in (big, small):
        for who in ("camelid", "hf"):
            spec = {"kind": who, "name": shape[0], "seq": shape[1], "mb": shape[2], "compile": False, **base}
            spec["extra"] = sdpa if who == "camelid" else []
            plan.append((f"{who}_{tag(shape, False)}", spec, 60))
    spec = {"kind": "camelid", "name": big[0], "seq": big[1], "mb": big[2], "compile": True, **base}
    spec["extra"] = ["--training.sdpa_backend", "auto"]
    plan.append((f"camelid_{tag(big, True)}_sdpa-auto", spec, 120))

    for key, spec, limit in plan:
        left = a.budget - (time.perf_counter() - t_start)
        if key in a.skip:
            continue
        if left < min(limit, 45):
            res[key] = f"skipped: {left:.0f} s of the budget left"
            print(f"{key}: {res[key]}", flush=True)
            continue
        t0 = time.perf_counter()
        res[key] = run_row(spec, min(limit, left))
        left = a.budget - (time.perf_counter() - t_start)
        if isinstance(res[key], str) and spec["kind"] == "camelid" and backend != "auto" and left > 45:
            # the chosen attention kernel failed inside camelid: keep the error, retry with PyTorch's choice
            res[key + "_error_with_" + backend] = res[key]
            extra = list(spec["extra"])
            extra[extra.index("--training.sdpa_backend") + 1] = "auto"
            res[key] = run_row({**spec, "extra": extra}, min(limit, left))
        took = time.perf_counter() - t0
        print(f"[{time.perf_counter() - t_start:5.0f} s] {key} ({took:.0f} s): {res[key]}", flush=True)
        out_file.write_text(json.dumps(res, indent=1))

    print(f"\n{'shape':<28} {'camelid tok/s':>13} {'MFU':>6} {'HF tok/s':>10} {'MFU':>6} {'ratio':>6}")
    for compile_ in (True, False):
        for shape in (big, small):
            t = tag(shape, compile_)
            c, h = res.get(f"camelid_{t}"), res.get(f"hf_{t}")
            if isinstance(c, dict) and isinstance(h, dict):
                print(
                    f"{t:<28} {c['tok_s']:>13,.0f} {c['mfu_989']:>6.1%} {h['tok_s']:>10,.0f} {h['mfu_989']:>6.1%} "
                    f"{c['tok_s'] / h['tok_s']:>6.2f}"
                )
    r7 = res.get("camelid_llama-7b_seq2048_mbs1_compile_bf16_fullac")
    if isinstance(r7, dict):
        print(f"llama-7b one GPU (bf16, full AC): {r7['tok_s']:,.0f} tok/s, MFU {r7['mfu_989']:.1%}")
    res["wall_s"] = time.perf_counter() - t_start
    out_file.write_text(json.dumps(res, indent=1))
    print(f"wrote {out_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
