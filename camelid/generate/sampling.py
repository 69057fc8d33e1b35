"""Next-token choice, for a whole batch at once and inside a compiled step: greedy at temperature 0, else
temperature, top-k and top-p (nucleus) sampling, each row with its own parameters and its own seed.

Randomness is counter-based (a hash of the row's seed, its step and the token id, then Gumbel-max), so a row's
samples depend only on its seed and step: the same whether it runs alone or in a batch, and no host-side
generator is touched (the process-wide RNG never is).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from camelid.defaults import DEFAULT_TEMPERATURE, DEFAULT_TOP_P
from camelid.errors import InputError


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = DEFAULT_TEMPERATURE
    top_k: int | None = None
    top_p: float = DEFAULT_TOP_P

    def __post_init__(self) -> None:
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
            raise InputError(f"temperature must be a number >= 0, got {t!r}")
        k = self.top_k
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise InputError(f"top_k must be an integer >= 1, got {k!r}")
        p = self.top_p
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or not 0 < p <= 1:
            raise InputError(f"top_p must be in (0, 1], got {p!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def filtered(self) -> bool:
        return not self.greedy and (self.top_k is not None or self.top_p < 1)


GREEDY = SamplingParams(temperature=0.0, top_p=1.0)


def fresh_seed() -> int:
    """A seed for an unseeded call, from the OS: the process-wide RNG is neither read nor reseeded."""
    return int.from_bytes(os.urandom(4), "little")


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (in int64 arithmetic, so no overflow): lowbias32."""
    m = 0xFFFFFFFF
    x = x & m
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & m
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & m
    return x ^ (x >> 16)


def uniform(seed: torch.Tensor, counter: torch.Tensor, n: int) -> torch.Tensor:
    """(B, n) floats in (0, 1), a function of each row's (seed, counter) and the column only."""
    col = torch.arange(n, device=seed.device, dtype=torch.int64)
    x = _mix(_mix(seed[:, None] * 0x9E3779B1 + counter[:, None]) + col[None, :] * 0x85EBCA77)
    return (x.to(torch.float32) + 0.5) * (1.0 / 4294967296.0)


def sample_rows(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    seed: torch.Tensor,
    counter: torch.Tensor,
    filtered: bool | None,
) -> torch.Tensor:
    """Token ids (B,) from logits (B, V): per row, greedy where temperature is 0; else the logits divided by the
    temperature, restricted to the top_k likeliest (0: no limit) and then to the smallest prefix holding top_p of
    the probability, sampled by Gumbel-max with the row's counter-based noise. `filtered` (static, so a compiled
    step has one graph per case) skips the sort when no row restricts; None means every row is greedy."""
    logits = logits.float()
    greedy = logits.argmax(dim=-1)
    if filtered is None:  # every row greedy (static): no noise to draw
        return greedy
    scaled = logits / temperature.clamp(min=1e-6)[:, None]
    if filtered:
        vocab = logits.shape[-1]
        ordered, order = scaled.sort(dim=-1, descending=True)
        ranks = torch.arange(vocab, device=logits.device)[None, :]
        ordered = ordered.masked_fill((top_k[:, None] > 0) & (ranks >= top_k[:, None]), float("-inf"))
        probs = torch.softmax(ordered, dim=-1)
        drop = probs.cumsum(dim=-1) - probs >= top_p[:, None]  # the first token is always kept
        ordered = ordered.masked_fill(drop, float("-inf"))
        scaled = torch.full_like(scaled, float("-inf")).scatter(-1, order, ordered)
    u = uniform(seed, counter, logits.shape[-1])
    sampled = (scaled - torch.log(-torch.log(u))).argmax(dim=-1)
    return torch.where(temperature == 0, greedy, sampled)


def batch_mode(params: list[SamplingParams]) -> bool | None:
    """`sample_rows`'s static case for a batch: None if every row is greedy, else whether any row filters."""
    if all(p.greedy for p in params):
        return None
    return any(p.filtered for p in params)


def row_tensors(params: list[SamplingParams], seeds: list[int], device) -> tuple[torch.Tensor, ...]:
    """The per-row tensors `sample_rows` takes."""
    t = torch.tensor([p.temperature for p in params], dtype=torch.float32, device=device)
    k = torch.tensor([p.top_k or 0 for p in params], dtype=torch.int64, device=device)
    p_ = torch.tensor([p.top_p for p in params], dtype=torch.float32, device=device)
    s = torch.tensor([x & 0xFFFFFFFF for x in seeds], dtype=torch.int64, device=device)
    return t, k, p_, s


def sample(logits: torch.Tensor, params: SamplingParams, seed: int = 0, counter: int = 0) -> torch.Tensor:
    """Token ids (B,) from logits (B, V) with one set of parameters for every row (a convenience over
    `sample_rows`)."""
    b = logits.shape[0]
    t, k, p, s = row_tensors([params] * b, [seed] * b, logits.device)
    c = torch.full((b,), counter, dtype=torch.int64, device=logits.device)
    mode = None if params.greedy else params.filtered
    return sample_rows(logits, t, k, p, s + torch.arange(b, device=logits.device), c, mode)
