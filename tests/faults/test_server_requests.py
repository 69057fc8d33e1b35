"""`camelid serve` under malformed requests and load: every malformed request is a 4xx carrying OpenAI's error
object, on a connection that then serves its next request correctly; 16 clients at once, mixing good and bad
requests, all get their answers and no 5xx.

Each case is raw bytes on a socket (so bodies no client library would send, and broken framing, can be sent),
followed on the same connection by a GET /v1/models that must still answer 200 when the server kept the
connection open."""

from __future__ import annotations

import json
import socket
import threading
import urllib.parse

import pytest

from tests.faults.cases import record
from tests.serve.running import served

pytestmark = pytest.mark.slow
AREA = "server requests"
LOAD = "server, 16 clients"


@pytest.fixture(scope="module")
def base():
    with served("smollm2-135m") as url:
        yield url


def _request(method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> bytes:
    head = {"Host": "x", "Content-Type": "application/json"}
    if body is not None:
        head["Content-Length"] = str(len(body))
    head.update(headers or {})
    lines = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in head.items() if v is not None]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def _read_response(f) -> tuple[int, dict, bytes]:
    status_line = f.readline()
    if not status_line:
        raise ConnectionError("the server closed the connection without answering")
    status = int(status_line.split()[1])
    headers = {}
    while (line := f.readline()) not in (b"\r\n", b"\n", b""):
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding") == "chunked":
        data = b""
        while (size := int(f.readline().strip() or b"0", 16)) > 0:
            data += f.read(size)
            f.readline()
        f.readline()
    else:
        data = f.read(int(headers.get("content-length", 0)))
    return status, headers, data


def _exchange(address, raw: bytes, then_check: bool = True) -> tuple[int, bytes, int | None]:
    """Send one raw request; answer: (status, body, status of a following GET /v1/models or None if closed)."""
    with socket.create_connection(address, timeout=120) as s:
        f = s.makefile("rb")
        s.sendall(raw)
        status, headers, data = _read_response(f)
        follow = None
        if then_check and headers.get("connection", "").lower() != "close":
            s.sendall(_request("GET", "/v1/models"))
            follow = _read_response(f)[0]
        return status, data, follow


def _json(obj) -> bytes:
    return json.dumps(obj).encode()


GOOD = {"model": "smollm2-135m", "prompt": "Hello", "max_tokens": 2, "temperature": 0}
CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "temperature": 0}


def malformed_cases() -> list[tuple[str, bytes]]:
    c = "/v1/completions"
    ch = "/v1/chat/completions"
    cases = [
        ("invalid UTF-8 body", _request("POST", c, b'{"prompt": "\xff\xfe"}')),
        ("lone surrogate in prompt", _request("POST", c, b'{"prompt": "\\ud800", "max_tokens": 1}')),
        ("lone surrogate in a key", _request("POST", c, b'{"\\udfff": 1, "prompt": "x"}')),
        ("lone surrogate in stop", _request("POST", c, b'{"prompt": "x", "stop": ["\\ud83d"]}')),
        ("NaN temperature", _request("POST", c, b'{"prompt": "x", "temperature": NaN}')),
        ("Infinity top_p", _request("POST", c, b'{"prompt": "x", "top_p": Infinity}')),
        ("-Infinity temperature", _request("POST", ch, b'{"messages": [], "temperature": -Infinity}')),
        ("huge float temperature", _request("POST", c, b'{"prompt": "x", "temperature": 1e999}')),
        ("negative Content-Length", _request("POST", c, _json(GOOD), {"Content-Length": "-5"})),
        ("garbage Content-Length", _request("POST", c, _json(GOOD), {"Content-Length": "abc"})),
        ("huge Content-Length", _request("POST", c, b"{}", {"Content-Length": str(2**40)})),
        ("Content-Length past the body", _request("POST", c, b'{"prompt": "x"}', {"Content-Length": "1000"})),
        ("chunked request body", _request("POST", c, b"5\r\n{}   \r\n0\r\n\r\n", {"Transfer-Encoding": "chunked"})),
        ("not JSON", _request("POST", c, b"prompt=hello")),
        ("truncated JSON", _request("POST", c, b'{"prompt": "x"')),
        ("JSON array body", _request("POST", c, b"[1, 2]")),
        ("JSON string body", _request("POST", c, b'"hello"')),
        ("JSON null body", _request("POST", c, b"null")),
        ("nested 100000 deep", _request("POST", c, b"[" * 100000 + b"]" * 100000)),
        ("nested object 50000 deep", _request("POST", c, b'{"a":' * 50000 + b"1" + b"}" * 50000)),
        ("unknown POST endpoint with a body", _request("POST", "/v1/nothing", _json(GOOD))),
        ("unknown GET endpoint", _request("GET", "/v1/nothing")),
        ("PUT", _request("PUT", c, _json(GOOD))),
        ("DELETE", _request("DELETE", "/v1/models")),
        ("PATCH", _request("PATCH", c, b"{}")),
        ("OPTIONS", _request("OPTIONS", c)),
        ("huge seed", _request("POST", c, _json({**GOOD, "seed": 10**30}))),
        ("negative huge seed", _request("POST", ch, _json({**CHAT, "seed": -(10**30)}))),
        ("string seed", _request("POST", c, _json({**GOOD, "seed": "7"}))),
        (
            "numeric text part",
            _request(
                "POST", ch, _json({**CHAT, "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]})
            ),
        ),  # fmt: skip
        (
            "image part",
            _request(
                "POST",
                ch,
                _json(
                    {
                        **CHAT,
                        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
                    }
                ),
            ),
        ),  # fmt: skip
        ("stream_options a string", _request("POST", c, _json({**GOOD, "stream": True, "stream_options": "yes"}))),
        ("stream_options a list", _request("POST", ch, _json({**CHAT, "stream": True, "stream_options": [1]}))),
        ("include_usage a string", _request("POST", c, _json({**GOOD, "stream_options": {"include_usage": "y"}}))),
        ("stream a string", _request("POST", c, _json({**GOOD, "stream": "true"}))),
        ("prompt a number", _request("POST", c, _json({**GOOD, "prompt": 5}))),
        ("prompt an object", _request("POST", c, _json({**GOOD, "prompt": {"a": 1}}))),
        ("prompt empty list", _request("POST", c, _json({**GOOD, "prompt": []}))),
        ("prompt mixed list", _request("POST", c, _json({**GOOD, "prompt": ["a", 1]}))),
        ("prompt ids out of vocabulary", _request("POST", c, _json({**GOOD, "prompt": [10**12]}))),
        ("prompt negative id", _request("POST", c, _json({**GOOD, "prompt": [-1]}))),
        ("prompt empty list of lists", _request("POST", c, _json({**GOOD, "prompt": [[]]}))),
        ("prompt longer than the context", _request("POST", c, _json({**GOOD, "prompt": [5] * 9000}))),
        ("max_tokens negative", _request("POST", c, _json({**GOOD, "max_tokens": -1}))),
        ("max_tokens 0 without echo", _request("POST", c, _json({**GOOD, "max_tokens": 0}))),
        ("max_tokens huge", _request("POST", ch, _json({**CHAT, "max_tokens": 10**20}))),
        ("max_tokens a float", _request("POST", c, _json({**GOOD, "max_tokens": 2.5}))),
        ("max_tokens a bool", _request("POST", c, _json({**GOOD, "max_tokens": True}))),
        ("n 0", _request("POST", c, _json({**GOOD, "n": 0}))),
        ("n huge", _request("POST", ch, _json({**CHAT, "n": 10**9}))),
        ("best_of other than n", _request("POST", c, _json({**GOOD, "best_of": 3}))),
        ("logprobs 1000", _request("POST", c, _json({**GOOD, "logprobs": 1000}))),
        ("logprobs negative", _request("POST", c, _json({**GOOD, "logprobs": -1}))),
        ("top_logprobs without logprobs", _request("POST", ch, _json({**CHAT, "top_logprobs": 3}))),
        ("top_logprobs 1000", _request("POST", ch, _json({**CHAT, "logprobs": True, "top_logprobs": 1000}))),
        ("temperature 3", _request("POST", c, _json({**GOOD, "temperature": 3}))),
        ("temperature negative", _request("POST", ch, _json({**CHAT, "temperature": -1}))),
        ("temperature a string", _request("POST", c, _json({**GOOD, "temperature": "hot"}))),
        ("top_p 0", _request("POST", c, _json({**GOOD, "top_p": 0}))),
        ("top_p 2", _request("POST", ch, _json({**CHAT, "top_p": 2}))),
        ("top_k a string", _request("POST", c, _json({**GOOD, "top_k": "5"}))),
        ("stop a number", _request("POST", c, _json({**GOOD, "stop": 5}))),
        ("stop a list of numbers", _request("POST", ch, _json({**CHAT, "stop": [1, 2]}))),
        (
            "echo streaming with logprobs",
            _request("POST", c, _json({**GOOD, "echo": True, "logprobs": 1, "stream": True})),
        ),  # fmt: skip
        ("another model", _request("POST", c, _json({**GOOD, "model": "gpt-4"}))),
        ("presence_penalty", _request("POST", c, _json({**GOOD, "presence_penalty": 1.0}))),
        ("logit_bias", _request("POST", ch, _json({**CHAT, "logit_bias": {"1": 5}}))),
        ("tools", _request("POST", ch, _json({**CHAT, "tools": [{"type": "function"}]}))),
        ("messages missing", _request("POST", ch, _json({"max_tokens": 2}))),
        ("messages empty", _request("POST", ch, _json({**CHAT, "messages": []}))),
        ("messages a string", _request("POST", ch, _json({**CHAT, "messages": "hi"}))),
        ("message a string", _request("POST", ch, _json({**CHAT, "messages": ["hi"]}))),
        ("message bad role", _request("POST", ch, _json({**CHAT, "messages": [{"role": "root", "content": "x"}]}))),
        ("message no content", _request("POST", ch, _json({**CHAT, "messages": [{"role": "user"}]}))),
        (
            "message content a number",
            _request("POST", ch, _json({**CHAT, "messages": [{"role": "user", "content": 3}]})),
        ),  # fmt: skip
        ("tokenize prompt a list", _request("POST", "/tokenize", _json({"prompt": [1, 2]}))),
        ("tokenize messages a string", _request("POST", "/tokenize", _json({"messages": "hi"}))),
        (
            "tokenize add_special_tokens a string",
            _request("POST", "/tokenize", _json({"prompt": "x", "add_special_tokens": "no"})),
        ),  # fmt: skip
        ("detokenize tokens a string", _request("POST", "/detokenize", _json({"tokens": "1 2"}))),
        ("detokenize tokens out of vocabulary", _request("POST", "/detokenize", _json({"tokens": [2**40]}))),
        ("detokenize booleans", _request("POST", "/detokenize", _json({"tokens": [True, False]}))),
    ]
    return cases


CASES = malformed_cases()


def test_a_get_with_a_body_is_answered_and_the_next_request_too(base):
    address = urllib.parse.urlsplit(base)
    status, data, follow = _exchange((address.hostname, address.port), _request("GET", "/v1/models", _json(GOOD)))
    record(AREA, "clean" if (status, follow) == (200, 200) else "5xx" if status >= 500 else "crash")
    assert (status, follow) == (200, 200), data[:300]


@pytest.mark.parametrize("name,raw", CASES, ids=[n for n, _ in CASES])
def test_a_malformed_request_is_a_4xx_with_openais_error_object(base, name, raw):
    address = urllib.parse.urlsplit(base)
    try:
        status, data, follow = _exchange((address.hostname, address.port), raw)
    except TimeoutError:
        record(AREA, "hang")
        pytest.fail(f"{name}: no answer")
    except ConnectionError as e:
        record(AREA, "crash")
        pytest.fail(f"{name}: {e}")
    if status >= 500:
        record(AREA, "5xx")
        pytest.fail(f"{name}: {status} {data[:300]!r}")
    ok = 400 <= status < 500
    try:
        error = json.loads(data)["error"]
        ok = ok and isinstance(error["message"], str) and error["message"] and "\n" not in error["message"]
    except (ValueError, KeyError, TypeError):
        ok = False
    ok = ok and follow in (None, 200)  # the connection's next request is served (or the server closed it)
    record(AREA, "clean" if ok else "crash")
    assert ok, f"{name}: {status} {data[:300]!r}, next request {follow}"


def test_sixteen_clients_at_once_all_get_answers(base):
    """16 threads, each on its own keep-alive connection: good completions and chats interleaved with malformed
    requests; every good one is a 200 with text, every bad one a 4xx, none a 5xx or lost; the server answers
    afterwards."""
    address = urllib.parse.urlsplit(base)
    address = (address.hostname, address.port)
    framing = ("Content-Length", "chunked")  # these close their connection: not mixed into a keep-alive session
    bad = [raw for name, raw in CASES if not any(w in name for w in framing)]
    outcomes: list[tuple[str, int]] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        with socket.create_connection(address, timeout=600) as s:
            f = s.makefile("rb")
            for j in range(3):
                good = k % 2 == 0 if j != 1 else k % 2 == 1
                if good:
                    body = {**CHAT, "seed": k} if k % 3 == 0 else {**GOOD, "seed": k}
                    path = "/v1/chat/completions" if k % 3 == 0 else "/v1/completions"
                    raw, kind = _request("POST", path, _json(body)), "good"
                else:
                    raw, kind = bad[(3 * k + j) % len(bad)], "bad"
                s.sendall(raw)
                status, headers, data = _read_response(f)
                with lock:
                    outcomes.append((kind, status))
                if headers.get("connection", "").lower() == "close":
                    return

    threads = [threading.Thread(target=client, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=900)
    hung = sum(t.is_alive() for t in threads)
    for kind, status in outcomes:
        good = status == 200 if kind == "good" else 400 <= status < 500
        record(LOAD, "5xx" if status >= 500 else "clean" if good else "crash")
    for _ in range(hung):
        record(LOAD, "hang")
    assert hung == 0
    assert all(s < 500 for _, s in outcomes), outcomes
    assert all(s == 200 for k, s in outcomes if k == "good") and all(400 <= s < 500 for k, s in outcomes if k == "bad")
    assert sum(k == "good" for k, _ in outcomes) >= 16
    status, _, _ = _exchange(address, _request("GET", "/health"), then_check=False)
    assert status == 200
