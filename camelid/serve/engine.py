"""The model side of `camelid serve`: tokenization, scoring with top alternatives, and generation on the
continuous-batching scheduler (`camelid.generate.scheduler`), which every request thread shares."""

from __future__ import annotations

import contextlib
import queue
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import torch

from camelid.errors import InputError
from camelid.generate.constrain import Constraint
from camelid.generate.engine import GenerationCancelledError, check_fits
from camelid.generate.sampling import SamplingParams, fresh_seed, sample
from camelid.generate.scheduler import Request, Scheduler
from camelid.generate.text import GenerationResult, TextStream, finish_row
from camelid.serve.limits import Limits
from camelid.serve.metrics import Histogram, render


@dataclass
class Scored:
    """A prompt scored by one forward pass: each token's log-prob (None for the first), the top pairs at each
    position, and the logits of the next token."""

    logprobs: list[float | None]
    top: list[list[tuple[int, float]]]
    next_logits: torch.Tensor


class Engine:
    """The served model: tokenization, scoring, and generation for many requests at once on one scheduler."""

    def __init__(
        self, model, tokenizer, name: str, chat_template: str | None = None, limits: Limits | None = None
    ) -> None:
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.chat_template = chat_template
        self.limits = limits or Limits()
        self.created = int(time.time())
        lim = self.limits
        self.scheduler = Scheduler(model, lim.slots, lim.max_queue, min(lim.max_context, model.args.max_seq_len))
        self.context = self.scheduler.context
        self.latency = Histogram("camelid_request_seconds", "Generation requests, submission to the last token.")
        self.ttft = Histogram("camelid_time_to_first_token_seconds", "Submission to a sequence's first token.")

    def metrics(self) -> str:
        return render(self.scheduler, [self.latency, self.ttft])

    def close(self) -> None:
        self.scheduler.close()

    def check_fits(self, prompt: list[int]) -> None:
        if len(prompt) >= self.context and self.context < self.model.args.max_seq_len:
            raise InputError(
                f"the prompt is {len(prompt)} tokens, too long for this server's context of {self.context} tokens "
                f"(the model's is {self.model.args.max_seq_len}: camelid serve --max-context); shorten it"
            )
        check_fits(len(prompt), self.context)

    def constraint(self, grammar: str) -> Constraint:
        """A fresh matcher of `grammar` for one sequence (GrammarError, one line, when it does not compile)."""
        return Constraint(self.tokenizer, grammar, self.tokenizer.stop_ids, self.model.args.vocab_size)

    @contextlib.contextmanager
    def turn(self) -> Iterator[Callable[[], str | None]]:
        """One request's deadline: yields the `cancel` check that generation asks while the request waits for
        a slot and between its steps (a reason once the deadline has passed)."""
        timeout = self.limits.request_timeout
        deadline = time.monotonic() + timeout
        reason = f"the request ran past its deadline of {timeout:g} s (camelid serve --request-timeout)"
        yield lambda: reason if time.monotonic() > deadline else None

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

    def score(self, prompts: list[list[int]], top: int) -> list[Scored]:
        """Log-probability of every prompt token given the ones before it, the `top` likeliest tokens at each
        position, and the next-token logits; batches of 8 right-padded prompts (causal, so padding after a
        prompt does not change it). Runs on the scheduler's thread, between two decode steps."""
        for p in prompts:
            self.check_fits(p)
        return self.scheduler.call(lambda: self._score(prompts, top))

    @torch.inference_mode()
    def _score(self, prompts: list[list[int]], top: int) -> list[Scored]:
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
        grammar: str | None = None,
    ) -> list[GenerationResult]:
        """Continue each prompt, every one a sequence of its own on the scheduler (so they batch with those of
        other requests); `on_text(row, delta)` streams the text as it is made, on this thread; `cancel` as
        `turn` yields it; `grammar` (llguidance's, see `camelid.generate.constrain`) constrains every row's
        output. Raises `QueueFullError` when the scheduler's queue cannot take them all."""
        streams = [TextStream(self.tokenizer, p, stop) for p in prompts]
        events: queue.SimpleQueue = queue.SimpleQueue()

        def rule(row: int) -> Callable[[list[int]], bool]:
            stream = streams[row]

            def should_stop(ids: list[int]) -> bool:  # on the scheduler's thread: no I/O here
                if stream.stop or on_text is not None:
                    delta = stream.update(ids)
                    if delta and on_text is not None:
                        events.put((row, delta))
                return stream.stopped

            return should_stop

        seeds = [fresh_seed() if seed is None else seed + i for i in range(len(prompts))]
        stop_ids = frozenset(self.tokenizer.stop_ids)
        requests = [
            Request(
                p,
                max_tokens,
                params,
                seeds[i],
                stop_ids,
                rule(i),
                top,
                on_done=lambda: events.put(None),
                constraint=None if grammar is None else self.constraint(grammar),
            )
            for i, p in enumerate(prompts)
        ]
        for p in prompts:
            self.check_fits(p)
        jobs = self.scheduler.submit(*requests)
        t0 = time.monotonic()
        try:
            while not all(j.done.is_set() for j in jobs):
                try:
                    event = events.get(timeout=0.05)
                except queue.Empty:
                    event = None
                if event is not None and on_text is not None:
                    on_text(*event)
                if cancel is not None and (reason := cancel()) is not None:
                    raise GenerationCancelledError(reason)
            while on_text is not None and not events.empty():
                if (event := events.get()) is not None:
                    on_text(*event)
            rows = [j.result() for j in jobs]
            self.latency.observe(time.monotonic() - t0)
            for j in jobs:
                if j.first_token_s is not None:
                    self.ttft.observe(j.first_token_s)
        finally:
            for j in jobs:  # a deadline, a client gone: their slots go to the others at the next step
                j.cancel("the request ended")
        results = []
        for b, row in enumerate(rows):
            r = finish_row(prompts[b], row, streams[b], b, on_text)
            stream = streams[b]
            if stream.stopped:  # keep the tokens that made the returned text, not those of the stop string
                n = next(k for k in range(len(r.ids) + 1) if self._text_len(stream, r.ids[:k]) >= len(r.text))
                r = replace(r, ids=r.ids[:n], logprobs=r.logprobs[:n], top_logprobs=r.top_logprobs[:n])
            results.append(r)
        return results
