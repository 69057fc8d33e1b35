"""`camelid serve`: an OpenAI-compatible HTTP server for one model.

Endpoints: `GET /v1/models`, `POST /v1/completions` (text or token-id prompts, `echo`, `logprobs`),
`POST /v1/chat/completions` (the model's own chat template), both with `stream` (server-sent events) and
`n`; vLLM's `POST /tokenize`, `POST /detokenize` and `GET /tokenizer_info`, which lm-eval-harness's
`local-completions` model uses; and `GET /health`. Errors are OpenAI's JSON error object with a 4xx status.

Requests are served one at a time (a lock around the model); the choices and prompts of one request run as
one batch. Standard library HTTP server, no extra dependencies.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch

from camelid.errors import CamelidError
from camelid.generate.chat import PLAIN_TEMPLATE, render
from camelid.generate.sampling import SamplingParams, sample
from camelid.generate.text import TextStream, generate_from_ids

log = logging.getLogger(__name__)

MAX_N = 16
MAX_LOGPROBS = 20


class APIError(Exception):
    """A request the server refuses: HTTP status, message, the offending parameter."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": None}}


class ClientGoneError(Exception):
    """The client closed the connection while a response was streaming."""


# -- request fields ---------------------------------------------------------------------------------------


def _get(body: dict, key: str, kinds: tuple, default: Any = None) -> Any:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) and bool not in kinds:  # bool is an int in Python, not in JSON
        raise APIError(400, f"'{key}' must be {' or '.join(k.__name__ for k in kinds)}, got {value!r}", key)
    if not isinstance(value, kinds):
        raise APIError(400, f"'{key}' must be {' or '.join(k.__name__ for k in kinds)}, got {value!r}", key)
    return value


def _stop_list(body: dict) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise APIError(400, f"'stop' must be a string or a list of strings, got {stop!r}", "stop")
    return [s for s in stops if s]


def _unsupported(body: dict, allowed_zero: Iterable[str], must_be_empty: Iterable[str]) -> None:
    for key in allowed_zero:
        if body.get(key) not in (None, 0, 0.0):
            raise APIError(400, f"'{key}' is not supported by this server (only 0)", key)
    for key in must_be_empty:
        if body.get(key):
            raise APIError(400, f"'{key}' is not supported by this server", key)


def _sampling(body: dict) -> SamplingParams:
    temperature = float(_get(body, "temperature", (int, float), 1.0))
    top_p = float(_get(body, "top_p", (int, float), 1.0))
    top_k = _get(body, "top_k", (int,), None)
    if temperature < 0 or temperature > 2:
        raise APIError(400, f"'temperature' must be between 0 and 2, got {temperature}", "temperature")
    if not 0 < top_p <= 1:
        raise APIError(400, f"'top_p' must be in (0, 1], got {top_p}", "top_p")
    if top_k is not None and top_k < 1:
        top_k = None  # vLLM and llama.cpp treat 0 or -1 as "off"
    return SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p)


# -- the model side ---------------------------------------------------------------------------------------


@dataclass
class Choice:
    """One generated continuation: its tokens, their texts and log-probabilities, and why it ended."""

    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top: list[list[tuple[int, float]]] = field(default_factory=list)
    text: str = ""
    finish_reason: str = "length"
    stop_token: tuple[int, float, list[tuple[int, float]]] | None = None
    """The stop id that ended the choice (not in `ids` or the text), with its log-prob and top pairs."""


@dataclass
class Scored:
    """A prompt scored by one forward pass: each token's log-prob (None for the first), the top pairs at each
    position, and the logits of the next token."""

    logprobs: list[float | None]
    top: list[list[tuple[int, float]]]
    next_logits: torch.Tensor


class Engine:
    """The served model: tokenization, scoring and batched generation, one request at a time."""

    def __init__(self, model, tokenizer, name: str, chat_template: str | None = None) -> None:
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.chat_template = chat_template
        self.lock = threading.Lock()
        self.created = int(time.time())
        self.context = model.args.max_seq_len

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
        device = self.model.tok_embeddings.weight.device
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
    ) -> list[Choice]:
        """One new token per prompt from logits already computed by `score` (no second forward pass)."""
        logits = torch.stack([s.next_logits for s in scored])
        generator = torch.Generator(device=logits.device)
        generator.manual_seed(seed if seed is not None else torch.seed())
        nxt = sample(logits, params, generator).tolist()
        lps = torch.log_softmax(logits, dim=-1)
        choices = []
        for b, tok in enumerate(nxt):
            lp = float(lps[b, tok])
            pairs = []
            if top:
                v, i = lps[b].topk(top)
                pairs = list(zip(i.tolist(), v.tolist()))
            if tok in self.tokenizer.stop_ids:
                choices.append(Choice(finish_reason="stop", stop_token=(tok, lp, pairs)))
                continue
            stream = TextStream(self.tokenizer, prompts[b], stop)
            stream.update([tok])
            if stream.stopped and not stream.text:
                choices.append(Choice([], [], [], "", "stop"))
            else:
                choices.append(Choice([tok], [lp], [pairs], stream.text, "stop" if stream.stopped else "length"))
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
    ) -> list[Choice]:
        """Continue each prompt (one batch); `on_text(row, delta)` streams the text as it is made."""
        for p in prompts:
            if len(p) >= self.context:
                raise APIError(
                    400,
                    f"the prompt is {len(p)} tokens; this model's context is {self.context} tokens. Shorten it.",
                    "prompt",
                )
        results, _ = generate_from_ids(
            self.model, self.tokenizer, prompts, max_tokens, params, stop, seed, on_text, top_logprobs=top
        )
        choices = []
        for r in results:
            n = len(r.ids)
            if r.stream.stopped:  # keep the tokens that made the returned text, not those of the stop string
                n = next((k for k in range(n + 1) if self._text_len(r.stream, r.ids[:k]) >= len(r.text)), n)
            choices.append(Choice(r.ids[:n], r.logprobs[:n], r.top_logprobs[:n], r.text, r.finish_reason, r.stop_token))
        return choices


# -- the endpoints ----------------------------------------------------------------------------------------


class Reply:
    """The id, object type and creation time shared by a response body and by each of its stream chunks."""

    def __init__(self, engine: Engine, prefix: str, kind: str) -> None:
        self.id, self.kind, self.model = f"{prefix}-{uuid.uuid4().hex}", kind, engine.name
        self.created = int(time.time())

    def body(self, choices: list[dict], usage: dict | None = None, kind: str | None = None) -> dict:
        out = {"id": self.id, "object": kind or self.kind, "created": self.created, "model": self.model}
        out["choices"] = choices
        if usage is not None:
            out["usage"] = usage
        return out


def _check_model(engine: Engine, body: dict) -> None:
    model = body.get("model")
    if model is not None and model != engine.name:
        raise APIError(
            404, f"the model '{model}' does not exist; this server serves '{engine.name}'", "model", "not_found_error"
        )


def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _prompts(engine: Engine, body: dict) -> list[list[int]]:
    """`prompt` as token-id lists: a string, a list of strings, a list of ids or a list of id lists."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return [engine.encode(prompt)]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(x, int) and not isinstance(x, bool) for x in prompt):
            return [_valid_ids(engine, prompt)]
        if all(isinstance(x, str) for x in prompt):
            return [engine.encode(x) for x in prompt]
        if all(isinstance(x, list) and x and all(isinstance(t, int) for t in x) for x in prompt):
            return [_valid_ids(engine, x) for x in prompt]
    raise APIError(
        400, "'prompt' must be a string, a list of strings, or token ids (a list or a list of lists)", "prompt"
    )


def _valid_ids(engine: Engine, ids: list[int]) -> list[int]:
    bad = [i for i in ids if not 0 <= i < engine.model.args.vocab_size]
    if bad:
        raise APIError(
            400, f"token id {bad[0]} is outside the vocabulary (0..{engine.model.args.vocab_size - 1})", "prompt"
        )
    return ids


def completions(engine: Engine, body: dict, emit: Callable[[dict], None] | None) -> dict | None:
    """POST /v1/completions. With `emit` (streaming), sends chunks and returns None."""
    _check_model(engine, body)
    _unsupported(body, ("presence_penalty", "frequency_penalty"), ("suffix", "logit_bias"))
    prompts = _prompts(engine, body)
    if not all(prompts):
        raise APIError(400, "'prompt' is empty (this model's tokenizer adds no BOS token to start from)", "prompt")
    max_tokens = _get(body, "max_tokens", (int,), 16)
    n = _get(body, "n", (int,), 1)
    best_of = _get(body, "best_of", (int,), n)
    echo = _get(body, "echo", (bool,), False)
    logprobs = _get(body, "logprobs", (int,), None)
    seed = _get(body, "seed", (int,), None)
    stream = emit is not None
    if not 1 <= n <= MAX_N:
        raise APIError(400, f"'n' must be between 1 and {MAX_N}, got {n}", "n")
    if best_of != n:
        raise APIError(400, "'best_of' other than 'n' is not supported by this server", "best_of")
    if max_tokens < 0 or (max_tokens == 0 and not echo):
        raise APIError(400, f"'max_tokens' must be >= 1 (or 0 with echo), got {max_tokens}", "max_tokens")
    if logprobs is not None and not 0 <= logprobs <= MAX_LOGPROBS:
        raise APIError(400, f"'logprobs' must be between 0 and {MAX_LOGPROBS}, got {logprobs}", "logprobs")
    if stream and echo and logprobs is not None:
        raise APIError(400, "'echo' with 'logprobs' is not supported when streaming", "echo")
    params, stop = _sampling(body), _stop_list(body)
    top = logprobs or 0
    reply = Reply(engine, "cmpl", "text_completion")
    flat = [p for p in prompts for _ in range(n)]  # choice index = prompt index * n + k, as OpenAI numbers them

    def chunk(index: int, text: str, finish: str | None, lp: dict | None = None) -> dict:
        return reply.body([{"index": index, "text": text, "logprobs": lp, "finish_reason": finish}])

    with engine.lock:
        scored = engine.score(prompts, top) if echo and logprobs is not None else None
        if stream and echo:
            for i, p in enumerate(flat):
                emit(chunk(i, engine.tokenizer.decode(p), None))
        if max_tokens == 1 and scored is not None and not stream:  # lm-eval's request: no second forward pass
            choices = engine.next_token(flat, [scored[i // n] for i in range(len(flat))], params, stop, seed, top)
        elif max_tokens:
            on_text = (lambda row, delta: emit(chunk(row, delta, None))) if stream else None
            choices = engine.generate(flat, max_tokens, params, stop, seed, top, on_text)
        else:
            choices = [Choice(finish_reason="length") for _ in flat]
    usage = _usage(sum(len(p) for p in prompts), sum(_generated(c) for c in choices))
    if stream:
        for i, c in enumerate(choices):
            lp = _completion_logprobs(engine, flat[i], c, None, top) if logprobs is not None else None
            emit(chunk(i, "", c.finish_reason, lp))
        if (body.get("stream_options") or {}).get("include_usage"):
            emit(reply.body([], usage))
        return None
    out = []
    for i, c in enumerate(choices):
        prompt_ids = flat[i]
        text = (engine.tokenizer.decode(prompt_ids) if echo else "") + c.text
        lp = None
        if logprobs is not None:
            lp = _completion_logprobs(engine, prompt_ids, c, scored[i // n] if echo else None, top)
        out.append({"index": i, "text": text, "logprobs": lp, "finish_reason": c.finish_reason})
    return reply.body(out, usage)


def _generated(c: Choice) -> int:
    """Tokens the model produced for a choice, counting the stop token that ended it (as vLLM counts)."""
    return len(c.ids) + (c.stop_token is not None)


def _completion_logprobs(engine: Engine, prompt: list[int], c: Choice, scored: Scored | None, top: int) -> dict:
    """The legacy completions `logprobs` object: tokens, token_logprobs, top_logprobs, text_offset. A stop token
    that ended the choice is listed last (its text is not in the completion), as OpenAI and vLLM list it:
    lm-eval reads the prompt's log-probs as all entries but the last."""
    lps, tops, texts = [], [], []
    if scored is not None:
        texts = engine.token_texts(prompt)
        lps = list(scored.logprobs)
        tops = [None] + [_top_dict(engine, t) for t in scored.top[1:]]
    texts += engine.token_texts(c.ids, prefix=prompt)
    lps += c.logprobs
    tops += [_top_dict(engine, t) for t in c.top] if top else [{} for _ in c.ids]
    if c.stop_token is not None:
        tok, lp, pairs = c.stop_token
        texts.append(engine.tokenizer.decode([tok]) or engine.tokenizer.id_to_piece(tok))
        lps.append(lp)
        tops.append(_top_dict(engine, pairs) if top else {})
    # offsets into prompt + completion text, as OpenAI gives them (a completion without echo starts at the
    # prompt's length)
    offsets, pos = [], 0 if scored is not None else len(engine.tokenizer.decode(prompt))
    for t in texts:
        offsets.append(pos)
        pos += len(t)
    return {"tokens": texts, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}


def _top_dict(engine: Engine, pairs: list[tuple[int, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for i, lp in pairs:
        out.setdefault(engine.tokenizer.decode([i]), lp)  # two ids can decode alike: keep the likelier
    return out


def _message_text(m: dict, i: int) -> dict[str, str]:
    if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant"):
        raise APIError(400, f"messages[{i}] must have a role of system, developer, user or assistant", "messages")
    content = m.get("content")
    if isinstance(content, list):  # content parts: only text
        if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
            raise APIError(400, f"messages[{i}]: only text content parts are supported", "messages")
        content = "".join(p.get("text", "") for p in content)
    if not isinstance(content, str):
        raise APIError(400, f"messages[{i}].content must be a string or a list of text parts", "messages")
    role = "system" if m["role"] == "developer" else m["role"]
    return {"role": role, "content": content}


def chat_prompt(engine: Engine, messages: list[dict[str, str]]) -> tuple[list[int], list[str]]:
    """Token ids of the conversation rendered with the model's chat template (as `camelid chat` renders it),
    and the stop strings a template-less model needs."""
    tok = engine.tokenizer
    bos = tok.id_to_piece(tok.bos_id) if getattr(tok, "bos_id", None) is not None else ""
    eos = tok.id_to_piece(tok.eos_id) if getattr(tok, "eos_id", None) is not None else ""
    try:
        text = render(engine.chat_template or PLAIN_TEMPLATE, messages, bos_token=bos, eos_token=eos)
    except CamelidError as e:
        raise APIError(400, str(e), "messages") from None
    return engine.encode(text), ([] if engine.chat_template else ["\nUser:"])


def chat_completions(engine: Engine, body: dict, emit: Callable[[dict], None] | None) -> dict | None:
    """POST /v1/chat/completions. With `emit` (streaming), sends chunks and returns None."""
    _check_model(engine, body)
    _unsupported(body, ("presence_penalty", "frequency_penalty"), ("logit_bias", "tools", "functions"))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "'messages' must be a non-empty list", "messages")
    messages = [_message_text(m, i) for i, m in enumerate(messages)]
    prompt, template_stop = chat_prompt(engine, messages)
    default_max = max(1, engine.context - len(prompt))
    max_tokens = _get(body, "max_completion_tokens", (int,), None) or _get(body, "max_tokens", (int,), default_max)
    n = _get(body, "n", (int,), 1)
    want_lp = _get(body, "logprobs", (bool,), False)
    top = _get(body, "top_logprobs", (int,), 0)
    seed = _get(body, "seed", (int,), None)
    if max_tokens < 1:
        raise APIError(400, f"'max_tokens' must be >= 1, got {max_tokens}", "max_tokens")
    if not 1 <= n <= MAX_N:
        raise APIError(400, f"'n' must be between 1 and {MAX_N}, got {n}", "n")
    if not 0 <= top <= MAX_LOGPROBS or (top and not want_lp):
        raise APIError(
            400, f"'top_logprobs' must be between 0 and {MAX_LOGPROBS} and needs 'logprobs': true", "top_logprobs"
        )
    params, stop = _sampling(body), _stop_list(body) + template_stop
    reply = Reply(engine, "chatcmpl", "chat.completion.chunk")
    stream = emit is not None

    def chunk(index: int, delta: dict, finish: str | None, lp: dict | None = None) -> dict:
        return reply.body([{"index": index, "delta": delta, "logprobs": lp, "finish_reason": finish}])

    started: set[int] = set()

    def on_text(row: int, delta: str) -> None:
        if row not in started:
            started.add(row)
            emit(chunk(row, {"role": "assistant", "content": ""}, None))
        emit(chunk(row, {"content": delta}, None))

    with engine.lock:
        choices = engine.generate([prompt] * n, max_tokens, params, stop, seed, top, on_text if stream else None)
    usage = _usage(len(prompt), sum(_generated(c) for c in choices))
    if stream:
        for i, c in enumerate(choices):
            if i not in started:
                emit(chunk(i, {"role": "assistant", "content": ""}, None))
            emit(chunk(i, {}, c.finish_reason, _chat_logprobs(engine, prompt, c, top) if want_lp else None))
        if (body.get("stream_options") or {}).get("include_usage"):
            emit(reply.body([], usage))
        return None
    out = []
    for i, c in enumerate(choices):
        out.append(
            {
                "index": i,
                "message": {"role": "assistant", "content": c.text},
                "logprobs": _chat_logprobs(engine, prompt, c, top) if want_lp else None,
                "finish_reason": c.finish_reason,
            }
        )
    return reply.body(out, usage, kind="chat.completion")


def _chat_logprobs(engine: Engine, prompt: list[int], c: Choice, top: int) -> dict:
    texts = engine.token_texts(c.ids, prefix=prompt)

    def entry(text: str, lp: float) -> dict:
        return {"token": text, "logprob": lp, "bytes": list(text.encode("utf-8"))}

    content = []
    for k, (text, lp) in enumerate(zip(texts, c.logprobs)):
        alts = [entry(engine.tokenizer.decode([i]), v) for i, v in c.top[k]] if top else []
        content.append({**entry(text, lp), "top_logprobs": alts})
    return {"content": content}


def tokenize(engine: Engine, body: dict) -> dict:
    """vLLM's POST /tokenize: {"prompt": str, "add_special_tokens": bool} or {"messages": [...]}."""
    if "messages" in body:
        messages = [_message_text(m, i) for i, m in enumerate(body.get("messages") or [])]
        ids, _ = chat_prompt(engine, messages)
    else:
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise APIError(400, "'prompt' must be a string", "prompt")
        ids = engine.encode(prompt, special=bool(body.get("add_special_tokens", True)))
    return {"tokens": ids, "count": len(ids), "max_model_len": engine.context}


def detokenize(engine: Engine, body: dict) -> dict:
    ids = body.get("tokens")
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        raise APIError(400, "'tokens' must be a list of token ids", "tokens")
    return {"prompt": engine.tokenizer.decode(_valid_ids(engine, ids))}


def tokenizer_info(engine: Engine) -> dict:
    tok = engine.tokenizer

    def piece(i):
        return tok.id_to_piece(i) if i is not None else None

    return {
        "bos_token": piece(tok.bos_id),
        "eos_token": piece(tok.eos_id),
        "pad_token": piece(tok.pad_id),
        "chat_template": engine.chat_template,
        "model_max_length": engine.context,
        "vocab_size": tok.vocab_size,
    }


def models(engine: Engine) -> dict:
    card = {"id": engine.name, "object": "model", "created": engine.created, "owned_by": "camelid",
            "max_model_len": engine.context}  # fmt: skip
    return {"object": "list", "data": [card]}


# -- HTTP -------------------------------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "camelid"
    engine: Engine  # set on the subclass made by `make_server`

    def log_message(self, fmt: str, *args) -> None:
        log.info("%s %s", self.address_string(), fmt % args)

    def _json(self, status: int, obj: dict) -> None:
        data = json.dumps(obj, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError as e:
            raise APIError(400, f"the request body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise APIError(400, "the request body must be a JSON object")
        return body

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?")[0].rstrip("/")
        if path == "/health":
            self._json(200, {"status": "ok"})
        elif path == "/v1/models":
            self._json(200, models(self.engine))
        elif path == f"/v1/models/{self.engine.name}":
            self._json(200, models(self.engine)["data"][0])
        elif path == "/tokenizer_info":
            self._json(200, tokenizer_info(self.engine))
        else:
            self._json(404, APIError(404, f"no such endpoint: GET {path}", kind="not_found_error").body())

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?")[0].rstrip("/")
        routes = {"/v1/completions": completions, "/v1/chat/completions": chat_completions}
        simple = {"/tokenize": tokenize, "/detokenize": detokenize}
        streaming = False
        try:
            if path not in routes and path not in simple:
                raise APIError(404, f"no such endpoint: POST {path}", kind="not_found_error")
            body = self._body()
            if path in simple:
                self._json(200, simple[path](self.engine, body))
                return
            streaming = bool(_get(body, "stream", (bool,), False))
            if not streaming:
                self._json(200, routes[path](self.engine, body, None))
                return
            self._stream(routes[path], body)
        except APIError as e:
            if streaming and getattr(self, "_stream_started", False):
                self._send_event(e.body())
                self._end_stream()
            else:
                self._json(e.status, e.body())
        except CamelidError as e:
            self._json(400, APIError(400, str(e)).body())
        except ClientGoneError:
            self.close_connection = True
        except Exception as e:  # a bug, not the client's fault: say so, keep serving
            log.exception("error serving %s", path)
            if getattr(self, "_stream_started", False):
                self.close_connection = True
            else:
                self._json(500, APIError(500, f"internal server error: {e!r}", kind="server_error").body())

    def _stream(self, route, body: dict) -> None:
        """Server-sent events over chunked transfer encoding; headers go out only with the first event, so a
        request refused before any output still gets a plain JSON error and its status."""
        self._stream_started = False

        def emit(obj: dict) -> None:
            if not self._stream_started:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self._stream_started = True
            self._send_event(obj)

        route(self.engine, body, emit)
        if not self._stream_started:
            emit({})
        self._write_chunk(b"data: [DONE]\n\n")
        self._end_stream()

    def _send_event(self, obj: dict) -> None:
        self._write_chunk(b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n")

    def _write_chunk(self, data: bytes) -> None:
        try:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            raise ClientGoneError() from None

    def _end_stream(self) -> None:
        try:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass


def make_server(engine: Engine | None, host: str, port: int) -> ThreadingHTTPServer:
    """The HTTP server (listening, not yet serving); its handler's `engine` may be set later."""
    handler = type("CamelidHandler", (Handler,), {"engine": engine})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
