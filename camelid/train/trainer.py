"""The pretraining loop: the paper's recipe on one CPU or many GPUs, resumable and observable."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.attention import sdpa_kernel

from camelid.config import JobConfig
from camelid.data.loader import TokenLoader, validation_windows
from camelid.errors import CamelidError, ConfigError
from camelid.model.transformer import Transformer
from camelid.train import checkpoint
from camelid.train.metrics import (
    MetricsWriter,
    PowerMeter,
    detect_peak_tflops,
    flops_per_token,
    memory_gb,
    plot_loss_curve,
    read_metrics,
)
from camelid.train.sharded import grad_norm_and_clip, init_weights
from camelid.transforms import build_mesh, dp_rank, init_distributed, parallelize, resolve_dims

log = logging.getLogger(__name__)


class TrainingDivergedError(CamelidError):
    """Too many steps in a row had a non-finite loss or gradient."""


def lr_at(step: int, peak: float, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup to `peak`, then cosine decay to `min_ratio * peak` at the last step (the paper's schedule)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclass
class StepResult:
    """What one optimizer step reports, as device tensors until `read()` (which waits for the device)."""

    step: int
    lr: float
    loss: torch.Tensor
    grad_norm: torch.Tensor
    finite: torch.Tensor
    epochs: list[float]

    def __post_init__(self) -> None:
        self._host: torch.Tensor | None = None
        self._event = None
        if self.loss.device.type == "cuda":  # start the copy now; read() then waits for this step alone
            values = torch.stack([self.loss.float(), self.grad_norm.float().to(self.loss.device), self.finite.float()])
            self._host = torch.empty(3, pin_memory=True)
            self._host.copy_(values, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record()

    def read(self) -> dict:
        if self._event is not None:
            self._event.synchronize()
            loss, norm, finite = self._host.tolist()
            return {"loss": loss, "grad_norm": norm, "lr": self.lr, "finite": finite == 1.0}
        loss, norm, finite = float(self.loss), float(self.grad_norm), bool(self.finite)
        return {"loss": loss, "grad_norm": norm, "lr": self.lr, "finite": finite}


SDPA_BACKENDS = {
    "flash": "FLASH_ATTENTION",
    "cudnn": "CUDNN_ATTENTION",
    "efficient": "EFFICIENT_ATTENTION",
    "math": "MATH",
}


def sdpa_priority(name: str) -> list | None:
    """The SDPA backends in the order to try them, the named one first; None for PyTorch's own choice."""
    if name == "auto":
        return None
    from torch.nn.attention import SDPBackend

    first = getattr(SDPBackend, SDPA_BACKENDS[name])
    return [first, *(getattr(SDPBackend, b) for b in SDPA_BACKENDS.values() if getattr(SDPBackend, b) != first)]


@dataclass
class BatchPlan:
    global_seqs: int
    per_dp: int
    accum: int
    steps: int


def plan_batches(cfg: JobConfig, dp: int) -> BatchPlan:
    t, seq = cfg.training, cfg.data.seq_len
    global_seqs, rest = divmod(t.global_batch_tokens, seq)
    if rest or global_seqs == 0:
        raise ConfigError(
            f"training.global_batch_tokens ({t.global_batch_tokens}) must be a positive multiple of "
            f"data.seq_len ({seq})"
        )
    per_dp, rest = divmod(global_seqs, dp)
    if rest:
        raise ConfigError(
            f"training.global_batch_tokens gives {global_seqs} sequences per step, not divisible by the "
            f"{dp} data-parallel ranks"
        )
    accum, rest = divmod(per_dp, t.micro_batch)
    if rest or accum == 0:
        raise ConfigError(
            f"training.micro_batch ({t.micro_batch}) must divide the {per_dp} sequences each data-parallel "
            "rank gets per step (training.global_batch_tokens / data.seq_len / data-parallel ranks)"
        )
    steps = t.steps or math.ceil(t.tokens / t.global_batch_tokens)
    if steps <= 0:
        raise ConfigError("set training.steps or training.tokens to a positive number")
    return BatchPlan(global_seqs, per_dp, accum, steps)


def resolve_precision(precision: str, device: torch.device) -> str:
    """`training.precision` with "auto" decided for `device`: bf16-autocast where bf16 matmuls are native (a GPU,
    a CPU with AVX-512 BF16 or AMX), else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16-autocast"
    return "bf16-autocast" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


class Trainer:
    def __init__(self, cfg: JobConfig) -> None:
        self.cfg = cfg
        t = cfg.training
        want = t.device if t.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        if want not in ("cpu", "cuda"):
            raise ConfigError(f"training.device must be auto, cpu or cuda, got {t.device!r}")
        if want == "cuda" and not torch.cuda.is_available():
            raise ConfigError("training.device is 'cuda' but no CUDA device is available")
        cfg.validate()  # a config built in code: checked before the process group starts
        self.rank, self.world = init_distributed(want)
        self.device = torch.device("cuda", torch.cuda.current_device()) if want == "cuda" else torch.device("cpu")
        self.dims = resolve_dims(cfg.parallel, self.world)
        self.args = cfg.model_args()
        self.plan = plan_batches(cfg, self.dims.dp)
        self.loader = TokenLoader([(s["path"], s.get("weight", 1.0)) for s in cfg.data.train], cfg.data.seq_len, t.seed)
        self.tokenizer_file = Path(cfg.data.tokenizer) if cfg.data.tokenizer else None
        if self.tokenizer_file is not None and not self.tokenizer_file.is_file():
            raise ConfigError(f"data.tokenizer {self.tokenizer_file} does not exist")
        self.run_dir = Path(cfg.job.run_dir)
        self.ckpt_root = self.run_dir / "checkpoints"
        self.mesh = build_mesh(self.dims, self.device.type)
        self.dp_rank = dp_rank(self.mesh)
        self.model = self._build_model()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = self._build_optimizer()
        # The fused AdamW kernel skips its update when `found_inf` is set, so a GPU step never waits to decide.
        self.fused_skip = bool(self.optimizer.defaults.get("fused"))
        # On a GPU, step N's numbers are read once step N + 1 is queued (see `fit`).
        self.read_late = self.device.type == "cuda"
        self.sdpa_backends = sdpa_priority(t.sdpa_backend)
        self.step = 0
        self.nonfinite = 0
        self.is_main = self.rank == 0
        self.writer: MetricsWriter | None = None
        self.power = PowerMeter(cfg.metrics.device_power_w, self.world)
        self.peak_flops = detect_peak_tflops(cfg.metrics.peak_tflops) * 1e12
        self.flops_per_token = flops_per_token(self.args, cfg.data.seq_len)

    # -- construction ---------------------------------------------------------------------------------------

    def _build_model(self) -> Transformer:
        t = self.cfg.training
        self.precision = resolve_precision(t.precision, self.device)
        with torch.device("meta"):
            model = Transformer(self.args)
        fsdp_bf16 = self.precision == "bf16-autocast" and self.dims.dp_shard > 1
        parallelize(
            model, self.mesh, self.dims, t.activation_checkpointing, t.compile, torch.bfloat16 if fsdp_bf16 else None
        )
        model.to_empty(device=self.device)
        model.tie_weights()
        init_weights(model, t.seed)
        if self.precision == "bf16":
            model.to(torch.bfloat16)
        # FSDP2 casts parameters itself; otherwise bf16-autocast runs the matmuls under torch.autocast.
        self.autocast = self.precision == "bf16-autocast" and not fsdp_bf16
        return model.train()

    def _build_optimizer(self) -> torch.optim.Optimizer:
        o = self.cfg.optimizer
        decay = [p for n, p in self.model.named_parameters() if p.dim() >= 2]
        no_decay = [p for n, p in self.model.named_parameters() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        fused = self.device.type == "cuda"
        return torch.optim.AdamW(groups, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, fused=fused)

    # -- one step -------------------------------------------------------------------------------------------

    def forward_loss(self, tokens: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """Next-token cross-entropy of a (B, T + 1) block: the mean, or per sequence with reduction='row'."""
        with contextlib.ExitStack() as stack:
            if self.autocast:
                stack.enter_context(torch.autocast(self.device.type, dtype=torch.bfloat16))
            if self.sdpa_backends is not None:
                stack.enter_context(sdpa_kernel(self.sdpa_backends, set_priority=True))
            losses = self.model(tokens[:, :-1], targets=tokens[:, 1:])  # (B, T), fp32
        return losses.mean(dim=1) if reduction == "row" else losses.mean()

    def _all_mean(self, x: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(x)  # gloo has no AVG; every rank of a TP group holds the same value
            x = x / self.world
        return x

    def next_tokens(self) -> torch.Tensor:
        """This rank's (per_dp, seq_len + 1) block of the next global batch, on the device (copied from
        pinned memory without waiting on a CUDA device)."""
        plan = self.plan
        batch = torch.from_numpy(self.loader.next_batch(plan.global_seqs, self.dp_rank * plan.per_dp, plan.per_dp))
        if self.device.type == "cuda":
            return batch.pin_memory().to(self.device, non_blocking=True)
        return batch

    def train_step(self) -> StepResult:
        """One optimizer step. On a GPU nothing here waits for the device: a non-finite step is skipped by the
        fused optimizer itself (its `found_inf` input) and the result's numbers are read later."""
        o, plan = self.cfg.optimizer, self.plan
        mb = self.cfg.training.micro_batch
        lr = lr_at(self.step, o.lr, o.warmup_steps, plan.steps, o.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        tokens = self.next_tokens()
        loss_sum = torch.zeros((), device=self.device)
        for i in range(plan.accum):
            if self.dims.dp_shard > 1:
                self.model.set_requires_gradient_sync(i == plan.accum - 1)
            loss = self.forward_loss(tokens[i * mb : (i + 1) * mb])
            (loss / plan.accum).backward()
            loss_sum += loss.detach()
        loss = self._all_mean(loss_sum / plan.accum)
        norm = grad_norm_and_clip(self.params, o.grad_clip)
        finite = torch.isfinite(loss) & torch.isfinite(norm.to(loss.device))
        if self.fused_skip:
            self.optimizer.found_inf = (~finite).float()
            self.optimizer.step()
        elif bool(finite):
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return StepResult(self.step, lr, loss, norm, finite, self.loader.epochs())

    @torch.no_grad()
    def evaluate(self) -> float | None:
        """Mean validation loss (nats/token) over the first `metrics.val_batches * micro_batch` windows of
        data.val; the same windows whatever the parallelism, split across data-parallel ranks."""
        if not self.cfg.data.val:
            return None
        mb, dp = self.cfg.training.micro_batch, self.dims.dp
        windows = torch.from_numpy(
            validation_windows(self.cfg.data.val, self.cfg.data.seq_len, self.cfg.metrics.val_batches * mb)
        )
        n = len(windows)
        per_rank = math.ceil(n / dp)  # every rank runs as many forwards as the others (FSDP needs that)
        idx = torch.arange(per_rank) * dp + self.dp_rank
        weight = (idx < n).double().to(self.device)
        mine = windows[idx.clamp(max=n - 1)].to(self.device)
        self.model.eval()
        sums = torch.zeros(2, device=self.device, dtype=torch.float64)
        for i in range(0, per_rank, mb):
            rows = self.forward_loss(mine[i : i + mb], reduction="row").double()
            sums[0] += (rows * weight[i : i + mb]).sum()
            sums[1] += weight[i : i + mb].sum()
        self.model.train()
        if self.world > 1:
            dist.all_reduce(sums)  # tensor-parallel peers add the same numbers to both sums
        return float(sums[0] / sums[1])

    # -- checkpoints ----------------------------------------------------------------------------------------

    def maybe_resume(self) -> None:
        """Resume from the newest complete and loadable checkpoint: a damaged newer one is skipped with a warning
        (and left on disk for inspection); if none loads, the run stops with one line instead of starting over."""
        checkpoint.clean_incomplete(self.ckpt_root)
        found = checkpoint.list_checkpoints(self.ckpt_root)
        if not found or not self.cfg.checkpoint.resume:
            return
        meta = path = None
        for candidate in reversed(found):
            try:
                checkpoint.read_meta(candidate)
            except CamelidError as e:
                log.warning("%s; trying the checkpoint before it", e)
                continue
            checkpoint.check_model(candidate, self.args)  # another model's checkpoint is an error, not damage
            try:
                meta = checkpoint.load(candidate, self.model, self.optimizer)
                path = candidate
                break
            except CamelidError as e:
                log.warning("%s; trying the checkpoint before it", e)
        if meta is None:
            raise CamelidError(
                f"no checkpoint in {self.ckpt_root} loads ({len(found)} damaged); move them away to start over, or "
                "set checkpoint.resume = false"
            )
        self.loader.load_state_dict(meta["loader"])
        self.step = int(meta["step"])
        self.power.joules = float(meta.get("energy_j", 0.0))
        metrics = self.run_dir / "metrics.jsonl"
        if self.is_main and metrics.is_file():  # drop what the interrupted run logged after this checkpoint
            kept = [r for r in read_metrics(metrics) if r.get("step", 0) <= self.step]
            metrics.write_text("".join(json.dumps(r) + "\n" for r in kept))
        log.info("resumed from %s at step %d", path, self.step)

    def save_checkpoint(self) -> Path:
        state = {"loader": self.loader.state_dict(), "energy_j": self.power.joules, "config": self.cfg.to_dict()}
        return checkpoint.save(
            self.ckpt_root,
            self.step,
            self.model,
            self.optimizer,
            state,
            self.args,
            self.tokenizer_file,
            self.cfg.checkpoint.keep,
        )

    # -- the loop -------------------------------------------------------------------------------------------

    def fit(self) -> dict:
        cfg, plan = self.cfg, self.plan
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        self.maybe_resume()
        self.writer = MetricsWriter(self.run_dir, self.is_main, cfg.metrics.tensorboard)
        val_start = None
        if self.step == 0 and cfg.data.val:
            val_start = self.evaluate()
            self.writer.write({"kind": "val", "step": 0, "val_loss": val_start})
        bar = None
        if self.is_main and cfg.metrics.progress:
            from tqdm import tqdm

            bar = tqdm(
                total=plan.steps, initial=self.step, desc=cfg.job.name, unit="step", file=sys.stderr, dynamic_ncols=True
            )
        last_val = None
        self._t_log, self._since_log = time.perf_counter(), 0
        self.power.tick()
        # On a GPU, step N's numbers are read after step N + 1 is queued, so the device never idles waiting
        # for the host; steps that validate or save (and the last) are read at once.
        pending: StepResult | None = None
        while self.step < plan.steps:
            result = self.train_step()
            self.power.tick()
            last = self.step == plan.steps
            validate = bool(cfg.data.val) and (
                last or bool(cfg.metrics.val_interval and self.step % cfg.metrics.val_interval == 0)
            )
            save = bool(cfg.checkpoint.interval) and (self.step % cfg.checkpoint.interval == 0 or last)
            if pending is not None:
                self._report(pending, bar)
            pending = result
            if not self.read_late or validate or save:
                self._report(pending, bar)
                pending = None
            if validate:
                last_val = self.evaluate()
                self.writer.write({"kind": "val", "step": self.step, "val_loss": last_val})
                self._t_log = time.perf_counter()
            if save:
                self.save_checkpoint()
                self._t_log = time.perf_counter()
            if bar is not None:
                bar.update(1)
        if pending is not None:
            self._report(pending, bar)
        if bar is not None:
            bar.close()
        self.writer.close()
        summary = {
            "steps": self.step,
            "val_loss_start": val_start,
            "val_loss": last_val,
            **self.power.report(cfg.metrics.pue, cfg.metrics.co2_t_per_mwh),
        }
        if self.is_main:
            records = read_metrics(self.run_dir / "metrics.jsonl")
            plot_loss_curve(self.run_dir / "loss_curve.png", records, f"{cfg.job.name}: {cfg.model.preset}")
        return summary

    def _report(self, result: StepResult, bar) -> None:
        """Log one finished step (waiting for the device up to that step): a skip record and the run-stopping
        check for a non-finite step, the training record every `metrics.log_interval` steps."""
        cfg = self.cfg
        m = result.read()
        step = result.step
        self._since_log += 1
        if not m["finite"]:
            self.nonfinite += 1
            self.writer.write({"kind": "skip", "step": step, "loss": m["loss"], "grad_norm": m["grad_norm"]})
            log.warning("step %d: non-finite loss %s or grad norm %s; update skipped", step, m["loss"], m["grad_norm"])
            if self.nonfinite >= cfg.training.max_nonfinite_steps:
                good = checkpoint.list_checkpoints(self.ckpt_root)
                where = f"the last good checkpoint is {good[-1]}" if good else "no checkpoint was saved yet"
                raise TrainingDivergedError(
                    f"{self.nonfinite} steps in a row had a non-finite loss or gradient (last at step "
                    f"{step}); training stopped, {where}"
                )
            return
        self.nonfinite = 0
        if step % cfg.metrics.log_interval and step != self.plan.steps:
            return
        tokens_per_step = self.plan.global_seqs * cfg.data.seq_len
        dt = time.perf_counter() - self._t_log
        tps = tokens_per_step * self._since_log / dt
        record = {
            "kind": "train",
            "step": step,
            "loss": m["loss"],
            "lr": m["lr"],
            "grad_norm": m["grad_norm"],
            "tokens": step * tokens_per_step,
            "tokens_per_s": tps,
            "memory_gb": memory_gb(),
            "epochs": result.epochs,
            **self.power.report(cfg.metrics.pue, cfg.metrics.co2_t_per_mwh),
        }
        if self.peak_flops:
            record["mfu"] = tps * self.flops_per_token / (self.peak_flops * self.world)
        self.writer.write(record)
        if bar is not None:
            bar.set_postfix(loss=f"{m['loss']:.3f}", tok_s=f"{tps:,.0f}")
        self._t_log, self._since_log = time.perf_counter(), 0

    def close(self) -> None:
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
