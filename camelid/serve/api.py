"""OpenAI's API over an `Engine`: request checking, the completions and chat endpoints (bodies and stream
chunks), vLLM's tokenizer endpoints, and OpenAI's error object."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from camelid.errors import CamelidError
from camelid.generate.chat import chat_ids, chat_stop
from camelid.generate.constrain import GrammarError, json_grammar
from camelid.generate.sampling import DEFAULT_TEMPERATURE, DEFAULT_TOP_P, SamplingParams
from camelid.generate.text import GenerationResult
from camelid.serve.engine import Engine, Scored

MAX_N = 16
MAX_LOGPROBS = 20


class APIError(Exception):
    """A request the server refuses: HTTP status, message, the offending parameter."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": None}}


# -- request fields ---------------------------------------------------------------------------------------


def get_field(body: dict, key: str, kinds: tuple, default: Any = None) -> Any:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) and bool not in kinds:  # bool is an int in Python, not in JSON
        raise APIError(400, f"'{key}' must be {' or '.join(k.__name__ for k in kinds)}, got {value!r}", key)
    if not isinstance(value, kinds):
        raise APIError(400, f"'{key}' must be {' or '.join(k.__name__ for k in kinds)}, got {value!r}", key)
    if isinstance(value, float) and not math.isfinite(value):
        raise APIError(400, f"'{key}' must be a finite number, got {value!r}", key)
    return value


def _seed(body: dict) -> int | None:
    seed = get_field(body, "seed", (int,), None)
    if seed is not None and not -(2**63) <= seed < 2**63:
        raise APIError(400, f"'seed' must fit in 64 bits, got {seed}", "seed")
    return seed


def _include_usage(body: dict) -> bool:
    options = get_field(body, "stream_options", (dict,), {})
    return bool(get_field(options, "include_usage", (bool,), False))


def _int_in(body: dict, key: str, default: int | None, low: int, high: int, hint: str = "") -> int | None:
    value = get_field(body, key, (int,), default)
    if value is not None and not low <= value <= high:
        raise APIError(400, f"'{key}' must be between {low} and {high}{hint}, got {value}", key)
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
    """The request's sampling parameters, checked by `SamplingParams` itself (one set of rules for the Python
    API, the CLI and the server), plus OpenAI's upper bound on temperature."""
    # camelid's one default (the Python API's and the CLI's), not OpenAI's 1.0: the same request, the same text
    temperature = float(get_field(body, "temperature", (int, float), DEFAULT_TEMPERATURE))
    top_p = float(get_field(body, "top_p", (int, float), DEFAULT_TOP_P))
    top_k = get_field(body, "top_k", (int,), None)
    if top_k is not None and (top_k >= 2**31 or top_k < 1):
        top_k = None  # past any vocabulary, or vLLM's and llama.cpp's 0 / -1 for "off": no filtering
    if temperature > 2:
        raise APIError(400, f"'temperature' must be between 0 and 2, got {temperature}", "temperature")
    try:
        return SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p)
    except CamelidError as e:
        param = next((k for k in ("temperature", "top_p", "top_k") if str(e).startswith(k)), None)
        raise APIError(400, str(e), param) from None


def _grammar(engine: Engine, body: dict) -> str | None:
    """OpenAI's `response_format`: None for text; the grammar of any JSON object (json_object) or of JSON
    matching a schema (json_schema), compiled once here so that a bad schema is a 400 before any model work."""
    fmt = body.get("response_format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    try:
        if kind == "json_object":
            grammar = json_grammar(None)
        elif kind == "json_schema":
            spec = fmt.get("json_schema")
            if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
                raise GrammarError("'json_schema' must be an object with a 'schema' (a JSON Schema object)")
            grammar = json_grammar(spec["schema"])
        else:
            raise GrammarError(f"'type' must be 'text', 'json_object' or 'json_schema', got {kind!r}")
        engine.constraint(grammar)
    except GrammarError as e:
        raise APIError(400, f"response_format: {e}", "response_format") from None
    return grammar


# -- the model side ---------------------------------------------------------------------------------------


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


def _check_size(engine: Engine, texts: list[str | list[int]], what: str = "a prompt") -> None:
    """The prompt limits, before anything is tokenized: how many, and the bytes of each."""
    limits = engine.limits
    if len(texts) > limits.max_prompts:
        raise APIError(400, f"a request takes at most {limits.max_prompts} prompts, got {len(texts)}", "prompt")
    for x in texts:
        size = len(x.encode("utf-8")) if isinstance(x, str) else 4 * len(x)
        if size > limits.max_prompt_bytes:
            raise APIError(
                413, f"{what} is at most {limits.max_prompt_bytes:,} bytes on this server, got {size:,}", "prompt"
            )


def _check_rows(engine: Engine, prompts: int, n: int) -> None:
    if prompts * n > engine.limits.max_rows:
        raise APIError(
            400,
            f"{prompts} prompt(s) x n={n} asks for {prompts * n} sequences at once; this server makes at most "
            f"{engine.limits.max_rows}",
            "n",
        )


def _prompts(engine: Engine, body: dict) -> list[list[int]]:
    """`prompt` as token-id lists: a string, a list of strings, a list of ids or a list of id lists."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        _check_size(engine, [prompt])
        return [engine.encode(prompt)]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(x, int) and not isinstance(x, bool) for x in prompt):
            _check_size(engine, [prompt])
            return [_valid_ids(engine, prompt)]
        if all(isinstance(x, str) for x in prompt):
            _check_size(engine, prompt)
            return [engine.encode(x) for x in prompt]
        if all(isinstance(x, list) and x and all(isinstance(t, int) for t in x) for x in prompt):
            _check_size(engine, prompt)
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


def _is_batch(prompt) -> bool:
    return isinstance(prompt, list) and bool(prompt) and not isinstance(prompt[0], int)


def _n(body: dict) -> int:
    return _int_in(body, "n", 1, 1, MAX_N)


def completions(engine: Engine, body: dict, emit: Callable[[dict], None] | None) -> dict | None:
    """POST /v1/completions. With `emit` (streaming), sends chunks and returns None."""
    _check_model(engine, body)
    _unsupported(body, ("presence_penalty", "frequency_penalty"), ("suffix", "logit_bias"))
    _check_rows(engine, len(body["prompt"]) if _is_batch(body.get("prompt")) else 1, _n(body))
    prompts = _prompts(engine, body)
    if not all(prompts):
        raise APIError(400, "'prompt' is empty (this model's tokenizer adds no BOS token to start from)", "prompt")
    echo = get_field(body, "echo", (bool,), False)
    max_tokens = _int_in(body, "max_tokens", 16, 0 if echo else 1, 2**31 - 1, "" if echo else " (or 0 with echo)")
    n = _int_in(body, "n", 1, 1, MAX_N)
    best_of = get_field(body, "best_of", (int,), n)
    logprobs = _int_in(body, "logprobs", None, 0, MAX_LOGPROBS)
    seed = _seed(body)
    include_usage = _include_usage(body)
    stream = emit is not None
    if best_of != n:
        raise APIError(400, "'best_of' other than 'n' is not supported by this server", "best_of")
    if stream and echo and logprobs is not None:
        raise APIError(400, "'echo' with 'logprobs' is not supported when streaming", "echo")
    params, stop = _sampling(body), _stop_list(body)
    grammar = _grammar(engine, body)
    if grammar is not None and (echo or max_tokens == 0):
        raise APIError(400, "'response_format' cannot be combined with 'echo'", "response_format")
    top = logprobs or 0
    reply = Reply(engine, "cmpl", "text_completion")
    flat = [p for p in prompts for _ in range(n)]  # choice index = prompt index * n + k, as OpenAI numbers them

    def chunk(index: int, text: str, finish: str | None, lp: dict | None = None) -> dict:
        return reply.body([{"index": index, "text": text, "logprobs": lp, "finish_reason": finish}])

    with engine.turn() as cancel:
        scored = engine.score(prompts, top) if echo and logprobs is not None else None
        if stream and echo:
            for i, p in enumerate(flat):
                emit(chunk(i, engine.tokenizer.decode(p), None))
        if max_tokens == 1 and scored is not None and not stream:  # lm-eval's request: no second forward pass
            choices = engine.next_token(flat, [scored[i // n] for i in range(len(flat))], params, stop, seed, top)
        elif max_tokens:
            on_text = (lambda row, delta: emit(chunk(row, delta, None))) if stream else None
            choices = engine.generate(flat, max_tokens, params, stop, seed, top, on_text, cancel, grammar)
        else:
            choices = [GenerationResult(p, [], "", [], "length") for p in flat]
    usage = _usage(sum(len(p) for p in prompts), sum(_generated(c) for c in choices))
    if stream:
        for i, c in enumerate(choices):
            lp = _completion_logprobs(engine, flat[i], c, None, top) if logprobs is not None else None
            emit(chunk(i, "", c.finish_reason, lp))
        if include_usage:
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


def _generated(c: GenerationResult) -> int:
    """Tokens the model produced for a choice, counting the stop token that ended it (as vLLM counts)."""
    return len(c.ids) + (c.stop_token is not None)


def _completion_logprobs(
    engine: Engine, prompt: list[int], c: GenerationResult, scored: Scored | None, top: int
) -> dict:
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
    tops += [_top_dict(engine, t) for t in c.top_logprobs] if top else [{} for _ in c.ids]
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
        if not all(isinstance(p.get("text", ""), str) for p in content):
            raise APIError(400, f"messages[{i}]: a text part's 'text' must be a string", "messages")
        content = "".join(p.get("text", "") for p in content)
    if not isinstance(content, str):
        raise APIError(400, f"messages[{i}].content must be a string or a list of text parts", "messages")
    role = "system" if m["role"] == "developer" else m["role"]
    return {"role": role, "content": content}


def chat_prompt(engine: Engine, messages: list[dict[str, str]]) -> tuple[list[int], list[str]]:
    """Token ids of the conversation rendered with the model's chat template (as `camelid chat` renders it),
    and the stop strings a template-less model needs."""
    try:
        ids = chat_ids(engine.tokenizer, engine.chat_template, messages)
    except CamelidError as e:
        raise APIError(400, str(e), "messages") from None
    return ids, chat_stop(engine.chat_template)


def chat_completions(engine: Engine, body: dict, emit: Callable[[dict], None] | None) -> dict | None:
    """POST /v1/chat/completions. With `emit` (streaming), sends chunks and returns None."""
    _check_model(engine, body)
    _unsupported(body, ("presence_penalty", "frequency_penalty"), ("logit_bias", "tools", "functions"))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "'messages' must be a non-empty list", "messages")
    messages = [_message_text(m, i) for i, m in enumerate(messages)]
    _check_size(engine, ["".join(m["content"] for m in messages)], "a conversation")
    _check_rows(engine, 1, _n(body))
    prompt, template_stop = chat_prompt(engine, messages)
    default_max = max(1, engine.context - len(prompt))
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _int_in(body, key, default_max, 1, 2**31 - 1)
    n = _int_in(body, "n", 1, 1, MAX_N)
    want_lp = get_field(body, "logprobs", (bool,), False)
    top = get_field(body, "top_logprobs", (int,), 0)
    seed = _seed(body)
    include_usage = _include_usage(body)
    if not 0 <= top <= MAX_LOGPROBS or (top and not want_lp):
        raise APIError(
            400, f"'top_logprobs' must be between 0 and {MAX_LOGPROBS} and needs 'logprobs': true", "top_logprobs"
        )
    params, stop = _sampling(body), _stop_list(body) + template_stop
    grammar = _grammar(engine, body)
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

    with engine.turn() as cancel:
        choices = engine.generate(
            [prompt] * n, max_tokens, params, stop, seed, top, on_text if stream else None, cancel, grammar
        )
    usage = _usage(len(prompt), sum(_generated(c) for c in choices))
    if stream:
        for i, c in enumerate(choices):
            if i not in started:
                emit(chunk(i, {"role": "assistant", "content": ""}, None))
            emit(chunk(i, {}, c.finish_reason, _chat_logprobs(engine, prompt, c, top) if want_lp else None))
        if include_usage:
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


def _chat_logprobs(engine: Engine, prompt: list[int], c: GenerationResult, top: int) -> dict:
    texts = engine.token_texts(c.ids, prefix=prompt)

    def entry(text: str, lp: float) -> dict:
        return {"token": text, "logprob": lp, "bytes": list(text.encode("utf-8"))}

    content = []
    for k, (text, lp) in enumerate(zip(texts, c.logprobs)):
        alts = [entry(engine.tokenizer.decode([i]), v) for i, v in c.top_logprobs[k]] if top else []
        content.append({**entry(text, lp), "top_logprobs": alts})
    return {"content": content}


def tokenize(engine: Engine, body: dict) -> dict:
    """vLLM's POST /tokenize: {"prompt": str, "add_special_tokens": bool} or {"messages": [...]}."""
    if "messages" in body:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise APIError(400, "'messages' must be a non-empty list", "messages")
        messages = [_message_text(m, i) for i, m in enumerate(messages)]
        ids, _ = chat_prompt(engine, messages)
    else:
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise APIError(400, "'prompt' must be a string", "prompt")
        ids = engine.encode(prompt, special=get_field(body, "add_special_tokens", (bool,), True))
    return {"tokens": ids, "count": len(ids), "max_model_len": engine.context}


def detokenize(engine: Engine, body: dict) -> dict:
    ids = body.get("tokens")
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
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
