"""Generation for a batch of prompts on the decoder: prefill, then one decode step at a time until every row
stops (a stop id, `should_stop`, or the length limit).

Rows are independent cache rows at their own positions, so greedy output of a prompt is the same alone or in
a batch; tests pin that against full recomputation and against `transformers`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from camelid.errors import InputError
from camelid.generate.decoder import decoder_for
from camelid.generate.sampling import SamplingParams, batch_mode, fresh_seed, row_tensors, sample_rows
from camelid.model.transformer import Transformer


@dataclass
class RowOutput:
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)
    """With `generate_ids(top_logprobs=k)`: the k likeliest (id, log-prob) pairs at each step."""
    finish_reason: str = "length"
    stop_token: tuple[int, float, list[tuple[int, float]]] | None = None
    """The stop id that ended the row (not in `ids`), its log-prob and the top pairs at that step."""


class GenerationCancelledError(Exception):
    """Generation stopped between two decode steps because `generate_ids(cancel=...)` gave a reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


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
        raise InputError("the prompt is empty and the tokenizer adds no BOS token; give a non-empty prompt")
    if prompt_len >= max_seq_len:
        raise InputError(
            f"the prompt is {prompt_len} tokens, too long for the model's context of {max_seq_len} tokens; shorten it"
        )


def _pairs(ids: torch.Tensor | None, values: torch.Tensor | None, row: int) -> list[tuple[int, float]]:
    """The k likeliest (id, log-prob) pairs of a row at this step."""
    return [] if ids is None else list(zip(ids[row].tolist(), values[row].tolist()))


@torch.inference_mode()
def generate_ids(
    model: Transformer,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    params: SamplingParams | Sequence[SamplingParams] = SamplingParams(),
    stop_ids: set[int] = frozenset(),
    seed: int | Sequence[int] | None = None,
    should_stop: Callable[[int, list[int]], bool] | None = None,
    compile: bool | str = False,
    top_logprobs: int = 0,
    cancel: Callable[[], str | None] | None = None,
) -> tuple[list[RowOutput], GenerationStats]:
    """Generate for a batch of prompts (token ids). `params` and `seed` may be one per row. An unseeded call
    draws its seeds from a fresh OS source: the process-wide RNG is never read or reseeded. `cancel`, asked
    before every decode step, stops the call with `GenerationCancelledError(reason)` when it returns a reason."""
    if not prompts:
        raise InputError("no prompts given")
    if any(isinstance(p, (int, str)) for p in prompts):
        raise InputError("prompts must be a list of token-id lists, one per prompt (for one prompt: [ids])")
    if max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    ctx = model.args.max_seq_len
    for p in prompts:
        check_fits(len(p), ctx)
    b = len(prompts)
    per_row = list(params) if isinstance(params, (list, tuple)) else [params] * b
    if seed is None:
        seeds = [fresh_seed() for _ in range(b)]
    elif isinstance(seed, int):
        seeds = [seed + i for i in range(b)]
    else:
        seeds = list(seed)
    longest = max(len(p) for p in prompts)
    max_new_tokens = min(max_new_tokens, ctx - longest)
    decoder = decoder_for(model, ({True: "default", False: None}.get(compile, compile)) or None)
    decoder.reserve(b, longest + max_new_tokens)
    device = decoder.device
    temperature, top_k, top_p, seeds_t = row_tensors(per_row, seeds, device)
    filtered = batch_mode(per_row)
    want = (top_logprobs + 1) if top_logprobs else 1

    t0 = time.perf_counter()
    logits = decoder.prefill(prompts)
    # the first new token comes from the prefill's logits, sampled like every later one
    step = torch.zeros(b, dtype=torch.int64, device=device)
    nxt = sample_rows(logits, temperature, top_k, top_p, seeds_t, step, filtered)
    lp_all = torch.log_softmax(logits, dim=-1)
    chosen = lp_all.gather(-1, nxt[:, None]).squeeze(-1)
    top_i = top_v = None
    if top_logprobs:
        top_v, top_i = lp_all.topk(top_logprobs, dim=-1)
    t_prefill = time.perf_counter() - t0

    rows = [RowOutput() for _ in range(b)]
    active = [True] * b
    positions = torch.tensor([len(p) for p in prompts], dtype=torch.int64, device=device)
    t0 = time.perf_counter()
    decode_steps = 0
    for i in range(max_new_tokens):
        ids = nxt.tolist()
        lps = chosen.tolist()
        for r, (tok, lp) in enumerate(zip(ids, lps)):
            if not active[r]:
                continue
            pairs = _pairs(top_i, top_v, r) if top_logprobs else []
            if tok in stop_ids:
                rows[r].finish_reason, active[r] = "stop", False
                rows[r].stop_token = (tok, lp, pairs)
                continue
            rows[r].ids.append(tok)
            rows[r].logprobs.append(lp)
            if top_logprobs:
                rows[r].top_logprobs.append(pairs)
            if should_stop is not None and should_stop(r, rows[r].ids):
                rows[r].finish_reason, active[r] = "stop", False
        if not any(active) or i == max_new_tokens - 1:
            break
        if cancel is not None and (reason := cancel()) is not None:
            raise GenerationCancelledError(reason)
        step += 1
        span = longest + i + 1  # every row's position this step is below it
        out = decoder.decode(nxt, positions, temperature, top_k, top_p, seeds_t, step, filtered, want, span)
        positions += 1
        nxt, chosen, top_i, top_v = out.ids, out.logprobs, out.top_ids, out.top_logprobs
        decode_steps += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    t_decode = time.perf_counter() - t0
    stats = GenerationStats(sum(len(p) for p in prompts), decode_steps, t_prefill, t_decode)
    return rows, stats


@torch.inference_mode()
def score_ids(model: Transformer, ids: Sequence[int]) -> list[float]:
    """log P(ids[i] | ids[:i]) for i >= 1, from one causal forward pass."""
    check_fits(len(ids) - 1, model.args.max_seq_len + 1)
    x = torch.tensor([list(ids)], dtype=torch.long, device=model.device)
    logits = model(x[:, :-1]).float()
    return torch.log_softmax(logits, -1).gather(-1, x[:, 1:, None])[0, :, 0].tolist()
