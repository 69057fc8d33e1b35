"""`camelid convert SRC DST --to FORMAT`: any supported checkpoint (or a training checkpoint) to any release
format, carrying the whole release: weights, tokenizer, special ids, chat template, metadata."""

from __future__ import annotations

from pathlib import Path

import torch

from camelid.formats import read, write


def convert(
    src: str | Path,
    dst: str | Path,
    to: str = "camelid",
    dtype: torch.dtype | None = None,
    shards: int | None = None,
    quant: str | None = None,
) -> Path:
    release = read(src, dtype).to(dtype)
    return write(release, dst, to, shards=shards, quant=quant)
