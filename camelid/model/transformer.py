"""The LLaMA decoder: pre-norm RMSNorm, SwiGLU, RoPE, grouped-query SDPA attention.

State-dict names are Meta's (`tok_embeddings`, `layers.N.attention.wq`, ...). Nothing here knows about
torch.distributed: parallelism, activation checkpointing and compile are applied from outside.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from camelid.model.args import ModelArgs
from camelid.model.kv_cache import KVCache
from camelid.model.rope import RotaryEmbedding, apply_rotary


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()  # normalise in fp32 whatever the activation dtype, as Meta's reference does
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


class Attention(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = args.n_heads, args.kv_heads, args.head_size
        self.wq = nn.Linear(args.dim, self.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(args.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(args.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(self.n_heads * self.head_dim, args.dim, bias=False)
        self.kv_cache: KVCache | None = None

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        input_pos: torch.Tensor | None,
        rows: slice | None = None,
        span: int | None = None,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        # -1 heads: under tensor parallelism each rank holds n_heads / tp of them.
        q = self.wq(x).view(B, T, -1, self.head_dim)
        k = self.wk(x).view(B, T, -1, self.head_dim)
        v = self.wv(x).view(B, T, -1, self.head_dim)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hd)
        if input_pos is not None:  # cached attention; a plain forward (training, scoring) leaves the cache alone
            assert self.kv_cache is not None and mask is not None, "input_pos needs a KV cache (setup_caches)"
            k, v = self.kv_cache.update(input_pos, k, v, rows)  # (B, n_kv, S, hd)
            if span is not None:  # only the first `span` slots can be attended to: read no more of the cache
                k, v = k[:, :, :span], v[:, :, :span]
            if T <= DECODE_ROWS:
                out = attend_few(q, k.to(q.dtype), v.to(q.dtype), mask)
                return self.wo(out.transpose(1, 2).reshape(B, T, -1))
        out = F.scaled_dot_product_attention(
            q,
            k.to(q.dtype),
            v.to(q.dtype),
            attn_mask=mask,
            is_causal=mask is None,
            enable_gqa=self.n_kv_heads != self.n_heads,
        )
        return self.wo(out.transpose(1, 2).reshape(B, T, -1))


DECODE_ROWS = 16
"""Queries per row up to which cached attention is two plain matmuls (a decode step) instead of the fused
kernel: measured on the CPU, SDPA's flash kernel spends ~180 us per layer on one query against a 1K cache."""


def attend_few(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked attention of few queries, q (B, H, T, hd) against k, v (B, n_kv, S, hd), mask (B, 1, T, S); the
    query heads sharing a key head go through one matmul (head h reads key head h // (H / n_kv), as SDPA's
    enable_gqa does). Scores and softmax in fp32."""
    B, H, T, D = q.shape
    kv = k.shape[1]
    g = H // kv
    qg = q.reshape(B, kv, g * T, D)
    scores = (qg @ k.transpose(-1, -2)).float() * D**-0.5  # (B, kv, g*T, S)
    m = mask[:, :, None].expand(B, 1, g, T, mask.shape[-1]).reshape(B, 1, g * T, -1)
    p = torch.softmax(scores.masked_fill(~m, float("-inf")), dim=-1).to(v.dtype)
    return (p @ v).reshape(B, H, T, D)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(self, layer_id: int, args: ModelArgs) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.attention = Attention(args)
        self.feed_forward = FeedForward(args.dim, args.ffn_hidden)
        self.attention_norm = RMSNorm(args.dim, args.norm_eps)
        self.ffn_norm = RMSNorm(args.dim, args.norm_eps)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None = None,
        input_pos: torch.Tensor | None = None,
        rows: slice | None = None,
        span: int | None = None,
    ) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), cos, sin, mask, input_pos, rows, span)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    """Token ids (B, T) -> logits (B, T, vocab).

    Plain `model(tokens)` is causal attention over positions 0..T-1 (training, scoring); with `targets` (B, T)
    it returns the per-token cross-entropy (B, T) instead of the logits. With KV caches set up, `input_pos`
    (B, T) gives each row's positions (RoPE, cache slots and the causal mask all follow them) and `rows` which
    rows of the cache the batch is; `logits_at` (B,) keeps only those positions for the output head; `span`
    reads only the cache's first `span` slots (every position of the batch must be below it).
    """

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.args = args
        # values come from init_weights or a checkpoint; skipping nn.Embedding's own normal_() also avoids ~80 MB
        # that normal_ on a meta tensor of this size allocates (PyTorch 2.13)
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim, _weight=torch.empty(args.vocab_size, args.dim))
        self.layers = nn.ModuleList(TransformerBlock(i, args) for i in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
        self.rope = RotaryEmbedding(args)
        self.tie_weights()

    def tie_weights(self) -> None:
        if (
            self.args.tie_embeddings
            and isinstance(self.output, nn.Linear)
            and isinstance(self.tok_embeddings, nn.Embedding)
        ):
            self.output.weight = self.tok_embeddings.weight  # a quantized pair shares its packed weight instead

    def initial_value(self, name: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
        """Initial value of parameter `name`: N(0, 0.02); wo and w2 scaled by 1/sqrt(2 * n_layers); norms 1."""
        if name.endswith("norm.weight"):
            return torch.ones(shape)
        std = 0.02
        if name.endswith(("attention.wo.weight", "feed_forward.w2.weight")):
            std /= math.sqrt(2 * self.args.n_layers)
        return torch.randn(shape, generator=gen, dtype=torch.float32) * std

    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> None:
        """Fill every parameter from a CPU generator seeded with `seed` (same values on any device)."""
        gen = torch.Generator(device="cpu")
        if seed is not None:
            gen.manual_seed(seed)
        for name, p in self.named_parameters():
            p.copy_(self.initial_value(name, tuple(p.shape), gen))

    @property
    def device(self) -> torch.device:
        return self.norm.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The activations' dtype: the norms' (quantized linears compute in bf16 inside and return this dtype)."""
        return self.norm.weight.dtype

    def setup_caches(self, batch: int, max_len: int, dtype: torch.dtype | None = None) -> None:
        device = self.device
        dtype = dtype or self.dtype
        for layer in self.layers:
            attn = layer.attention
            attn.kv_cache = KVCache(batch, attn.n_kv_heads, max_len, attn.head_dim, dtype, device)

    def clear_caches(self) -> None:
        for layer in self.layers:
            layer.attention.kv_cache = None

    def forward(
        self,
        tokens: torch.Tensor,
        input_pos: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        rows: slice | None = None,
        logits_at: torch.Tensor | None = None,
        span: int | None = None,
    ) -> torch.Tensor:
        h = self.hidden(tokens, input_pos, rows, span)
        if targets is not None:
            return self.head_loss(h, targets)
        if logits_at is not None:
            B = tokens.shape[0]
            h = h[torch.arange(B, device=h.device), logits_at][:, None]  # (B, 1, dim): the head on one row each
        return self.head(h)

    def hidden(
        self,
        tokens: torch.Tensor,
        input_pos: torch.Tensor | None = None,
        rows: slice | None = None,
        span: int | None = None,
    ) -> torch.Tensor:
        """The last layer's hidden states (B, T, dim), before the final norm: `head` turns any subset of them into
        logits, so a caller that needs a few positions' logits never builds the whole (B, T, vocab)."""
        B, T = tokens.shape
        mask = None
        if input_pos is None:
            positions = torch.arange(T, device=tokens.device)[None, :].expand(B, T)
        else:
            positions = input_pos
            cache_len = self.layers[0].attention.kv_cache.k.shape[2]
            if span is not None:
                cache_len = min(span, cache_len)
            slots = torch.arange(cache_len, device=tokens.device)
            mask = (slots[None, None, :] <= input_pos[:, :, None])[:, None]  # (B, 1, T, S): causal, per row
        cos, sin = self.rope(positions)
        h = self.tok_embeddings(tokens)
        for layer in self.layers:
            h = layer(h, cos, sin, mask, input_pos, rows, span)
        return h

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Logits of hidden states from `hidden` (any leading shape)."""
        return self.output(self.norm(h))

    def head_loss(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-token cross-entropy (B, T), in fp32, of the last hidden states `h` against `targets`.

        One function so that `torch.compile` can fuse the fp32 upcast into the log-softmax instead of writing
        fp32 logits (4 bytes x tokens x vocab) to memory and reading them back.
        """
        logits = self.head(h)
        losses = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
        return losses.view(targets.shape)


def build_model(
    args: ModelArgs, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, seed: int | None = 0
) -> Transformer:
    """A randomly initialised model; `device='meta'` gives a shape-only model that costs no memory."""
    with torch.device("meta"):
        model = Transformer(args)
    if str(device) == "meta":
        return model
    model.to_empty(device=device)
    model.tie_weights()
    model.init_weights(seed)
    return model.to(dtype)
