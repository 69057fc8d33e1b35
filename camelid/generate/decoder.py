"""The decoder: a model with a KV cache it owns for as long as it is used, and two steps over it.

- `prefill(rows, prompts)` writes each prompt into its cache row (at positions 0..n-1, any lengths in one
  batch: rows are right-padded, and a row never attends past its own position) and returns the logits of each
  prompt's last token only: the output head runs on one position per row, never on the whole prompt.
- `decode(tokens, positions, ...)` runs one token for every cache row at once, each at its own position, and
  samples the next token inside the same (compiled) function; only the new ids come back to the host.

The cache is allocated once, grown (to the next power of two) only when a call needs more rows or positions,
and reused across calls. `compile` is a torch.compile mode ("default", "reduce-overhead" for CUDA graphs on
a GPU, "max-autotune-no-cudagraphs"), or None for eager.
"""

from __future__ import annotations

import itertools
import types
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from camelid.generate.sampling import sample_rows
from camelid.model.transformer import Transformer

PREFILL_CHUNK = 512  # prompt tokens per forward pass: a long prompt is written into the cache in chunks


MIN_POSITIONS = 256  # the smallest cache: short generations never regrow it (and so never recompile the step)


def _next_pow2(n: int, floor: int = MIN_POSITIONS) -> int:
    return max(floor, 1 << max(0, n - 1).bit_length())


@dataclass
class StepOutput:
    ids: torch.Tensor  # (B,) int64
    logprobs: torch.Tensor | None = None  # (B,) fp32 log-probability of each chosen id
    top_ids: torch.Tensor | None = None  # (B, k)
    top_logprobs: torch.Tensor | None = None  # (B, k)


_STEP_IDS = itertools.count()


def _compiled(fn, mode: str):
    """torch.compile in `mode`, without Dynamo's guards on the model's modules: evaluated before every step they
    cost ~2 ms on the CPU (hundreds of parameters), a sixth of a SmolLM2 decode step. Instead, the step gets a
    code object of its own (Dynamo caches compiled code per code object, so no other model's step can be
    picked), and the decoder checks once per call (`reserve`) that the model's tensors are the ones it
    compiled for."""
    import torch._inductor

    code = fn.__code__.replace(co_name=f"{fn.__code__.co_name}_{next(_STEP_IDS)}")
    fn = types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)
    options = dict(torch._inductor.list_mode_options(mode))
    options["guard_filter_fn"] = torch.compiler.skip_guard_on_all_nn_modules_unsafe
    return torch.compile(fn, fullgraph=True, dynamic=False, options=options)


def _fingerprint(model: torch.nn.Module) -> tuple:
    """The identity and shape of every weight of the model (not its KV cache): what a compiled step baked in."""
    from camelid.model.kv_cache import KVCache

    cache = {id(b) for m in model.modules() if isinstance(m, KVCache) for b in m.buffers()}
    return tuple(
        (name, id(t), t.data_ptr(), tuple(t.shape), t.dtype)
        for name, t in [*model.named_parameters(), *model.named_buffers()]
        if id(t) not in cache
    )


class Decoder:
    def __init__(self, model: Transformer, compile: str | None = None) -> None:
        self.model = model
        self.compile = compile
        self.batch = 0
        self.length = 0
        self.allocations = 0  # how many times the cache was (re)allocated: a reused cache does not count
        self._steps: dict[tuple, object] = {}  # (compile mode, batch, filtered, logprobs) -> step, eager ones too
        self._fingerprint: tuple = ()

    @property
    def device(self) -> torch.device:
        return self.model.device

    def reserve(self, batch: int, length: int) -> None:
        """Make sure the cache holds `batch` rows of `length` positions (grown, never shrunk, when too small)."""
        if any(mode for mode, *_ in self._steps):
            fingerprint = _fingerprint(self.model)
            if fingerprint != self._fingerprint:  # weights swapped or modules replaced since compiling
                self._steps.clear()
                self._fingerprint = fingerprint
        length = min(self.model.args.max_seq_len, _next_pow2(length))
        if batch <= self.batch and length <= self.length:
            return
        self.batch, self.length = max(batch, self.batch), max(length, self.length)
        self.model.setup_caches(self.batch, self.length)
        self.allocations += 1
        self._steps.clear()  # compiled steps are specialised on the cache's shapes

    def release(self) -> None:
        """Free the cache (the next call allocates it again)."""
        self.model.clear_caches()
        self.batch = self.length = 0
        self._steps.clear()

    # -- prefill ----------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def prefill(self, prompts: Sequence[Sequence[int]], first_row: int = 0, start: int = 0) -> torch.Tensor:
        """Write `prompts` into cache rows first_row.. (positions start..), return fp32 logits (B, V) of each
        prompt's last token. Rows are right-padded to the longest; a long prompt goes in PREFILL_CHUNK pieces."""
        b = len(prompts)
        lengths = [len(p) for p in prompts]
        longest = max(lengths)
        self.reserve(first_row + b, start + longest)
        device = self.device
        tokens = torch.zeros((b, longest), dtype=torch.long, device=device)
        for i, p in enumerate(prompts):
            tokens[i, : len(p)] = torch.tensor(list(p), dtype=torch.long)
        rows = slice(first_row, first_row + b)
        last = torch.tensor([n - 1 for n in lengths], device=device)
        out = torch.empty((b, self.model.args.vocab_size), dtype=torch.float32, device=device)
        for c in range(0, longest, PREFILL_CHUNK):
            chunk = tokens[:, c : c + PREFILL_CHUNK]
            t = chunk.shape[1]
            pos = torch.arange(start + c, start + c + t, device=device)[None, :].expand(b, t)
            # rows whose last token is in this chunk keep its logits; the others' are computed and dropped
            at = (last - c).clamp(0, t - 1)
            logits = self.model(chunk, input_pos=pos, rows=rows, logits_at=at, span=start + c + t)[:, 0].float()
            done = (last >= c) & (last < c + t)
            out[done] = logits[done]
        return out

    # -- decode -----------------------------------------------------------------------------------------------

    def _step_fn(self, batch: int, filtered: bool | None, logprobs: int, span: int | None, masked: bool = False):
        key = (self.compile, batch, filtered, logprobs, span, masked)
        if key not in self._steps:
            model = self.model
            rows = None if batch == self.batch else slice(0, batch)

            def step(tokens, positions, temperature, top_k, top_p, seed, counter, allowed=None):
                logits = model(tokens[:, None], input_pos=positions[:, None], rows=rows, span=span)[:, -1].float()
                # a grammar's mask limits what is sampled; log-probs stay the model's own
                pick = logits if allowed is None else logits.masked_fill(~allowed, float("-inf"))
                ids = sample_rows(pick, temperature, top_k, top_p, seed, counter, filtered)
                if not logprobs:
                    return ids, None, None, None
                lp = torch.log_softmax(logits, dim=-1)
                chosen = lp.gather(-1, ids[:, None]).squeeze(-1)
                if logprobs > 1:
                    top_v, top_i = lp.topk(logprobs - 1, dim=-1)
                    return ids, chosen, top_i, top_v
                return ids, chosen, None, None

            if self.compile:
                step = _compiled(step, self.compile)
                self._fingerprint = _fingerprint(model)
            self._steps[key] = step
        return self._steps[key]

    @torch.inference_mode()
    def decode(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        temperature: torch.Tensor,
        top_k: torch.Tensor,
        top_p: torch.Tensor,
        seed: torch.Tensor,
        counter: torch.Tensor,
        filtered: bool | None = False,
        logprobs: int = 0,
        span: int | None = None,
        allowed: torch.Tensor | None = None,
    ) -> StepOutput:
        """One token for each of the first B cache rows: write `tokens` (B,) at `positions` (B,), sample the next
        ids with each row's parameters. `logprobs` 0: ids only; 1: and their log-probs; k > 1: and the k-1
        likeliest alternatives. A server passes all its rows (idle ones too, their results ignored), so the
        shapes, and the compiled step, stay the same from step to step. `span`, when given, bounds every row's
        position (all < span): attention then reads only the cache's first slots, rounded up to a power of two
        (so a compiled step serves many steps, and a long cache costs a short generation nothing). `allowed`,
        when given, (B, V) bool: each row samples only among its True tokens (structured output)."""
        if span is not None:
            span = min(self.length, _next_pow2(span))
            span = None if span >= self.length else span
        fn = self._step_fn(tokens.shape[0], filtered, logprobs, span, allowed is not None)
        extra = () if allowed is None else (allowed,)
        ids, chosen, top_i, top_v = fn(tokens, positions, temperature, top_k, top_p, seed, counter, *extra)

        def own(t):  # a compiled step's outputs may be its static buffers: copy them out
            return None if t is None else t.clone()

        return StepOutput(own(ids), own(chosen), own(top_i), own(top_v))


_DECODERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def decoder_for(model: Transformer, compile: str | None = None) -> Decoder:
    """The decoder (and so the KV cache) kept for `model` across calls, set to run its steps in `compile` mode:
    one per model, whose eager and compiled steps share the cache (an eager call between compiled ones, such as
    a prefill-only generation or a score, costs the compiled step nothing)."""
    decoder = _DECODERS.get(model)
    if decoder is None:
        decoder = _DECODERS[model] = Decoder(model, compile)
    decoder.compile = compile
    return decoder


def release_caches(model: Transformer) -> None:
    """Free the KV cache that generation keeps for `model` between calls."""
    decoder = _DECODERS.pop(model, None)
    if decoder is not None:
        decoder.release()
