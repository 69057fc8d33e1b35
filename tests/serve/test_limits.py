"""Bounded work per request: each of the server's limits answers its 4xx (OpenAI's error object) before any model
work, and the server then answers a normal request at once; a request past its deadline is stopped; a streaming
client that stops reading is cancelled instead of holding the model for everyone else."""

import json
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.serve.running import served

pytestmark = pytest.mark.slow


def post(base: str, path: str, body: dict, timeout: float = 120) -> tuple[int, dict, float]:
    data = json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read()), time.monotonic() - t0
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), time.monotonic() - t0


@pytest.fixture(scope="module")
def base(debug_checkpoint):
    options = ["--max-prompts", "4", "--max-prompt-bytes", "2000", "--max-rows", "8", "--request-timeout", "2"]
    stream = ["--stream-write-timeout", "0.5", "--stream-buffer-bytes", "8192"]  # the stalled client overfills it
    with served(str(debug_checkpoint), *options, *stream) as url:
        yield url


def small(base) -> float:
    status, body, took = post(base, "/completions", {"prompt": "hello", "max_tokens": 2, "temperature": 0})
    assert status == 200 and body["choices"][0]["finish_reason"] in ("length", "stop"), body
    return took


@pytest.mark.parametrize(
    "body,status,needle",
    [
        ({"prompt": ["a"] * 5, "max_tokens": 1}, 400, "at most 4 prompts"),
        ({"prompt": "x" * 2001, "max_tokens": 1}, 413, "2,000 bytes"),
        ({"prompt": [[5] * 501], "max_tokens": 1}, 413, "2,000 bytes"),
        ({"prompt": ["a", "b", "c"], "n": 3, "max_tokens": 1}, 400, "9 sequences"),
    ],
)
def test_limits_refuse_before_work(base, body, status, needle):
    got, err, took = post(base, "/completions", body)
    assert got == status, err
    assert needle in err["error"]["message"] and err["error"]["type"] == "invalid_request_error"
    assert small(base) < 5  # the server answers the next request at once


def test_chat_messages_count_against_the_prompt_bytes(base):
    messages = [{"role": "user", "content": "y" * 2500}]
    got, err, _ = post(base, "/chat/completions", {"messages": messages, "max_tokens": 1})
    assert got == 413 and "2,000 bytes" in err["error"]["message"]


def test_a_request_past_its_deadline_is_stopped(debug_checkpoint):
    with served(str(debug_checkpoint), "--request-timeout", "0.02") as url:
        # 254 greedy decode steps (the debug model's context) cannot fit in 20 ms: each step checks the deadline
        body = {"prompt": "a", "max_tokens": 10**9, "temperature": 0}
        got, err, took = post(url, "/completions", body)
        assert got == 503 and "deadline of 0.02 s" in err["error"]["message"], err
        assert took < 10
        # the server goes on serving (on a loaded machine even a one-token prefill can take more than 20 ms,
        # so the next request is one that needs no model time)
        got, body, _ = post(url.removesuffix("/v1"), "/tokenize", {"prompt": "hello"})
        assert got == 200 and body["count"] >= 1, body


def test_max_tokens_is_capped_to_the_context(base):
    got, body, _ = post(base, "/completions", {"prompt": "a", "max_tokens": 10**9, "temperature": 0})
    assert got in (200, 503), body  # capped: never 10^9 steps
    if got == 200:
        assert body["usage"]["completion_tokens"] <= 256


def test_a_stalled_stream_does_not_hold_the_model(base):
    host, port = base.removeprefix("http://").split("/")[0].split(":")
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that reads nothing, with a small window
    stalled.connect((host, int(port)))
    body = json.dumps({"prompt": "a", "max_tokens": 250, "n": 8, "stream": True}).encode()  # ~300 KB of events
    stalled.sendall(
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    time.sleep(0.3)  # its generation has started and its output has filled the buffers
    took = [None]
    t = threading.Thread(target=lambda: took.__setitem__(0, small(base)))
    t.start()
    t.join(timeout=60)
    stalled.close()
    assert took[0] is not None and took[0] < 2.0, took
