"""Training throughput on one GPU: camelid's trainer against a Hugging Face `LlamaForCausalLM` baseline.

One process, one GPU, the same shapes and settings as shared/bench/hf_baseline_gpu.py (134M at seq 1024,
micro-batch 32; 1.26B at seq 2048, micro-batch 8; AdamW, bf16 autocast, clip 1.0), eager and compiled,
plus one `llama-7b` training step. Prints a table of tokens/s, MFU and camelid/baseline ratios and writes
JSON to $OUT (default benchmarks/results/).

    PYTHONPATH=. python benchmarks/train_gpu.py            # on a GPU machine
    PYTHONPATH=. python benchmarks/train_gpu.py --smoke    # tiny shapes on the CPU: checks the script runs
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from camelid.config import load_config
from camelid.data.shards import write_documents
from camelid.model import preset
from camelid.train.metrics import flops_per_token
from camelid.train.trainer import Trainer

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
    """tokens/s and MFU (shared/bench's convention) of one measured configuration."""
    tok_s = mb * seq / dt
    peak_mem = torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else float("nan")
    return {
        "tok_s": tok_s,
        "mfu_989": tok_s * flops_per_token(args, seq) / PEAK,
        "step_s": dt,
        "warmup_s": warm,
        "peak_mem_GB": peak_mem,
    }


def random_shards(root: Path, vocab: int, tokens: int) -> Path:
    rng = np.random.default_rng(0)
    write_documents(root / "part_00000.ds", [rng.integers(3, vocab, tokens).tolist()], vocab)
    return root


def camelid_run(name: str, seq: int, mb: int, compile_: bool, steps: int, device: str, extra: list[str]) -> dict:
    """Time `steps` optimizer steps of camelid's Trainer (after 3 warm-up steps) on random tokens."""
    args = preset(name)
    with tempfile.TemporaryDirectory() as tmp:
        data = random_shards(Path(tmp) / "data", args.vocab_size, (steps + 4) * mb * seq + 1)
        overrides = [
            "--model.preset",
            name,
            "--job.run_dir",
            f"{tmp}/run",
            "--data.seq_len",
            str(seq),
            "--data.train",
            f'[{{path = "{data}", weight = 1.0}}]',
            "--training.micro_batch",
            str(mb),
            "--training.global_batch_tokens",
            str(mb * seq),
            "--training.steps",
            str(steps + 3),
            "--training.compile",
            "true" if compile_ else "false",
            "--training.device",
            device,
            "--checkpoint.interval",
            "0",
            "--metrics.progress",
            "false",
            "--metrics.tensorboard",
            "false",
            "--optimizer.warmup_steps",
            "1",
            *extra,
        ]
        trainer = Trainer(load_config(None, overrides))
        warm, dt = time_steps(trainer.train_step, steps, device)
        row = result_row(args, seq, mb, warm, dt, device)
        del trainer
    return row


def hf_run(name: str, seq: int, mb: int, compile_: bool, steps: int, device: str) -> dict:
    """The baseline: transformers' LlamaForCausalLM (SDPA), AdamW fused, bf16 autocast, clip 1.0."""
    from transformers import LlamaConfig, LlamaForCausalLM

    a = preset(name)
    cfg = LlamaConfig(
        vocab_size=a.vocab_size,
        hidden_size=a.dim,
        intermediate_size=a.ffn_hidden,
        num_hidden_layers=a.n_layers,
        num_attention_heads=a.n_heads,
        num_key_value_heads=a.kv_heads,
        max_position_embeddings=a.max_seq_len,
        tie_word_embeddings=False,
    )
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        m = LlamaForCausalLM(cfg)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=device == "cuda")
    fwd = torch.compile(m) if compile_ else m
    ids = torch.randint(0, cfg.vocab_size, (mb, seq), device=device)

    def step():
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = fwd(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    warm, dt = time_steps(step, steps, device)
    return result_row(a, seq, mb, warm, dt, device)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU, to check the script")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--skip", nargs="*", default=[], help="names of rows to skip")
    a = ap.parse_args()
    device = "cpu" if a.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device; run with --smoke to check the script on the CPU", file=sys.stderr)
        return 2
    shapes = [("125m", 1024, 32), ("1b", 2048, 8)] if not a.smoke else [("debug", 128, 4)]
    res: dict = {
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if device == "cuda" else "cpu (smoke)",
    }
    try:
        import transformers

        res["transformers"] = transformers.__version__
    except ImportError:
        res["transformers"] = None
    rows = []
    for name, seq, mb in shapes:
        for compile_ in (False, True):
            tag = f"{name}_seq{seq}_mbs{mb}_{'compile' if compile_ else 'eager'}"
            for who in ("camelid", "hf"):
                key = f"{who}_{tag}"
                if key in a.skip:
                    continue
                try:
                    if who == "camelid":
                        res[key] = camelid_run(name, seq, mb, compile_, a.steps, device, [])
                    else:
                        res[key] = hf_run(name, seq, mb, compile_, a.steps, device)
                except Exception as e:  # keep the other rows; the error is part of the result
                    res[key] = f"error: {e!r}"[:300]
                    traceback.print_exc()
                if device == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                print(f"{key}: {res[key]}", flush=True)
            rows.append(tag)
    if not a.smoke and "llama7b" not in a.skip:
        try:  # one step of the paper's 7B on one GPU: pure bf16 and full activation checkpointing to fit
            res["camelid_llama-7b_seq2048_mbs1"] = camelid_run(
                "llama-7b",
                2048,
                1,
                True,
                2,
                device,
                ["--training.precision", "bf16", "--training.activation_checkpointing", "full"],
            )
        except Exception as e:
            res["camelid_llama-7b_seq2048_mbs1"] = f"error: {e!r}"[:300]
    print(f"\n{'shape':<32} {'camelid tok/s':>14} {'MFU':>6} {'HF tok/s':>10} {'MFU':>6} {'ratio':>6}")
    for tag in rows:
        c, h = res.get(f"camelid_{tag}"), res.get(f"hf_{tag}")
        if isinstance(c, dict) and isinstance(h, dict):
            print(
                f"{tag:<32} {c['tok_s']:>14,.0f} {c['mfu_989']:>6.1%} {h['tok_s']:>10,.0f} {h['mfu_989']:>6.1%} "
                f"{c['tok_s'] / h['tok_s']:>6.2f}"
            )
    out = Path(os.environ.get("OUT", "benchmarks/results"))
    out.mkdir(parents=True, exist_ok=True)
    name = f"train_gpu_{res['date']}{'_smoke' if a.smoke else ''}.json"
    (out / name).write_text(json.dumps(res, indent=1))
    print(f"wrote {out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
