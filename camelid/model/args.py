"""Model hyper-parameters (`ModelArgs`) and the named presets of the LLaMA family."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from camelid.errors import ConfigError

ROPE_TYPES = ("llama3", "linear")


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"model.{name} must be a positive integer, got {value!r}")


def _positive_number(name: str, value: Any) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if not ok:
        raise ConfigError(f"model.{name} must be a positive number, got {value!r}")


@dataclass(frozen=True)
class RopeScaling:
    """RoPE scaling: Llama 3.1's frequency-dependent rule (Meta's `apply_scaling`, `rope_type` "llama3") or
    linear position interpolation (every frequency divided by `factor`, `rope_type` "linear")."""

    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_seq_len: int = 8192
    rope_type: str = "llama3"

    def __post_init__(self) -> None:
        if self.rope_type not in ROPE_TYPES:
            raise ConfigError(f"model.rope_scaling.rope_type {self.rope_type!r} is not one of {', '.join(ROPE_TYPES)}")
        for name in ("factor", "low_freq_factor", "high_freq_factor"):
            _positive_number(f"rope_scaling.{name}", getattr(self, name))
        if self.rope_type == "llama3" and not self.high_freq_factor > self.low_freq_factor:
            raise ConfigError(
                f"model.rope_scaling.high_freq_factor ({self.high_freq_factor}) must exceed low_freq_factor "
                f"({self.low_freq_factor})"
            )
        _positive_int("rope_scaling.original_max_seq_len", self.original_max_seq_len)


@dataclass(frozen=True)
class ModelArgs:
    """Shape of a LLaMA-architecture decoder. Field names follow Meta's params.json."""

    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int | None = None
    vocab_size: int = 32000
    multiple_of: int = 256
    ffn_dim_multiplier: float | None = None
    # Explicit FFN width for models whose width does not follow Meta's rounding rule (SmolLM2, TinyLlama).
    hidden_dim: int | None = None
    head_dim: int | None = None
    norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    max_seq_len: int = 2048
    tie_embeddings: bool = False

    def __post_init__(self) -> None:
        """Every field checked for its type and range, so a bad value is one error naming it, wherever the value
        came from (a preset override, a checkpoint's config, a GGUF header)."""
        for name in ("dim", "n_layers", "n_heads", "vocab_size", "multiple_of", "max_seq_len"):
            _positive_int(name, getattr(self, name))
        for name in ("n_kv_heads", "hidden_dim", "head_dim"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        for name in ("norm_eps", "rope_theta"):
            _positive_number(name, getattr(self, name))
        if self.ffn_dim_multiplier is not None:
            _positive_number("ffn_dim_multiplier", self.ffn_dim_multiplier)
        if not isinstance(self.tie_embeddings, bool):
            raise ConfigError(f"model.tie_embeddings must be true or false, got {self.tie_embeddings!r}")
        if self.rope_scaling is not None and not isinstance(self.rope_scaling, RopeScaling):
            raise ConfigError(f"model.rope_scaling must be a table of RoPE scaling fields, got {self.rope_scaling!r}")
        if self.head_dim is None and self.dim % self.n_heads:
            raise ConfigError(f"model.dim ({self.dim}) must be divisible by model.n_heads ({self.n_heads})")
        if self.kv_heads <= 0 or self.n_heads % self.kv_heads:
            raise ConfigError(
                f"model.n_heads ({self.n_heads}) must be a multiple of model.n_kv_heads ({self.kv_heads})"
            )
        if self.head_size % 2:
            raise ConfigError(f"head dimension must be even for RoPE, got {self.head_size}")

    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def head_size(self) -> int:
        return self.head_dim if self.head_dim is not None else self.dim // self.n_heads

    @property
    def ffn_hidden(self) -> int:
        """SwiGLU width: Meta's rule, 2/3 of 4d, times ffn_dim_multiplier, rounded up to multiple_of."""
        if self.hidden_dim is not None:
            return self.hidden_dim
        hidden = int(2 * 4 * self.dim / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return self.multiple_of * math.ceil(hidden / self.multiple_of)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def canonical(self) -> ModelArgs:
        """The same model written one way: derived sizes explicit (FFN width, kv heads), so two configs that
        build identical models compare equal whatever rule each used to state its sizes."""
        return dataclasses.replace(
            self,
            n_kv_heads=self.kv_heads,
            multiple_of=256,
            ffn_dim_multiplier=None,
            hidden_dim=self.ffn_hidden,
            head_dim=None if self.head_size * self.n_heads == self.dim else self.head_size,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> ModelArgs:
        """Strict: every field must be present and no unknown key may appear."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: the model section must be a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{source}: unknown model key {unknown[0]!r}; valid keys: {', '.join(sorted(names))}")
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in data]
        if missing:
            raise ConfigError(f"{source}: missing model key {missing[0]!r}")
        values = dict(data)
        if values["rope_scaling"] is not None:
            try:
                values["rope_scaling"] = RopeScaling(**values["rope_scaling"])
            except TypeError as e:
                raise ConfigError(f"{source}: bad model.rope_scaling {values['rope_scaling']!r}: {e}") from None
        return cls(**values)

    def replace(self, **changes: Any) -> ModelArgs:
        return dataclasses.replace(self, **changes)


def _paper(dim: int, n_heads: int, n_layers: int) -> ModelArgs:
    return ModelArgs(dim=dim, n_heads=n_heads, n_layers=n_layers, norm_eps=1e-6, max_seq_len=2048)


def _llama2(dim: int, n_heads: int, n_layers: int, **kw: Any) -> ModelArgs:
    return ModelArgs(dim=dim, n_heads=n_heads, n_layers=n_layers, norm_eps=1e-5, max_seq_len=4096, **kw)


def _llama3(dim: int, n_heads: int, n_layers: int, multiple_of: int, **kw: Any) -> ModelArgs:
    return ModelArgs(
        dim=dim,
        n_heads=n_heads,
        n_kv_heads=8,
        n_layers=n_layers,
        vocab_size=128256,
        multiple_of=multiple_of,
        ffn_dim_multiplier=1.3,
        norm_eps=1e-5,
        rope_theta=500000.0,
        **kw,
    )


PRESETS: dict[str, ModelArgs] = {
    # The paper's four sizes (Table 2); parameter counts are pinned in tests against shared/SPEC.md.
    "llama-7b": _paper(4096, 32, 32),
    "llama-13b": _paper(5120, 40, 40),
    "llama-33b": _paper(6656, 52, 60),
    "llama-65b": _paper(8192, 64, 80),
    "llama2-7b": _llama2(4096, 32, 32),
    "llama2-13b": _llama2(5120, 40, 40),
    "llama2-70b": _llama2(8192, 64, 80, n_kv_heads=8, multiple_of=4096, ffn_dim_multiplier=1.3),
    "llama3-8b": _llama3(4096, 32, 32, multiple_of=1024, max_seq_len=8192),
    "llama3-70b": _llama3(8192, 64, 80, multiple_of=4096, max_seq_len=8192),
    "llama3.1-8b": _llama3(4096, 32, 32, multiple_of=1024, max_seq_len=131072, rope_scaling=RopeScaling()),
    # Small sizes: `debug` for unit tests, `tiny` trains on a laptop CPU, the rest are GPU-sized.
    "debug": ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=512, multiple_of=32, max_seq_len=256),
    "tiny": ModelArgs(dim=384, n_layers=6, n_heads=6, vocab_size=8192, multiple_of=128, max_seq_len=512),
    "125m": ModelArgs(dim=768, n_layers=12, n_heads=12, max_seq_len=2048),
    "350m": ModelArgs(dim=1024, n_layers=24, n_heads=16, max_seq_len=2048),
    "1b": ModelArgs(dim=2048, n_layers=22, n_heads=16, max_seq_len=2048),
}


def preset(name: str) -> ModelArgs:
    """The named preset; an unknown name raises a ConfigError that lists the valid ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown model preset {name!r}; valid presets: {', '.join(PRESETS)}") from None


def param_count(args: ModelArgs) -> int:
    """Exact number of parameters, counted from the tensor shapes (tied embeddings counted once)."""
    d, hd, h = args.dim, args.head_size, args.ffn_hidden
    attn = d * args.n_heads * hd * 2 + d * args.kv_heads * hd * 2
    per_layer = attn + 3 * d * h + 2 * d
    embed = args.vocab_size * d * (1 if args.tie_embeddings else 2)
    return args.n_layers * per_layer + embed + d


__all__ = ["PRESETS", "ModelArgs", "RopeScaling", "param_count", "preset"]
