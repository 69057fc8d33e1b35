"""Throughput, MFU, memory, energy and CO2 (shared/SPEC.md section 3), and where they are written."""

from __future__ import annotations

import json
import logging
import math
import resource
import time
from pathlib import Path

import torch

from camelid.model.args import ModelArgs, param_count

log = logging.getLogger(__name__)

# Dense bf16 peak TFLOP/s per device, by a substring of the device name (datasheet numbers).
PEAK_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,
    "H800": 989.0,
    "GH200": 989.0,
    "B200": 2250.0,
    "A100": 312.0,
    "A800": 312.0,
    "L40S": 362.0,
    "A10G": 125.0,
    "L4": 121.0,
    "V100": 125.0,
}


def flops_per_token(args: ModelArgs, seq_len: int) -> float:
    """Training FLOPs per token (nanoGPT / torchtitan convention): 6 N + 12 L d T, where N leaves out the input
    embedding (a lookup, no FLOPs) but keeps the output projection (a real matmul), as shared/bench's baseline."""
    lookup = 0 if args.tie_embeddings else args.vocab_size * args.dim
    return 6 * (param_count(args) - lookup) + 12 * args.n_layers * args.dim * seq_len


def detect_peak_tflops(override: float) -> float:
    if override > 0:
        return override
    if not torch.cuda.is_available():
        return 0.0
    name = torch.cuda.get_device_name()
    for key, tflops in PEAK_TFLOPS.items():
        if key in name:
            return tflops
    log.warning("unknown GPU %r: set metrics.peak_tflops to report MFU", name)
    return 0.0


def memory_gb() -> float:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


class PowerMeter:
    """Integrates device power: NVML's reading on a GPU, else the configured nominal watts (the paper: 400)."""

    def __init__(self, nominal_w: float, devices: int) -> None:
        self.nominal_w = nominal_w
        self.devices = devices
        self.joules = 0.0
        self.source = "nominal"
        self._last = time.perf_counter()
        self._handle = None
        if torch.cuda.is_available():
            try:
                import pynvml

                pynvml.nvmlInit()
                self._handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
                self._nvml = pynvml
                self.source = "nvml"
            except Exception:  # no NVML library or driver: fall back to the nominal figure
                self._handle = None

    def watts(self) -> float:
        if self._handle is not None:
            return self._nvml.nvmlDeviceGetPowerUsage(self._handle) / 1000.0
        return self.nominal_w

    def tick(self) -> None:
        now = time.perf_counter()
        # every device is assumed to draw what this one draws
        self.joules += self.watts() * self.devices * (now - self._last)
        self._last = now

    def report(self, pue: float, co2_t_per_mwh: float) -> dict[str, float | str]:
        mwh = self.joules / 3.6e9 * pue
        return {"energy_mwh": mwh, "co2_t": mwh * co2_t_per_mwh, "power_source": self.source}


class MetricsWriter:
    """metrics.jsonl (one object per log line) and TensorBoard scalars, written by rank 0 only."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool) -> None:
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.tb = None
        if enabled:
            run_dir.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "a")
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self.tb = SummaryWriter(str(run_dir / "tensorboard"))
                except ImportError:
                    log.warning("tensorboard is not installed; writing metrics.jsonl only")

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        # strict JSON: a non-finite number (a skipped step's loss) is written as the string "nan" or "inf"
        clean = {k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self._f.write(json.dumps(clean) + "\n")
        self._f.flush()
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        if self.enabled:
            self._f.close()
            if self.tb is not None:
                self.tb.close()


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_loss_curve(path: Path, records: list[dict], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["loss"]) for r in records if r.get("kind") == "train" and "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if r.get("kind") == "val"]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    if train:
        ax.plot(*zip(*train), label="train loss", lw=1.2)
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss", lw=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
