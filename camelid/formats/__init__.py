"""Release formats: one `Format` protocol, a registry, and `load` / `read` / `convert` over any of them.

Each format (camelid's own, Hugging Face, Meta, GGUF, and camelid's training checkpoints, which register
from `camelid.train`) detects its files, reads them into a `Release` and writes a `Release` back, carrying
everything it can express and refusing in one line what it cannot. A format is a module of this package
with a module-level `FORMAT`, or an entry point in the `camelid.formats` group (`pyproject.toml`).
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from camelid.defaults import DEFAULT_MODEL, EMBEDDED
from camelid.errors import CheckpointError
from camelid.formats.release import Release, SpecialTokens, canonical_state, check_vocab
from camelid.lazy import torch
from camelid.model.args import ModelArgs

log = logging.getLogger(__name__)


class Format(Protocol):
    name: str
    priority: int
    """Detection order: lower first (a GGUF file before directories; camelid's config.json before HF's)."""
    options: tuple[str, ...]
    """Keyword options `write` takes (`shards`, `quant`, ...)."""

    def detect(self, path: Path) -> bool: ...

    def read_args(self, path: Path) -> ModelArgs: ...

    def read(self, path: Path, dtype: torch.dtype | None = None, quant: str | None = None) -> Release:
        """`quant` (None, "none", "int8", "int4") is a hint a format may use to pack while reading; `read()` below
        makes the result what was asked for."""

    def write(self, release: Release, path: Path, **options: Any) -> Path: ...


_REGISTRY: dict[str, Format] = {}
_discovered = False


def register(fmt: Format) -> Format:
    _REGISTRY[fmt.name] = fmt
    return fmt


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "FORMAT"):
            register(module.FORMAT)
    from importlib.metadata import entry_points

    for ep in entry_points(group="camelid.formats"):
        try:
            register(ep.load())
        except Exception as e:  # a broken plugin must not take the built-in formats down with it
            log.warning("format plugin %s could not be loaded: %s", ep.value, e)


def formats() -> list[Format]:
    """The registered formats in detection order."""
    _discover()
    return sorted(_REGISTRY.values(), key=lambda f: f.priority)


def get_format(name: str) -> Format:
    _discover()
    if name not in _REGISTRY:
        raise CheckpointError(f"unknown format {name!r}; camelid writes {', '.join(f.name for f in formats())}")
    return _REGISTRY[name]


def resolve(name_or_path: str | Path) -> Path:
    """A path on disk for a model name or path; embedded names are found without importing their package."""
    name = str(name_or_path)
    if name in EMBEDDED:
        from camelid.package_data import package_file

        return package_file(*EMBEDDED[name])
    return Path(name_or_path)


def find_format(path: Path) -> Format:
    if not path.exists():
        raise CheckpointError(f"model path {path} does not exist")
    for fmt in formats():
        if fmt.detect(path):
            return fmt
    if path.is_file():
        raise CheckpointError(f"{path} is a file of unknown format; give a .gguf file or a checkpoint directory")
    raise CheckpointError(
        f"{path} is not a model: expected config.json (camelid or Hugging Face), params.json (Meta) or a .gguf file"
    )


def detect_format(path: str | Path) -> str:
    return find_format(resolve(path)).name


def read_args(path: str | Path) -> tuple[str, ModelArgs]:
    """The format and model shape of a checkpoint, without reading its weights."""
    path = resolve(path)
    fmt = find_format(path)
    return fmt.name, fmt.read_args(path)


QUANT = ("none", "int8", "int4")


def read(
    path: str | Path, dtype: torch.dtype | None = None, quant: str | None = None, group_size: int | None = None
) -> Release:
    """The whole release of any supported checkpoint: weights (checked against the config), tokenizer, special
    ids, chat template, generation defaults and metadata.

    `quant`: None keeps the weights as the file holds them (a quantized GGUF or camelid checkpoint stays packed
    where its type maps onto camelid's int8 / int4 layouts); "none" makes every weight dense; "int8" / "int4"
    packs every matrix, in groups of `group_size` (default 32; int8 also 0 = one scale per channel)."""
    if quant is not None and quant not in QUANT:
        raise CheckpointError(f"unknown quantization {quant!r}; choose one of {', '.join(QUANT)}")
    bits = {"int8": 8, "int4": 4}.get(quant or "")
    if bits:
        from camelid.transforms.quant_weight import check_group_size, default_group_size

        group = default_group_size(bits, group_size)
        check_group_size(bits, group)
    elif group_size is not None:
        raise CheckpointError(f"a group size ({group_size}) applies to int8 / int4 only, not to quant={quant!r}")
    path = resolve(path)
    fmt = find_format(path)
    # a format packs while reading in groups of 32 only (GGUF's blocks); other layouts quantize dense weights
    release = fmt.read(path, dtype, quant if not bits or group == 32 else "none")
    if quant == "none":
        release = release.dense()
    elif bits:
        from camelid.transforms.quant_weight import layout_for

        packed_as_asked = release.quantized and all(
            (qw.bits, qw.group_size) == layout_for(name, bits, group, qw.shape[1])
            for name, qw in release.quantized.items()
        )
        if not packed_as_asked:  # dense, or packed otherwise
            release = release.quantize(bits, group)
    if release.args.tie_embeddings:
        release.quantized.pop("output.weight", None)  # a tied model's embedding stands for it
    release.state = canonical_state(release.args, release.state, path, release.quantized)
    check_vocab(release.args, release.tokenizer, path)
    release.format, release.source = fmt.name, path
    return release


@dataclass
class LoadedModel:
    """A model ready to run, with the release it came from; the release's fields (tokenizer, args,
    chat_template, format, source, ...) read through as attributes."""

    model: torch.nn.Module
    release: Release

    def __getattr__(self, name: str) -> Any:
        if name == "release":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.release, name)


def load(
    path: str | Path,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    quant: str | None = None,
    group_size: int | None = None,
) -> LoadedModel:
    """Load a model and its tokenizer from any supported checkpoint, detecting the format (`quant` as in `read`).
    The weights then live in the model only: the release keeps the rest (tokenizer, template, metadata)."""
    from camelid.memory import trim

    if quant in ("int8", "int4"):
        from camelid.transforms.quantize import require_kernel

        require_kernel(quant, group_size, device)  # asked for by name: a missing kernel is an error, not a fallback
    release = read(path, dtype, quant, group_size)
    trim()  # what reading left in the heap, before the model is built
    model = release.build_model(dtype, device, consume=True)
    release.state, release.quantized = {}, {}
    return LoadedModel(model, release)


def write(release: Release, path: str | Path, to: str, **options: Any) -> Path:
    """Write `release` in format `to`; options a format does not take are refused."""
    fmt = get_format(to)
    for key, value in options.items():
        if value is not None and key not in fmt.options:
            raise CheckpointError(f"option {key}={value!r} does not apply to the {to} format")
    if release.quantized and not getattr(fmt, "holds_quantized", False):
        release = release.dense()  # this format holds dense weights only
    return fmt.write(release, Path(path), **{k: v for k, v in options.items() if v is not None})


__all__ = [
    "DEFAULT_MODEL",
    "EMBEDDED",
    "Format",
    "LoadedModel",
    "Release",
    "SpecialTokens",
    "detect_format",
    "formats",
    "get_format",
    "load",
    "read",
    "read_args",
    "register",
    "resolve",
    "write",
]
