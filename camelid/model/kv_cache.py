"""A static key/value cache: fixed shapes, so the decode step compiles once and replays."""

from __future__ import annotations

import torch


class KVCache(torch.nn.Module):
    """Keys and values for `batch` sequences of up to `max_len` positions, (B, n_kv_heads, S, head_dim)."""

    def __init__(
        self, batch: int, n_kv_heads: int, max_len: int, head_dim: int, dtype: torch.dtype, device: torch.device
    ) -> None:
        super().__init__()
        shape = (batch, n_kv_heads, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, n_kv, T, hd) at slots `input_pos` (T,) and return the whole cache."""
        self.k.index_copy_(2, input_pos, k.to(self.k.dtype))
        self.v.index_copy_(2, input_pos, v.to(self.v.dtype))
        return self.k, self.v
