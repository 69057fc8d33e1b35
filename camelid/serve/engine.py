"""The model side of `camelid serve`: tokenization, scoring with top alternatives, and batched generation."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import torch

from camelid.generate.engine import GenerationCancelledError, check_fits
from camelid.generate.sampling import SamplingParams, fresh_seed, sample
from camelid.generate.text import GenerationResult, TextStream, generate_from_ids
from camelid.serve.limits import Limits


@dataclass
class Scored:
    """A prompt scored by one forward pass: each token's log-prob (None for the first), the top pairs at each
    position, and the logits of the next token."""

    logprobs: list[float | None]
    top: list[list[tuple[int, float]]]
    next_logits: torch.Tensor


class Engine:
    """The served model: tokenization, scoring and batched generation, one request at a time."""

    def __init__(
        self, model, tokenizer, name: str, chat_template: str | None = None, limits: Limits | None = None
    ) -> None:
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.chat_template = chat_template
        self.limits = limits or Limits()
        self.lock = threading.Lock()
        self.created = int(time.time())
        self.context = model.args.max_seq_len

    @contextlib.contextmanager
    def turn(self) -> Iterator[Callable[[], str | None]]:
        """The model for one request, within the request's deadline: waits for it at most that long, then
        yields the `cancel` check generation asks before each step (a reason once the deadline has passed)."""
        timeout = self.limits.request_timeout
        deadline = time.monotonic() + timeout
        reason = f"the request ran past its deadline of {timeout:g} s (camelid serve --request-timeout)"
        if not self.lock.acquire(timeout=timeout):
            raise GenerationCancelledError(reason)
        try:
            yield lambda: reason if time.monotonic() > deadline else None
        finally:
            self.lock.release()

    def token_texts(self, ids: list[int], prefix: list[int] = ()) -> list[str]:
        """The text each token adds when decoded after `prefix` and the tokens before it (so a SentencePiece
        word-start keeps its space and a multi-byte character split over tokens lands on its last token)."""
        out, context = [], list(prefix)[-4:]
        for i in ids:
            before = self.tokenizer.decode(context) if context else ""
            after = self.tokenizer.decode([*context, i])
            out.append(after[len(before) :] if after.startswith(before) else self.tokenizer.decode([i]))
            context = [*context[-3:], i]
        return out

    def encode(self, text: str, special: bool = True) -> list[int]:
        return self.tokenizer.encode(text) if special else self.tokenizer.encode(text, bos=False)

    @torch.inference_mode()
    def score(self, prompts: list[list[int]], top: int) -> list[Scored]:
        """Log-probability of every prompt token given the ones before it, the `top` likeliest tokens at each
        position, and the next-token logits; batches of 8 right-padded prompts (causal, so padding after a
        prompt does not change it)."""
        for p in prompts:
            check_fits(len(p), self.context)
        device = self.model.device
        out = []
        for start in range(0, len(prompts), 8):
            chunk = prompts[start : start + 8]
            tokens = torch.zeros(len(chunk), max(len(p) for p in chunk), dtype=torch.long, device=device)
            for b, p in enumerate(chunk):
                tokens[b, : len(p)] = torch.tensor(p, dtype=torch.long)
            logits = self.model(tokens)
            for b, p in enumerate(chunk):
                lp = torch.log_softmax(logits[b, : len(p) - 1].float(), dim=-1)
                chosen = lp.gather(-1, tokens[b, 1 : len(p), None]).squeeze(-1).tolist()
                tops: list[list[tuple[int, float]]] = [[] for _ in range(len(p))]
                if top:
                    v, i = lp.topk(min(top, lp.shape[-1]), dim=-1)
                    tops[1:] = [list(zip(ii, vv)) for ii, vv in zip(i.tolist(), v.tolist())]
                out.append(Scored([None, *chosen], tops, logits[b, len(p) - 1].float()))
        return out

    def next_token(
        self,
        prompts: list[list[int]],
        scored: list[Scored],
        params: SamplingParams,
        stop: list[str],
        seed: int | None,
        top: int,
    ) -> list[GenerationResult]:
        """One new token per prompt from logits already computed by `score` (no second forward pass)."""
        logits = torch.stack([s.next_logits for s in scored])
        nxt = sample(logits, params, seed if seed is not None else fresh_seed()).tolist()
        lps = torch.log_softmax(logits, dim=-1)
        choices = []
        for b, tok in enumerate(nxt):
            lp = float(lps[b, tok])
            pairs = []
            if top:
                v, i = lps[b].topk(top)
                pairs = list(zip(i.tolist(), v.tolist()))
            if tok in self.tokenizer.stop_ids:
                choices.append(GenerationResult(prompts[b], [], "", [], "stop", stop_token=(tok, lp, pairs)))
                continue
            stream = TextStream(self.tokenizer, prompts[b], stop)
            stream.update([tok])
            if stream.stopped and not stream.text:  # the token only began a stop string
                choices.append(GenerationResult(prompts[b], [], "", [], "stop"))
            else:
                finish = "stop" if stream.stopped else "length"
                choices.append(GenerationResult(prompts[b], [tok], stream.text, [lp], finish, [pairs]))
        return choices

    def _text_len(self, stream: TextStream, ids: list[int]) -> int:
        return len(self.tokenizer.decode(stream.context + ids)) - stream.prefix_len

    def generate(
        self,
        prompts: list[list[int]],
        max_tokens: int,
        params: SamplingParams,
        stop: list[str],
        seed: int | None,
        top: int,
        on_text: Callable[[int, str], None] | None = None,
        cancel: Callable[[], str | None] | None = None,
    ) -> list[GenerationResult]:
        """Continue each prompt (one batch); `on_text(row, delta)` streams the text as it is made; `cancel` as
        `turn` yields it."""
        results, _ = generate_from_ids(
            self.model,
            self.tokenizer,
            prompts,
            max_tokens,
            params,
            stop,
            seed,
            on_text,
            top_logprobs=top,
            cancel=cancel,
        )
        for i, r in enumerate(results):
            if r.stream.stopped:  # keep the tokens that made the returned text, not those of the stop string
                n = next(k for k in range(len(r.ids) + 1) if self._text_len(r.stream, r.ids[:k]) >= len(r.text))
                results[i] = replace(r, ids=r.ids[:n], logprobs=r.logprobs[:n], top_logprobs=r.top_logprobs[:n])
        return results
