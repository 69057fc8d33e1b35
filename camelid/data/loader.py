"""The training data loader: packed windows from mmap'd token shards, mixed by weights, exactly resumable.

Each source (a shard directory) is cut into windows of `seq_len + 1` tokens (stride `seq_len`), so
sequences pack documents back to back with their `<bos>`/`<eos>` separators. Global sample `g` picks
its source by a counter-based hash of (seed, g) against the mixture weights, then takes the source's
next window in an order shuffled per epoch by a keyed bijection (a Feistel network, O(1) memory).
Nothing depends on hidden RNG state: the loader's whole state is the sample counter and the number of
windows each source has given, which the checkpoint stores. Every rank walks the same global sequence
and reads only its own slice of each batch, so ranks see disjoint data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from camelid.data.shards import Shard, open_dir
from camelid.errors import ConfigError

_MASK64 = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64: a fixed, platform-independent 64-bit hash."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def permute(i: int, n: int, key: int) -> int:
    """The image of i under a keyed bijection of range(n): a 4-round Feistel network with cycle walking."""
    if n <= 1:
        return 0
    half = max(1, ((n - 1).bit_length() + 1) // 2)
    mask = (1 << half) - 1
    x = i
    while True:
        left, right = x >> half, x & mask
        for r in range(4):
            left, right = right, left ^ (_mix(key ^ (right << 8) ^ r) & mask)
        x = (left << half) | right
        if x < n:
            return x


@dataclass
class Source:
    path: Path
    weight: float
    shards: list[Shard]
    starts: np.ndarray  # first window index of each shard

    @property
    def n_windows(self) -> int:
        return int(self.starts[-1])


class TokenLoader:
    def __init__(self, sources: list[tuple[str | Path, float]], seq_len: int, seed: int = 0) -> None:
        if not sources:
            raise ConfigError("data.train is empty; give at least one {path = ..., weight = ...}")
        self.seq_len = seq_len
        self.seed = seed
        self.sources: list[Source] = []
        for path, weight in sources:
            if not weight > 0:
                raise ConfigError(f"data.train weight for {path} must be > 0, got {weight}")
            shards = open_dir(path)
            counts = [max(0, (len(s.tokens) - 1) // seq_len) for s in shards]
            if sum(counts) == 0:
                raise ConfigError(f"data directory {path} has fewer than {seq_len + 1} tokens per shard")
            self.sources.append(Source(Path(path), float(weight), shards, np.cumsum([0, *counts])))
        total = sum(s.weight for s in self.sources)
        self.cum_weights = np.cumsum([s.weight / total for s in self.sources])
        self.sample = 0
        self.consumed = [0] * len(self.sources)

    def fingerprint(self) -> str:
        h = hashlib.sha256(f"{self.seq_len}:{self.seed}".encode())
        for s in self.sources:
            h.update(f"{s.path}:{s.weight}:{s.n_windows}".encode())
        return h.hexdigest()[:16]

    def _choose(self, g: int) -> int:
        if len(self.sources) == 1:
            return 0
        u = _mix(_mix(self.seed) ^ g) / 2.0**64
        return min(int(np.searchsorted(self.cum_weights, u, side="right")), len(self.sources) - 1)

    def _window(self, s: int, k: int) -> np.ndarray:
        src = self.sources[s]
        n = src.n_windows
        epoch, i = divmod(k, n)
        w = permute(i, n, _mix(self.seed * 1_000_003 + s * 7919 + epoch))
        shard_idx = int(np.searchsorted(src.starts, w, side="right")) - 1
        offset = (w - int(src.starts[shard_idx])) * self.seq_len
        return np.asarray(src.shards[shard_idx].tokens[offset : offset + self.seq_len + 1], dtype=np.int64)

    def next_batch(self, global_size: int, start: int, count: int) -> np.ndarray:
        """Advance by `global_size` samples; return samples [start, start + count) of them, (count, seq_len + 1)."""
        out = []
        for j in range(global_size):
            s = self._choose(self.sample)
            if start <= j < start + count:
                out.append(self._window(s, self.consumed[s]))
            self.consumed[s] += 1
            self.sample += 1
        return np.stack(out) if out else np.zeros((0, self.seq_len + 1), dtype=np.int64)

    def epochs(self) -> list[float]:
        """Epochs each source has been through so far (the paper's Table 1 column)."""
        return [c / s.n_windows for c, s in zip(self.consumed, self.sources)]

    def state_dict(self) -> dict:
        return {"sample": self.sample, "consumed": list(self.consumed), "fingerprint": self.fingerprint()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("fingerprint") != self.fingerprint():
            raise ConfigError(
                "the training data or data.seq_len changed since the checkpoint was saved; "
                "restore them or start a new run_dir"
            )
        self.sample = int(state["sample"])
        self.consumed = [int(c) for c in state["consumed"]]


def validation_windows(paths: list[str | Path], seq_len: int, limit: int) -> np.ndarray:
    """The first `limit` non-overlapping windows of the held-out directories, in order, (n, seq_len + 1)."""
    out: list[np.ndarray] = []
    for path in paths:
        for shard in open_dir(path):
            n = (len(shard.tokens) - 1) // seq_len
            for i in range(n):
                if len(out) == limit:
                    return np.stack(out)
                out.append(np.asarray(shard.tokens[i * seq_len : i * seq_len + seq_len + 1], dtype=np.int64))
    if not out:
        raise ConfigError(f"validation data {', '.join(map(str, paths))} has no window of {seq_len + 1} tokens")
    return np.stack(out)
