"""Many clients at once on one server: requests batch continuously (each greedy answer the same as alone), a
full queue answers 429 and the server goes on, a client that leaves mid-stream frees its slot at once, and
/metrics says so."""

import json
import re
import socket
import threading
import urllib.error
import urllib.request

import pytest

from tests.serve.running import served

pytestmark = pytest.mark.slow


def post(base: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(base + "/completions", json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def metrics(base: str) -> dict[str, float]:
    with urllib.request.urlopen(base.removesuffix("/v1") + "/metrics", timeout=30) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    return {m[1]: float(m[2]) for m in re.finditer(r"^(\w+(?:\{[^}]*\})?) (\S+)$", text, re.M)}


def at_once(n: int, f) -> list:
    out = [None] * n
    threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, f(i))) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a client hung"
    return out


@pytest.fixture(scope="module")
def base(debug_checkpoint):
    with served(str(debug_checkpoint), "--slots", "4", "--max-queue", "8") as url:
        yield url


def test_concurrent_greedy_answers_are_the_answers_alone(base):
    bodies = [{"prompt": f"story number {i} begins", "max_tokens": 24 + i, "temperature": 0} for i in range(8)]
    alone = [post(base, b) for b in bodies]
    before = metrics(base)
    together = at_once(8, lambda i: post(base, bodies[i]))
    after = metrics(base)
    for (s1, a), (s2, b) in zip(alone, together):
        assert s1 == s2 == 200
        assert a["choices"][0]["text"] == b["choices"][0]["text"] and a["usage"] == b["usage"]
    steps = after["camelid_decode_steps_total"] - before["camelid_decode_steps_total"]
    rows = after["camelid_decode_rows_total"] - before["camelid_decode_rows_total"]
    assert rows / steps > 1.5  # the 8 requests really shared decode steps
    assert after["camelid_running"] == 0 and after["camelid_queue_depth"] == 0
    assert after["camelid_request_seconds_count"] - before["camelid_request_seconds_count"] == 8


def test_a_full_queue_answers_429_and_the_server_goes_on(base):
    body = {"prompt": "a long one", "max_tokens": 250, "temperature": 0}
    got = at_once(16, lambda i: post(base, body))
    codes = [s for s, _ in got]
    assert set(codes) <= {200, 429} and codes.count(200) >= 8, codes  # 8 queued at the least
    assert 429 in codes, codes
    err = next(b for s, b in got if s == 429)["error"]
    assert err["type"] == "rate_limit_error" and "queue is full" in err["message"]
    status, r = post(base, {"prompt": [5] * 3, "max_tokens": 1, "n": 9})
    assert status == 400 and "queues at most 8" in r["error"]["message"]  # more than the queue could ever take
    assert post(base, {"prompt": "next", "max_tokens": 2})[0] == 200
    assert metrics(base)["camelid_requests_rejected_total"] >= 1


def test_a_client_that_leaves_mid_stream_frees_its_slot(base):
    host, port = base.removeprefix("http://").removesuffix("/v1").split(":")
    body = json.dumps({"prompt": "tell me everything", "max_tokens": 250, "temperature": 0, "stream": True})
    before = metrics(base).get('camelid_requests_finished_total{reason="cancelled"}', 0)
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(
            f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}".encode()
        )
        got = b""
        while b"data: {" not in got:  # the stream has begun; then the client is gone
            chunk = s.recv(4096)
            assert chunk, got
            got += chunk
    for _ in range(200):
        m = metrics(base)
        if m.get('camelid_requests_finished_total{reason="cancelled"}', 0) > before and m["camelid_running"] == 0:
            break
        threading.Event().wait(0.05)
    assert m.get('camelid_requests_finished_total{reason="cancelled"}', 0) == before + 1
    assert m["camelid_running"] == 0
    assert post(base, {"prompt": "next", "max_tokens": 2})[0] == 200
