"""A static key/value cache: fixed shapes, so the decode step compiles once and replays.

Rows are independent sequences, each at its own position (a continuous-batching server keeps a pool of rows
and fills them as requests come): writes take one position per row and token.
"""

from __future__ import annotations

import torch


class KVCache(torch.nn.Module):
    """Keys and values for `batch` rows of up to `max_len` positions, (B, n_kv_heads, S, head_dim)."""

    def __init__(
        self, batch: int, n_kv_heads: int, max_len: int, head_dim: int, dtype: torch.dtype, device: torch.device
    ) -> None:
        super().__init__()
        shape = (batch, n_kv_heads, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(
        self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rows: slice | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, n_kv, T, hd) of rows `rows` (a slice of the cache's rows; all by default) at their
        positions `input_pos` (B, T); return those rows of the cache, (B, n_kv, S, hd), views (nothing copied)."""
        kc, vc = (self.k, self.v) if rows is None else (self.k[rows], self.v[rows])
        # an index_put_ (not scatter_): torch.compile writes it in place, where a scatter_ on a buffer becomes a
        # copy of the whole cache every step (measured: decode speed falling with the cache's length)
        batch = torch.arange(k.shape[0], device=k.device)[:, None]
        kc[batch, :, input_pos] = k.transpose(1, 2).to(kc.dtype)  # (B, T, n_kv, hd) into slots (b, :, pos)
        vc[batch, :, input_pos] = v.transpose(1, 2).to(vc.dtype)
        return kc, vc
