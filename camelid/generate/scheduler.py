"""Continuous batching: many requests share one decoder's KV cache, a fixed pool of rows ("slots").

A background thread runs the loop. Between two decode steps it admits waiting requests into free slots and
writes their prompts into the cache (at most `prefill_chunk` prompt tokens per iteration, so a long prompt is
prefilled in pieces between the others' decode steps), then runs one decode step for every slot at once, each
row at its own position with its own sampling parameters, seed, stop ids and token budget. A request leaves its
slot the step it finishes or is cancelled; the next waiting request takes it.

Sampling noise is a function of a row's seed and step only (`sampling.uniform`), and every row attends to its
own positions only, so a request's output does not depend on what else is running: greedy (and seeded) output
is the same as `generate_ids` gives it alone.

Callbacks (`Request.should_stop`) run on the loop thread: they must be quick (put text into a queue, not write
to a socket).
"""

from __future__ import annotations

import collections
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from camelid.errors import InputError
from camelid.generate.constrain import Constraint
from camelid.generate.decoder import PREFILL_CHUNK, decoder_for
from camelid.generate.engine import GenerationCancelledError, RowOutput, check_fits
from camelid.generate.sampling import SamplingParams, batch_mode, fresh_seed, row_tensors, sample_rows
from camelid.model.transformer import Transformer

_OPEN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its running scheduler


class QueueFullError(Exception):
    """`Scheduler.submit` found the waiting queue full: the caller should retry later (HTTP 429)."""


@dataclass
class Request:
    prompt: Sequence[int]
    max_new_tokens: int
    params: SamplingParams = SamplingParams()
    seed: int | None = None
    stop_ids: frozenset[int] = frozenset()
    should_stop: Callable[[list[int]], bool] | None = None
    """Asked with the ids so far after each new token (on the loop thread); True ends the request ("stop")."""
    top_logprobs: int = 0
    on_done: Callable[[], None] | None = None
    """Called (on the loop thread) once the request has finished, failed or been cancelled."""
    constraint: Constraint | None = None
    """A grammar the output must follow (structured output): only tokens it allows are sampled, and the
    request stops ("stop") once the output is complete."""


@dataclass
class Job:
    """A submitted request: `result()` waits for its output; `cancel()` frees its slot at the next step."""

    request: Request
    output: RowOutput = field(default_factory=RowOutput)
    submitted: float = field(default_factory=time.monotonic)
    first_token_s: float | None = None  # seconds from submission to the first new token
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)
    cancel_reason: str | None = None
    # loop-thread state
    slot: int = -1
    prefilled: int = 0  # prompt tokens already in the cache
    last: int = -1  # the newest token, fed to the next decode step

    def cancel(self, reason: str = "cancelled") -> None:
        if self.cancel_reason is None:
            self.cancel_reason = reason

    def result(self, timeout: float | None = None) -> RowOutput:
        if not self.done.wait(timeout):
            raise TimeoutError("the request did not finish in time")
        if self.error is not None:
            raise self.error
        return self.output


@dataclass
class _Call:
    """Work handed to the loop thread by `Scheduler.call`, and what it returned or raised."""

    fn: Callable[[], Any]
    result: Any = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            self.error = e
        self.done.set()


@dataclass
class SchedulerStats:
    requests: int = 0
    finished: collections.Counter = field(default_factory=collections.Counter)  # by finish reason
    rejected: int = 0  # submissions refused because the queue was full
    prompt_tokens: int = 0
    generated_tokens: int = 0
    decode_steps: int = 0
    rows_decoded: int = 0  # active rows summed over decode steps: / decode_steps is the mean batch


class Scheduler:
    def __init__(
        self,
        model: Transformer,
        slots: int = 16,
        max_queue: int = 64,
        context: int | None = None,
        compile: str | None = None,
        prefill_chunk: int = PREFILL_CHUNK,
    ) -> None:
        if slots < 1 or max_queue < 1 or prefill_chunk < 1:
            raise InputError(f"slots, max_queue, prefill_chunk must be >= 1, got {slots}, {max_queue}, {prefill_chunk}")
        if _OPEN.get(model) is not None:
            raise RuntimeError("this model already has a running scheduler (one KV cache per model): close it first")
        self.model = model
        self.slots, self.max_queue, self.prefill_chunk = slots, max_queue, prefill_chunk
        self.context = min(model.args.max_seq_len, context or model.args.max_seq_len)
        self.decoder = decoder_for(model, compile)
        self.decoder.reserve(slots, self.context)
        self.stats = SchedulerStats()
        self._cv = threading.Condition()
        self._waiting: collections.deque[Job] = collections.deque()
        self._calls: collections.deque[_Call] = collections.deque()
        self._rows: list[Job | None] = [None] * slots
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="camelid-scheduler", daemon=True)
        self._thread.start()
        _OPEN[model] = self

    # -- the caller's side -------------------------------------------------------------------------------------

    def submit(self, *requests: Request) -> list[Job]:
        """Queue requests (all or none): `QueueFullError` when they do not fit in the waiting queue."""
        if len(requests) > self.max_queue:
            raise InputError(f"{len(requests)} sequences at once; this scheduler queues at most {self.max_queue}")
        for r in requests:
            check_fits(len(r.prompt), self.context)
            if r.max_new_tokens < 1:
                raise InputError(f"max_new_tokens must be >= 1, got {r.max_new_tokens}")
        jobs = [Job(r) for r in requests]
        with self._cv:
            if self._closed:
                raise RuntimeError("the scheduler is closed")
            if len(self._waiting) + len(jobs) > self.max_queue:
                self.stats.rejected += len(jobs)
                raise QueueFullError(
                    f"the queue is full ({len(self._waiting)} of {self.max_queue} requests waiting); retry later"
                )
            self._waiting.extend(jobs)
            self.stats.requests += len(jobs)
            self._cv.notify()
        return jobs

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the loop thread between two steps (model work that must not overlap a step, such as
        scoring a prompt) and return its result."""
        call = _Call(fn)
        with self._cv:
            if self._closed:
                raise RuntimeError("the scheduler is closed")
            self._calls.append(call)
            self._cv.notify()
        call.done.wait()
        if call.error is not None:
            raise call.error
        return call.result

    @property
    def running(self) -> int:
        return sum(j is not None for j in self._rows)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join()
        if _OPEN.get(self.model) is self:
            del _OPEN[self.model]

    # -- the loop ----------------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._closed and not self._calls and not self._waiting and not self.running:
                    self._cv.wait()
                if self._closed:
                    break
                calls = list(self._calls)
                self._calls.clear()
                for i in range(self.slots):
                    while self._rows[i] is None and self._waiting:
                        job = self._waiting.popleft()
                        if job.cancel_reason is not None:  # gave up while waiting: never takes a slot
                            self._finish(job, error=GenerationCancelledError(job.cancel_reason))
                        else:
                            job.slot, self._rows[i] = i, job
            for call in calls:
                call.run()
            try:
                self._iteration()
            except Exception as e:  # the model failed: every running request gets the error, the loop goes on
                for job in self._rows:
                    if job is not None:
                        self._finish(job, error=e)
        for job in [*self._rows, *self._waiting]:
            if job is not None:
                self._finish(job, error=RuntimeError("the scheduler was closed"))
        for call in self._calls:
            call.error = RuntimeError("the scheduler was closed")
            call.done.set()

    def _finish(self, job: Job, reason: str | None = None, error: BaseException | None = None) -> None:
        if reason is not None:
            job.output.finish_reason = reason
        if isinstance(error, GenerationCancelledError):
            reason = "cancelled"
        self.stats.finished[reason or "error"] += 1
        job.error = error
        if job.slot >= 0 and self._rows[job.slot] is job:
            self._rows[job.slot] = None
        job.done.set()
        if job.request.on_done is not None:
            job.request.on_done()

    def _accept(self, job: Job, tok: int, lp: float, pairs: list[tuple[int, float]]) -> None:
        """A new token for `job`, as `generate_ids` takes it: a stop id ends it (not kept), else it is kept and
        the stop rule and the token budget are asked."""
        r, out = job.request, job.output
        if job.first_token_s is None:
            job.first_token_s = time.monotonic() - job.submitted
        if tok in r.stop_ids:
            out.stop_token = (tok, lp, pairs)
            return self._finish(job, "stop")
        if r.constraint is not None:
            try:
                r.constraint.advance(tok)
            except RuntimeError as e:
                return self._finish(job, error=e)
        out.ids.append(tok)
        out.logprobs.append(lp)
        if r.top_logprobs:
            out.top_logprobs.append(pairs)
        self.stats.generated_tokens += 1
        job.last = tok
        if r.should_stop is not None and r.should_stop(out.ids):
            return self._finish(job, "stop")
        if r.constraint is not None and r.constraint.complete:
            return self._finish(job, "stop")
        if len(out.ids) >= min(r.max_new_tokens, self.context - len(r.prompt)):
            return self._finish(job, "length")

    @torch.inference_mode()
    def _iteration(self) -> None:
        for job in self._rows:
            if job is not None and job.cancel_reason is not None:
                self._finish(job, error=GenerationCancelledError(job.cancel_reason))
        device = self.decoder.device
        budget = self.prefill_chunk
        for job in sorted((j for j in self._rows if j is not None and j.last < 0), key=lambda j: j.submitted):
            if budget <= 0:
                break
            r = job.request
            piece = list(r.prompt[job.prefilled : job.prefilled + budget])
            logits = self.decoder.prefill([piece], first_row=job.slot, start=job.prefilled)
            job.prefilled += len(piece)
            budget -= len(piece)
            if job.prefilled < len(r.prompt):
                continue
            self.stats.prompt_tokens += len(r.prompt)
            if r.seed is None:
                r.seed = fresh_seed()
            t, k, p, s = row_tensors([r.params], [r.seed], device)
            zero = torch.zeros(1, dtype=torch.int64, device=device)
            mode = None if r.params.greedy else r.params.filtered
            pick = logits
            if r.constraint is not None:
                pick = logits.masked_fill(~r.constraint.allowed().to(device)[None], float("-inf"))
            tok = int(sample_rows(pick, t, k, p, s, zero, mode)[0])
            lp_all = torch.log_softmax(logits[0], dim=-1)
            pairs = []
            if r.top_logprobs:
                v, i = lp_all.topk(r.top_logprobs)
                pairs = list(zip(i.tolist(), v.tolist()))
            self._accept(job, tok, float(lp_all[tok]), pairs)
        decoding = [j for j in self._rows if j is not None and j.last >= 0]
        if not decoding:
            return
        hi = max(j.slot for j in decoding) + 1
        batch = min(self.slots, 1 << (hi - 1).bit_length())  # few step shapes: 1, 2, 4, 8, ...
        idle = SamplingParams(temperature=0.0, top_p=1.0)
        params, seeds, tokens, positions, counters = [idle] * batch, [0] * batch, [0] * batch, [0] * batch, [0] * batch
        for i in range(batch):
            job = self._rows[i]
            if job is None:
                continue
            if job.last < 0:  # still prefilling: its next prefill overwrites what this step writes
                positions[i] = job.prefilled
                continue
            n = len(job.output.ids)
            params[i], seeds[i], tokens[i] = job.request.params, job.request.seed, job.last
            positions[i], counters[i] = len(job.request.prompt) + n - 1, n
        t, k, p, s = row_tensors(params, seeds, device)
        want = 1 + max(j.request.top_logprobs for j in decoding)
        allowed = None
        if any(j.request.constraint is not None for j in decoding):
            allowed = torch.ones((batch, self.model.args.vocab_size), dtype=torch.bool)
            for job in decoding:
                if job.request.constraint is not None:
                    allowed[job.slot] = job.request.constraint.allowed()
            allowed = allowed.to(device)
        out = self.decoder.decode(
            torch.tensor(tokens, device=device),
            torch.tensor(positions, device=device),
            t,
            k,
            p,
            s,
            torch.tensor(counters, device=device),
            batch_mode([j.request.params for j in decoding]),
            want,
            max(positions) + 1,
            allowed,
        )
        self.stats.decode_steps += 1
        self.stats.rows_decoded += len(decoding)
        ids, lps = out.ids.tolist(), out.logprobs.tolist()
        for job in decoding:
            i = job.slot
            pairs = []
            if job.request.top_logprobs:
                pairs = list(zip(out.top_ids[i, : job.request.top_logprobs].tolist(),
                                 out.top_logprobs[i, : job.request.top_logprobs].tolist()))  # fmt: skip
            self._accept(job, ids[i], lps[i], pairs)
