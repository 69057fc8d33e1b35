"""Generation: pure `prefill` / `decode_one_token` functions over a static KV cache, and batching.

A batch is left-padded: row b starts at cache slot pad[b], its RoPE positions count from 0 there, and
the attention mask hides slots before it. Greedy output is therefore the same as generating each
prompt alone; tests pin that against full recomputation and against `transformers`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from camelid.errors import InputError
from camelid.generate.sampling import SamplingParams, sample
from camelid.model.transformer import Transformer


def attention_mask(input_pos: torch.Tensor, pad: torch.Tensor, cache_len: int) -> torch.Tensor:
    """(B, 1, T, S) bool: causal over cache slots, padding hidden; each slot may always see itself.

    The self-slot keeps the padded rows' (ignored) queries from attending to nothing, which would be NaN.
    """
    slots = torch.arange(cache_len, device=input_pos.device)
    causal = slots[None, :] <= input_pos[:, None]  # (T, S)
    valid = slots[None, :] >= pad[:, None]  # (B, S)
    itself = slots[None, :] == input_pos[:, None]  # (T, S)
    return ((causal[None] & valid[:, None]) | itself[None])[:, None]


def _forward(model: Transformer, tokens: torch.Tensor, input_pos: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    cache_len = model.layers[0].attention.kv_cache.k.shape[2]
    positions = (input_pos[None, :] - pad[:, None]).clamp(min=0)
    mask = attention_mask(input_pos, pad, cache_len)
    return model(tokens, input_pos=input_pos, positions=positions, mask=mask)[:, -1].float()


def prefill(model: Transformer, tokens: torch.Tensor, input_pos: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """Run the (B, T) prompt block through the model, filling the cache; logits (B, V) of the last position."""
    return _forward(model, tokens, input_pos, pad)


def decode_one_token(
    model: Transformer, token: torch.Tensor, input_pos: torch.Tensor, pad: torch.Tensor
) -> torch.Tensor:
    """One step for the (B, 1) last tokens at cache slot `input_pos` (1,); logits (B, V)."""
    return _forward(model, token, input_pos, pad)


_compiled: dict[str, Callable] = {}


def compiled_decode() -> Callable:
    if "decode" not in _compiled:
        _compiled["decode"] = torch.compile(decode_one_token, fullgraph=True, dynamic=False)
    return _compiled["decode"]


@dataclass
class RowOutput:
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)
    """With `generate_ids(top_logprobs=k)`: the k likeliest (id, log-prob) pairs at each step."""
    finish_reason: str = "length"
    stop_token: tuple[int, float, list[tuple[int, float]]] | None = None
    """The stop id that ended the row (not in `ids`), its log-prob and the top pairs at that step."""


@dataclass
class GenerationStats:
    prompt_tokens: int
    new_tokens: int  # decode steps run, over the whole batch
    prefill_s: float
    decode_s: float

    @property
    def tokens_per_s(self) -> float:
        """Decode speed: tokens made by decode steps (the first token comes from prefill) per second."""
        return self.new_tokens / self.decode_s if self.decode_s > 0 else float("nan")


def check_fits(prompt_len: int, max_seq_len: int) -> None:
    if prompt_len == 0:
        raise InputError("the prompt is empty and the tokenizer adds no BOS token; give a non-empty --prompt")
    if prompt_len >= max_seq_len:
        raise InputError(
            f"the prompt is {prompt_len} tokens, too long for the model's context of {max_seq_len} tokens; shorten it"
        )


@torch.inference_mode()
def generate_ids(
    model: Transformer,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    params: SamplingParams = SamplingParams(),
    stop_ids: set[int] = frozenset(),
    seed: int | None = None,
    pad_id: int = 0,
    should_stop: Callable[[int, list[int]], bool] | None = None,
    compile: bool = False,
    top_logprobs: int = 0,
) -> tuple[list[RowOutput], GenerationStats]:
    """Generate for a batch of prompts (token ids). Rows stop at a stop id, `should_stop`, or the length limit.
    Each row keeps the log-probability of its chosen tokens and, with `top_logprobs`, the k likeliest ones."""
    if not prompts:
        raise InputError("no prompts given")
    if max_new_tokens < 1:
        raise InputError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    ctx = model.args.max_seq_len
    for p in prompts:
        check_fits(len(p), ctx)
    device = model.tok_embeddings.weight.device
    B, P = len(prompts), max(len(p) for p in prompts)
    max_new_tokens = min(max_new_tokens, ctx - P)
    cache_len = P + max_new_tokens
    if compile:  # a few cache sizes (powers of two) so later calls reuse the compiled decode step
        cache_len = min(ctx, max(256, 1 << (cache_len - 1).bit_length()))
    tokens = torch.full((B, P), pad_id, dtype=torch.long, device=device)
    for b, p in enumerate(prompts):
        tokens[b, P - len(p) :] = torch.tensor(list(p), dtype=torch.long)
    pad = torch.tensor([P - len(p) for p in prompts], device=device)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed if seed is not None else torch.seed())
    decode = compiled_decode() if compile else decode_one_token
    model.setup_caches(B, cache_len)
    rows = [RowOutput() for _ in range(B)]
    active = [True] * B
    try:
        t0 = time.perf_counter()
        logits = prefill(model, tokens, torch.arange(P, device=device), pad)
        t_prefill = time.perf_counter() - t0
        t0 = time.perf_counter()
        decode_steps = 0
        for step in range(max_new_tokens):
            nxt = sample(logits, params, generator)
            all_lp = torch.log_softmax(logits, dim=-1)
            logprobs = all_lp.gather(-1, nxt[:, None]).squeeze(-1)
            if top_logprobs:
                top_v, top_i = all_lp.topk(top_logprobs, dim=-1)
                top_pairs = [list(zip(i, v)) for i, v in zip(top_i.tolist(), top_v.tolist())]
            for b, (tok, lp) in enumerate(zip(nxt.tolist(), logprobs.tolist())):
                if not active[b]:
                    continue
                if tok in stop_ids:
                    rows[b].finish_reason, active[b] = "stop", False
                    rows[b].stop_token = (tok, lp, top_pairs[b] if top_logprobs else [])
                    continue
                rows[b].ids.append(tok)
                rows[b].logprobs.append(lp)
                if top_logprobs:
                    rows[b].top_logprobs.append(top_pairs[b])
                if should_stop is not None and should_stop(b, rows[b].ids):
                    rows[b].finish_reason, active[b] = "stop", False
            if not any(active) or step == max_new_tokens - 1:
                break
            input_pos = torch.tensor([P + step], device=device)
            logits = decode(model, nxt[:, None], input_pos, pad).clone()
            decode_steps += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        t_decode = time.perf_counter() - t0
    finally:
        model.clear_caches()
    stats = GenerationStats(sum(len(p) for p in prompts), decode_steps, t_prefill, t_decode)
    return rows, stats


@torch.inference_mode()
def score_ids(model: Transformer, ids: Sequence[int]) -> list[float]:
    """log P(ids[i] | ids[:i]) for i >= 1, from one causal forward pass."""
    check_fits(len(ids) - 1, model.args.max_seq_len + 1)
    device = model.tok_embeddings.weight.device
    x = torch.tensor([list(ids)], dtype=torch.long, device=device)
    logits = model(x[:, :-1]).float()
    return torch.log_softmax(logits, -1).gather(-1, x[:, 1:, None])[0, :, 0].tolist()
