"""The training job config: typed dataclasses, read from TOML, with `--section.key value` overrides.

Every value is checked against its field's type; an unknown key or a bad value is a ConfigError that
names the key (`training.micro_batch`) and the value.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from camelid.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class JobSection:
    name: str = "camelid"
    """Run name, shown in logs."""
    run_dir: str = "runs/camelid"
    """Where metrics, checkpoints, the loss curve and the config copy go."""


@dataclass
class ModelSection:
    preset: str = "tiny"
    """A ModelArgs preset (`camelid info PRESET`); other keys in [model] override its fields."""
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataSection:
    train: list[dict[str, Any]] = field(default_factory=list)
    """Token-shard directories with mixture weights: [{path = "...", weight = 0.67}, ...]."""
    val: list[str] = field(default_factory=list)
    """Held-out token-shard directories for validation loss."""
    seq_len: int = 2048
    """Tokens per training sequence (the paper: 2048)."""
    tokenizer: str = ""
    """The tokenizer.model the shards were made with; checkpoints keep a copy for export."""


@dataclass
class OptimizerSection:
    lr: float = 3.0e-4
    """Peak learning rate (the paper: 3e-4 for 7B/13B, 1.5e-4 for 33B/65B)."""
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    """Decoupled weight decay on matrices and embeddings; norms are not decayed."""
    grad_clip: float = 1.0
    warmup_steps: int = 2000
    min_lr_ratio: float = 0.1
    """Cosine decay ends at this fraction of the peak learning rate."""


@dataclass
class TrainingSection:
    global_batch_tokens: int = 4_194_304
    """Tokens per optimizer step over all data-parallel ranks (the paper: 4M)."""
    micro_batch: int = 1
    """Sequences per rank per forward pass; gradient accumulation makes up the rest."""
    steps: int = 0
    """Optimizer steps; 0 derives them from `tokens`."""
    tokens: int = 0
    """Training tokens, used when `steps` is 0."""
    precision: Literal["auto", "fp32", "bf16-autocast", "bf16"] = "auto"
    """auto: bf16-autocast on a GPU and on a CPU with native bf16 (AVX-512 BF16, AMX), fp32 on other CPUs (AVX2:
    bf16 there is emulated, and a quickstart step ran at 35 tokens/s instead of thousands)."""
    activation_checkpointing: Literal["none", "selective", "full"] = "none"
    compile: bool = False
    """torch.compile each transformer block, and the output head with the loss when not FSDP-sharded."""
    sdpa_backend: Literal["auto", "flash", "cudnn", "efficient", "math"] = "auto"
    """Attention kernel to try first (PyTorch's scaled_dot_product_attention backends); auto leaves the choice
    to PyTorch."""
    seed: int = 0
    device: str = "auto"
    """auto (cuda when available), cpu or cuda."""
    max_nonfinite_steps: int = 5
    """Stop after this many steps in a row with a non-finite loss or gradient."""


@dataclass
class ParallelSection:
    dp_replicate: int = 1
    """Data-parallel replicas (DDP, or HSDP's replicate dimension when dp_shard > 1)."""
    dp_shard: int = -1
    """FSDP2 shard group size; -1 takes the ranks left over by dp_replicate and tp."""
    tp: int = 1
    """Tensor-parallel degree."""


@dataclass
class CheckpointSection:
    interval: int = 1000
    """Save every this many steps (and at the end); 0 disables saving."""
    keep: int = 3
    """Keep the last K checkpoints."""
    resume: bool = True
    """Resume from the newest complete checkpoint in run_dir when there is one."""


@dataclass
class MetricsSection:
    log_interval: int = 10
    val_interval: int = 0
    """Validation loss every this many steps (0: only at the end, if data.val is set)."""
    val_batches: int = 8
    peak_tflops: float = 0.0
    """Peak dense bf16 TFLOP/s per device for MFU; 0 detects it from the GPU name."""
    device_power_w: float = 400.0
    """Power per device when NVML cannot measure it (the paper's assumption: 400 W)."""
    pue: float = 1.1
    co2_t_per_mwh: float = 0.385
    tensorboard: bool = True
    progress: bool = True


@dataclass
class JobConfig:
    job: JobSection = field(default_factory=JobSection)
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optimizer: OptimizerSection = field(default_factory=OptimizerSection)
    training: TrainingSection = field(default_factory=TrainingSection)
    parallel: ParallelSection = field(default_factory=ParallelSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["model"] = {"preset": self.model.preset, **self.model.overrides}
        return out

    def model_args(self):
        """The preset with the [model] overrides, built through `ModelArgs.from_dict`: every field's type and
        range checked (a rope_scaling table becomes RopeScaling), one ConfigError naming a bad one."""
        from camelid.model.args import ModelArgs, preset

        values = {**preset(self.model.preset).to_dict(), **self.model.overrides}
        return ModelArgs.from_dict(values, source="[model]")

    def validate(self) -> None:
        """The whole job, as far as it can be checked before any process group starts or any file is read (the
        Trainer calls it first; `load_config` checks the [model] table, since overrides may still follow)."""
        args = self.model_args()
        if self.data.seq_len > args.max_seq_len:
            raise ConfigError(
                f"data.seq_len ({self.data.seq_len}) exceeds the model's max_seq_len ({args.max_seq_len})"
            )
        for i, src in enumerate(self.data.train):
            if set(src) - {"path", "weight"} or not isinstance(src.get("path"), str):
                raise ConfigError(f"data.train[{i}] must be {{path = ..., weight = ...}}, got {src!r}")
            check_value(f"data.train[{i}].weight", src.get("weight", 1.0), float)


# Paths a config file gives are relative to the file (as a data recipe's are); command-line overrides are
# relative to the working directory, like any path typed in a shell.
_PATHS = ("job.run_dir", "data.val", "data.tokenizer")


def _resolve_paths(cfg: JobConfig, base: Path, given: set[str]) -> None:
    def rebase(p: str) -> str:
        return p if not p or Path(p).is_absolute() else os.path.normpath(base / p)

    for key in _PATHS:
        if key not in given:
            continue
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        setattr(getattr(cfg, section), name, [rebase(v) for v in value] if isinstance(value, list) else rebase(value))
    if "data.train" in given:
        for src in cfg.data.train:
            if isinstance(src.get("path"), str):
                src["path"] = rebase(src["path"])


def check_value(key: str, value: Any, tp: Any) -> Any:
    """`value` checked against type `tp` (bool, int, float, str, Literal, list, list[X], dict), named `key` in the
    error: the one checker of job configs and data recipes."""
    origin = typing.get_origin(tp)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if tp is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    if origin is Literal:
        if value not in typing.get_args(tp):
            choices = ", ".join(repr(c) for c in typing.get_args(tp))
            raise ConfigError(f"{key} must be one of {choices}, got {value!r}")
        return value
    if origin is list or tp is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        if tp is list:
            return value
        (item,) = typing.get_args(tp)
        return [check_value(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a table, got {value!r}")
        return value
    raise AssertionError(f"unhandled config type {tp}")


def _set(cfg: JobConfig, key: str, value: Any) -> None:
    section_name, _, name = key.partition(".")
    sections = {f.name for f in dataclasses.fields(JobConfig)}
    if section_name not in sections or not name:
        raise ConfigError(f"unknown config key {key!r}; sections: {', '.join(sorted(sections))}")
    section = getattr(cfg, section_name)
    if section_name == "model" and name != "preset":
        from camelid.model.args import ModelArgs

        fields = {f.name for f in dataclasses.fields(ModelArgs)}
        if name not in fields:
            raise ConfigError(f"unknown config key {key!r}; [model] takes 'preset' and ModelArgs fields")
        section.overrides[name] = value
        return
    hints = typing.get_type_hints(type(section))
    if name not in hints or name == "overrides":
        valid = ", ".join(f"{section_name}.{n}" for n in hints if n != "overrides")
        raise ConfigError(f"unknown config key {key!r}; valid keys: {valid}")
    setattr(section, name, check_value(key, value, hints[name]))


def _parse_cli_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw  # a bare string


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> JobConfig:
    """Read a TOML job config (its paths relative to the file), apply `--section.key value` overrides in order,
    and check the whole job, the model's shape included."""
    cfg = JobConfig()
    if path is not None:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path} is not valid TOML: {e}") from None
        for section, table in data.items():
            if not isinstance(table, dict):
                raise ConfigError(f"{path}: top-level key {section!r} must be a [section]")
            for name, value in table.items():
                _set(cfg, f"{section}.{name}", value)
        _resolve_paths(cfg, path.parent, {f"{s}.{n}" for s, t in data.items() for n in t})
    args = list(overrides or [])
    while args:
        flag = args.pop(0)
        if not flag.startswith("--") or "." not in flag:
            raise ConfigError(f"unexpected argument {flag!r}; overrides look like --section.key value")
        key, eq, raw = flag[2:].partition("=")
        if not eq:
            if not args:
                raise ConfigError(f"override {flag} needs a value")
            raw = args.pop(0)
        _set(cfg, key.replace("-", "_"), _parse_cli_value(raw))
    cfg.model_args()  # the [model] table's types and ranges, now; the whole job again when a Trainer starts
    return cfg
