"""`camelid convert SRC DST --to FORMAT`: any supported checkpoint (or a training checkpoint) to any release
format, carrying the whole release: weights, tokenizer, special ids, chat template, metadata."""

from __future__ import annotations

from pathlib import Path

from camelid.formats import read, write
from camelid.lazy import torch


def convert(
    src: str | Path,
    dst: str | Path,
    to: str = "camelid",
    dtype: torch.dtype | None = None,
    shards: int | None = None,
    quant: str | None = None,
) -> Path:
    release = read(src, dtype, quant="none").to(dtype)  # packed weights are for `camelid quantize`
    return write(release, dst, to, shards=shards, quant=quant)


QUANTIZE_TO = ("q8_0", "q4_0", "q4_1", "int8", "int4")
"""GGUF block types (a .gguf file llama.cpp runs) and camelid's packed layouts (a camelid directory)."""


def quantize(src: str | Path, dst: str | Path, to: str, group_size: int | None = None) -> Path:
    """`camelid quantize SRC DST --to TYPE`: any supported checkpoint to a quantized release. q8_0 / q4_0 / q4_1
    write a GGUF (matrices whose rows are not a multiple of 32 stay F16, with a notice); int8 / int4 write
    camelid's format with the weights packed (in groups of `group_size`, default 32; int8 also 0 = per channel)."""
    from camelid.errors import ConfigError

    if to not in QUANTIZE_TO:
        raise ConfigError(f"cannot quantize to {to!r}; choose one of {', '.join(QUANTIZE_TO)}")
    if to.startswith("q"):
        if group_size not in (None, 32):
            raise ConfigError(f"GGUF's {to.upper()} has blocks of 32 weights; --group-size {group_size} applies to "
                              "int8 / int4 only")  # fmt: skip
        release = read(src, quant="none")
        return write(release, dst, "gguf", quant=to.upper())
    release = read(src, quant=to, group_size=group_size)
    return write(release, dst, "camelid")
