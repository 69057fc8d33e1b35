"""`camelid serve --api-key`: every request but /health and /metrics needs the bearer key; a refused request
gets a 401 in OpenAI's error shape, and the connection goes on serving."""

import http.client
import json
import urllib.parse

import openai
import pytest

from tests.serve.running import served

pytestmark = pytest.mark.slow
KEY = "sk-camelid-test-0123"


def exchange(conn: http.client.HTTPConnection, method: str, path: str, body: dict | None = None, key=None):
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    conn.request(method, path, json.dumps(body) if body is not None else None, headers)
    r = conn.getresponse()
    return r.status, r.getheader("WWW-Authenticate"), json.loads(r.read() or b"null")


@pytest.fixture(scope="module")
def base(debug_checkpoint):
    with served(str(debug_checkpoint), "--api-key", KEY) as url:
        yield url


def test_requests_without_the_key_get_401_and_the_connection_goes_on(base):
    u = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    body = {"prompt": "a b c", "max_tokens": 2, "temperature": 0}
    for key in (None, "sk-wrong", KEY[:-1], KEY + "4"):
        status, challenge, data = exchange(conn, "POST", "/v1/completions", body, key)
        assert status == 401 and challenge == "Bearer", (key, status)
        assert data["error"]["type"] == "authentication_error" and "--api-key" in data["error"]["message"]
    for path in ("/v1/models", "/tokenizer_info"):
        assert exchange(conn, "GET", path)[0] == 401
    assert exchange(conn, "POST", "/tokenize", {"prompt": "a"})[0] == 401
    # the same connection, now with the key
    status, _, data = exchange(conn, "POST", "/v1/completions", body, KEY)
    assert status == 200 and data["usage"]["completion_tokens"] == 2
    assert exchange(conn, "GET", "/health")[0] == 200  # probes need no key
    conn.request("GET", "/metrics")
    r = conn.getresponse()
    assert r.status == 200 and b"camelid_requests_total" in r.read()
    conn.close()


def test_the_openai_client_with_and_without_the_key(base):
    good = openai.OpenAI(base_url=base, api_key=KEY, max_retries=0)
    out = good.completions.create(model=good.models.list().data[0].id, prompt="a b", max_tokens=3, temperature=0)
    assert out.usage.completion_tokens == 3
    bad = openai.OpenAI(base_url=base, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_the_key_can_come_from_the_environment(debug_checkpoint):
    with served(str(debug_checkpoint), env={"CAMELID_API_KEY": KEY}) as url:
        assert openai.OpenAI(base_url=url, api_key=KEY, max_retries=0).models.list().data
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key="nope", max_retries=0).models.list()
