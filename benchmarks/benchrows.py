"""Run one benchmark row in a child process with a time limit, so a crash or a hang costs that row only.

A script calls `run_row(__file__, spec, limit)`; the child is the same script started with `--child SPEC_JSON
--child-out FILE`, and writes its row (a JSON object) to FILE. What comes back is the row, or a string
starting `error:`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path


def run_row(script: str, spec: dict, limit: float) -> dict | str:
    with tempfile.NamedTemporaryFile("r", suffix=".json") as f:
        cmd = [sys.executable, script, "--child", json.dumps(spec), "--child-out", f.name]
        try:
            proc = subprocess.run(cmd, timeout=limit, capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            return f"error: timed out after {limit:.0f} s"
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return f"error: exit {proc.returncode}: {' | '.join(tail)}"[:400]
        return json.loads(Path(f.name).read_text())


def add_child_args(ap) -> None:
    import argparse

    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)


def start(a, child) -> tuple[str, dict] | int:
    """In a child: run the row with `child(spec)`, write it, return 0. In the parent: (device, a result header
    with date, GPU and versions), or 2 when a GPU run finds no CUDA device."""
    import datetime

    import torch

    if a.child:
        Path(a.child_out).write_text(json.dumps(child(json.loads(a.child))))
        return 0
    device = "cpu" if a.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device; run with --smoke to check the script on the CPU", file=sys.stderr)
        return 2
    res = {
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if device == "cuda" else "cpu (smoke)",
    }
    try:
        import transformers

        res["transformers"] = transformers.__version__
    except ImportError:
        res["transformers"] = None
    return device, res


def hf_llama(name: str, device: str, dtype=None):
    """The baseline model: `transformers`' LlamaForCausalLM with the shape of camelid's preset `name` (the
    config camelid exports), SDPA attention, random weights made on `device`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from camelid.formats.hf import to_hf_config
    from camelid.model import preset

    cfg = LlamaConfig(**to_hf_config(preset(name)))
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(cfg)
    return model if dtype is None else model.to(dtype)
