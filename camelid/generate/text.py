"""Text in, text out: prompts as strings, stop strings, incremental (streamed) detokenization."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from camelid.generate.engine import GenerationStats, RowOutput, generate_ids
from camelid.generate.sampling import SamplingParams
from camelid.model.transformer import Transformer
from camelid.tokenizer import Tokenizer

_CONTEXT_IDS = 4  # prompt tokens decoded ahead of the continuation, so its leading space survives


@dataclass
class GenerationResult:
    prompt_ids: list[int]
    ids: list[int]
    text: str
    logprobs: list[float]
    finish_reason: str
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)
    """With `top_logprobs=k`: the k likeliest (id, log-prob) pairs at each step."""
    stop_token: tuple[int, float, list[tuple[int, float]]] | None = None
    """The stop id that ended the row (in neither `ids` nor `text`), its log-prob and top pairs."""
    stream: TextStream | None = None


class TextStream:
    """Turns one row's growing id list into text deltas, holding back partial UTF-8 and partial stop strings."""

    def __init__(self, tokenizer: Tokenizer, prompt_ids: Sequence[int], stop: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.context = list(prompt_ids[-_CONTEXT_IDS:])
        self.prefix_len = len(tokenizer.decode(self.context))
        self.stop = [s for s in stop if s]
        self.emitted = 0
        self.text = ""
        self.stopped = False

    def update(self, ids: list[int]) -> str:
        """New text that is safe to show; sets `stopped` once a stop string appears."""
        self.text = self.tokenizer.decode(self.context + ids)[self.prefix_len :]
        cut = min((i for i in (self.text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.text, self.stopped = self.text[:cut], True
            safe = len(self.text)
        else:
            safe = len(self.text.rstrip("\ufffd"))
            for s in self.stop:  # a suffix that may grow into a stop string waits
                for k in range(min(len(s) - 1, safe), 0, -1):
                    if self.text[:safe].endswith(s[:k]):
                        safe -= k
                        break
        delta = self.text[self.emitted : max(safe, self.emitted)]
        self.emitted = max(safe, self.emitted)
        return delta


def finish_row(
    prompt_ids: list[int], row: RowOutput, stream: TextStream, index: int, on_text: Callable[[int, str], None] | None
) -> GenerationResult:
    """A finished row as text: its stream brought up to date, what the stream held back sent to `on_text`."""
    stream.update(row.ids)
    if on_text is not None and not stream.stopped and len(stream.text) > stream.emitted:
        on_text(index, stream.text[stream.emitted :])  # flush what was held back
    return GenerationResult(prompt_ids, row.ids, stream.text, row.logprobs, row.finish_reason, row.top_logprobs,
                            row.stop_token, stream)  # fmt: skip


def _keep_last(ids: list[int], n: int, bos: int | None) -> list[int]:
    if len(ids) <= n:
        return ids
    if bos is not None and ids and ids[0] == bos:
        return [bos] + ids[len(ids) - (n - 1) :]
    return ids[len(ids) - n :]


def generate(
    model: Transformer,
    tokenizer: Tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int = 128,
    params: SamplingParams = SamplingParams(),
    stop: Sequence[str] = (),
    seed: int | None = None,
    on_text: Callable[[int, str], None] | None = None,
    compile: bool = False,
    max_prompt_tokens: int | None = None,
) -> tuple[list[GenerationResult], GenerationStats]:
    """Generate for several text prompts at once (left-padded batch); `on_text(row, delta)` streams output.
    With `max_prompt_tokens`, longer prompts keep their last tokens (and their BOS), as evaluation harnesses do;
    without it a prompt that does not fit the context is an error. A `str` is one prompt."""
    if isinstance(prompts, str):
        prompts = [prompts]
    prompt_ids = [tokenizer.encode(p) for p in prompts]
    if max_prompt_tokens is not None:
        prompt_ids = [_keep_last(ids, max_prompt_tokens, tokenizer.bos_id) for ids in prompt_ids]
    return generate_from_ids(model, tokenizer, prompt_ids, max_new_tokens, params, stop, seed, on_text, compile)


def generate_from_ids(
    model: Transformer,
    tokenizer: Tokenizer,
    prompt_ids: Sequence[Sequence[int]],
    max_new_tokens: int = 128,
    params: SamplingParams = SamplingParams(),
    stop: Sequence[str] = (),
    seed: int | None = None,
    on_text: Callable[[int, str], None] | None = None,
    compile: bool = False,
    top_logprobs: int = 0,
    cancel: Callable[[], str | None] | None = None,
) -> tuple[list[GenerationResult], GenerationStats]:
    """`generate` for prompts given as token ids; `top_logprobs` keeps the k likeliest tokens at each step;
    `cancel` as in `generate_ids`."""
    prompt_ids = [list(p) for p in prompt_ids]
    streams = [TextStream(tokenizer, ids, stop) for ids in prompt_ids]

    def should_stop(row: int, ids: list[int]) -> bool:
        stream = streams[row]
        if stream.stop or on_text is not None:
            delta = stream.update(ids)
            if delta and on_text is not None:
                on_text(row, delta)
        return stream.stopped

    rows, stats = generate_ids(
        model,
        prompt_ids,
        max_new_tokens,
        params,
        stop_ids=tokenizer.stop_ids,
        seed=seed,
        should_stop=should_stop,
        compile=compile,
        top_logprobs=top_logprobs,
        cancel=cancel,
    )
    results = [finish_row(prompt_ids[b], row, streams[b], b, on_text) for b, row in enumerate(rows)]
    return results, stats
