"""Token shards: datatrove's tokenized-file layout, which the trainer reads by mmap.

A shard `NAME.ds` is the token ids of its documents back to back, little-endian, 2 bytes each
(uint16) when the vocabulary has at most 65,536 ids and 4 bytes (uint32) otherwise. `NAME.ds.index`
holds each document's end offset in tokens as little-endian uint64. `NAME.ds.metadata` is three text
lines: tokenizer name, token count, the count in words (datatrove writes the same). Each document is
written as `<bos> tokens <eos>`, so packing sequences across documents keeps the separators.

A shard directory holds any number of shards; they are read in file-name order.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from camelid.atomic import write_bytes
from camelid.errors import ConfigError


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


class ShardWriter:
    """Append documents (token id lists) to one shard; `close()` writes the index and metadata."""

    def __init__(self, path: str | Path, vocab_size: int, tokenizer_name: str = "camelid") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dtype = token_dtype(vocab_size)
        self.tokenizer_name = tokenizer_name
        self._tmp = self.path.with_name(f".{self.path.name}.tmp")
        self._f = open(self._tmp, "wb")
        self.ends: list[int] = []
        self.tokens = 0

    def write(self, ids: Sequence[int]) -> None:
        arr = np.asarray(ids, dtype=self.dtype)
        self._f.write(arr.tobytes())
        self.tokens += len(arr)
        self.ends.append(self.tokens)

    def close(self) -> None:
        self._f.close()
        os.replace(self._tmp, self.path)
        write_bytes(self.path.with_name(self.path.name + ".index"), np.asarray(self.ends, dtype="<u8").tobytes())
        meta = f"{self.tokenizer_name}\n{self.tokens}\n{_words(self.tokens)}"
        write_bytes(self.path.with_name(self.path.name + ".metadata"), meta.encode())

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _words(n: int) -> str:
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}T"
    return f"{n} T"


def write_documents(path: str | Path, docs: Iterable[Sequence[int]], vocab_size: int, name: str = "camelid") -> int:
    """Write one shard from an iterable of token lists; returns its token count."""
    with ShardWriter(path, vocab_size, name) as w:
        for d in docs:
            w.write(d)
    return w.tokens


@dataclass
class Shard:
    path: Path
    tokens: np.ndarray  # 1-D memmap
    ends: np.ndarray  # document ends, uint64

    @property
    def n_docs(self) -> int:
        return len(self.ends)


def open_shard(path: str | Path) -> Shard:
    path = Path(path)
    index = path.with_name(path.name + ".index")
    if not index.is_file():
        raise ConfigError(f"token shard {path} has no index file {index.name}")
    ends = np.fromfile(index, dtype="<u8")
    total = int(ends[-1]) if len(ends) else 0
    size = path.stat().st_size
    if total == 0:
        return Shard(path, np.zeros(0, dtype="<u2"), ends)
    if size % total or size // total not in (2, 4):
        raise ConfigError(f"token shard {path}: {size} bytes do not hold the {total} tokens its index lists")
    dtype = np.dtype("<u2") if size // total == 2 else np.dtype("<u4")
    return Shard(path, np.memmap(path, dtype=dtype, mode="r"), ends)


def open_dir(path: str | Path) -> list[Shard]:
    """All non-empty shards of a directory, in file-name order."""
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(
            f"data directory {path} does not exist; make token shards with `camelid data prepare RECIPE.toml` "
            "(configs/data/llama.toml writes data/shards/), or, after `make demo`, train its job: "
            "`camelid train quickstart-out/config.toml`"
        )
    shards = [open_shard(p) for p in sorted(path.glob("*.ds"))]
    shards = [s for s in shards if len(s.tokens)]
    if not shards:
        raise ConfigError(f"data directory {path} holds no token shards (*.ds with *.ds.index)")
    return shards
