"""`camelid serve` through the official `openai` Python client (and raw HTTP where the client cannot go):
the server is a subprocess on a free port, serving the embedded SmolLM2; its answers are checked against
camelid's own generate / chat / score on the same model in this process."""

import json
import math
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import openai
import pytest
import torch

from camelid.formats import load
from camelid.generate import SamplingParams, generate, score_ids
from camelid.generate.chat import ChatSession, render
from tests.serve.running import served

MODEL = "smollm2-135m"
PROMPT = "The three primary colors are"


@pytest.fixture(scope="module")
def server():
    # dense: echo scores are compared with camelid's own to 1e-4 (packed weights compute in bf16)
    with served(MODEL, "--quant", "none") as base:
        yield base


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server, api_key="unused", max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def local():
    return load(MODEL, device="cpu", quant="none")


def post(base: str, path: str, body: dict | bytes) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(
        base.removesuffix("/v1") + path, data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_models_endpoint(client):
    (card,) = client.models.list().data
    assert card.id == MODEL and card.owned_by == "camelid"


def test_greedy_completion_is_camelid_generate(client, local):
    r = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=24, temperature=0)
    (ours,), _ = generate(local.model, local.tokenizer, [PROMPT], 24, SamplingParams(temperature=0))
    assert r.choices[0].text == ours.text and len(ours.text) > 20
    assert r.choices[0].finish_reason == "length"
    assert r.usage.prompt_tokens == len(local.tokenizer.encode(PROMPT)) and r.usage.completion_tokens == 24


def test_streamed_completion_joins_to_the_same_text(client):
    full = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=24, temperature=0).choices[0].text
    chunks = list(
        client.completions.create(
            model=MODEL,
            prompt=PROMPT,
            max_tokens=24,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == full
    assert sum(1 for c in chunks if c.choices and c.choices[0].text) > 5  # really streamed, token by token
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 24


def test_chat_is_camelid_chat(client, local):
    question = "What is the capital of France?"
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": question}], max_tokens=40, temperature=0
    )
    session = ChatSession(
        local.model, local.tokenizer, template=local.chat_template, params=SamplingParams(0), max_new_tokens=40
    )
    assert r.choices[0].message.content.strip() == session.send(question)
    assert r.choices[0].message.role == "assistant" and "Paris" in r.choices[0].message.content
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": question}], max_tokens=40, temperature=0, stream=True
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == r.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == r.choices[0].finish_reason


def test_stop_strings_n_and_seed(client):
    r = client.completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=30, temperature=0, stop=[" 7"])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].text.strip().startswith("5") and " 7" not in r.choices[0].text
    kw = dict(model=MODEL, prompt="Once upon a time", max_tokens=12, temperature=1.0, n=3, seed=7)
    a, b = client.completions.create(**kw), client.completions.create(**kw)
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert [c.text for c in a.choices] == [c.text for c in b.choices]  # same seed, same samples
    assert len({c.text for c in a.choices}) > 1  # the n choices are sampled independently
    assert 3 <= a.usage.completion_tokens <= 3 * 12


def test_echo_logprobs_are_camelid_scores(server, local):
    ids = local.tokenizer.encode("Water boils at one hundred degrees Celsius.")
    body = {"prompt": ids, "max_tokens": 1, "echo": True, "logprobs": 3, "temperature": 0}
    status, r = post(server, "/v1/completions", body)
    assert status == 200
    lp = r["choices"][0]["logprobs"]
    assert lp["token_logprobs"][0] is None and len(lp["token_logprobs"]) == len(ids) + 1
    ours = score_ids(local.model, ids)
    worst = max(abs(a - b) for a, b in zip(lp["token_logprobs"][1 : len(ids)], ours))
    assert worst < 1e-4, worst
    for chosen, top in zip(lp["token_logprobs"][1:], lp["top_logprobs"][1:]):
        assert len(top) <= 3 and max(top.values()) >= chosen - 1e-6  # the top list holds the likeliest tokens
    assert "".join(lp["tokens"]).startswith("Water boils at one hundred degrees Celsius.")
    assert lp["text_offset"][:3] == [0, len(lp["tokens"][0]), len(lp["tokens"][0]) + len(lp["tokens"][1])]
    # the generated (greedy) token's log-probability is the one camelid's scorer gives it after the prompt
    with torch.inference_mode():
        greedy = int(local.model(torch.tensor([ids]))[0, -1].argmax())
    assert math.isclose(lp["token_logprobs"][-1], score_ids(local.model, [*ids, greedy])[-1], abs_tol=1e-4)
    status, r = post(server, "/v1/completions", {"prompt": PROMPT, "max_tokens": 3, "logprobs": 0, "temperature": 0})
    assert r["choices"][0]["logprobs"]["text_offset"][0] == len(PROMPT)  # without echo, after the prompt


def test_a_stop_token_is_listed_in_the_logprobs(server, local):
    """A choice ended by the end-of-text token lists that token last in its logprobs (not in its text), as
    OpenAI and vLLM do; lm-eval's reading of echoed prompts depends on it."""
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    chat = render(local.chat_template, messages, bos_token="<|im_start|>", eos_token="<|im_end|>")
    ids = local.tokenizer.encode(chat + "The capital of France is Paris.", bos=False)
    with torch.inference_mode():
        greedy = int(local.model(torch.tensor([ids]))[0, -1].argmax())
    assert greedy in local.tokenizer.stop_ids  # the model ends its turn here
    for body in ({"echo": True, "max_tokens": 1}, {"echo": False, "max_tokens": 5}):
        status, r = post(server, "/v1/completions", {"prompt": ids, "logprobs": 1, "temperature": 0, **body})
        (c,) = r["choices"]
        assert c["finish_reason"] == "stop" and c["text"] == local.tokenizer.decode(ids) * body["echo"]
        assert c["logprobs"]["tokens"][-1] == "<|im_end|>" and r["usage"]["completion_tokens"] == 1
        assert len(c["logprobs"]["token_logprobs"]) == (len(ids) + 1 if body["echo"] else 1)


def test_tokenizer_endpoints(server, local):
    status, r = post(server, "/tokenize", {"prompt": "hello there", "add_special_tokens": False})
    assert status == 200 and r["tokens"] == local.tokenizer.encode("hello there", bos=False)
    status, r = post(server, "/detokenize", {"tokens": r["tokens"]})
    assert status == 200 and r["prompt"] == "hello there"
    with urllib.request.urlopen(server.removesuffix("/v1") + "/tokenizer_info", timeout=60) as f:
        info = json.loads(f.read())
    assert info["eos_token"] == local.tokenizer.id_to_piece(local.tokenizer.eos_id) and info["chat_template"]


def test_errors_are_openai_errors(client, server, local):
    with pytest.raises(openai.NotFoundError, match="serves 'smollm2-135m'"):
        client.completions.create(model="gpt-4", prompt="x", max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.completions.create(model=MODEL, prompt="x", max_tokens=2, temperature=5)
    with pytest.raises(openai.BadRequestError, match="not supported"):
        client.completions.create(model=MODEL, prompt="x", max_tokens=2, logit_bias={"1": 5})
    status, r = post(server, "/v1/completions", b"{not json")
    assert status == 400 and "not valid JSON" in r["error"]["message"]
    status, r = post(server, "/v1/completions", {"prompt": [10**9], "max_tokens": 1})
    assert status == 400 and "outside the vocabulary" in r["error"]["message"]
    status, r = post(server, "/v1/completions", {"prompt": [5] * 9000, "max_tokens": 1})
    assert status == 400 and "this server's context of 2048 tokens (the model's is 8192" in r["error"]["message"]
    status, r = post(server, "/v1/completions", {"prompt": [5] * 9000, "max_tokens": 1, "echo": True, "logprobs": 1})
    assert status == 400 and "this server's context of 2048 tokens (the model's is 8192" in r["error"]["message"]
    status, r = post(server, "/v1/completions", {"prompt": "", "max_tokens": 1})
    assert status == 400 and "'prompt' is empty" in r["error"]["message"]
    status, r = post(server, "/v1/embeddings", {"input": "x"})
    assert status == 404 and r["error"]["type"] == "not_found_error"
    # the server is still serving after the refusals
    assert client.completions.create(model=MODEL, prompt="x", max_tokens=2).usage.completion_tokens >= 1


def test_a_client_that_hangs_up_mid_stream_does_not_stop_the_server(client, server):
    req = urllib.request.Request(
        server + "/completions",
        data=json.dumps({"prompt": PROMPT, "max_tokens": 200, "stream": True}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=300) as r:
        first = r.readline()
    assert first.startswith(b"data: ")
    time.sleep(0.5)
    r = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=4, temperature=0)
    assert r.choices[0].finish_reason == "length"  # the model is free again


def test_a_busy_port_is_a_one_line_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        p = subprocess.run(
            [sys.executable, "-m", "camelid", "serve", "--port", str(port)], capture_output=True, text=True, timeout=120
        )
    assert p.returncode == 2
    assert p.stderr.strip() == (
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use; choose another --port"
    )


PLACE = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 24},
        "country": {"type": "string", "maxLength": 24},
        "population_millions": {"type": "integer", "minimum": 0, "maximum": 100},
        "kind": {"enum": ["capital", "town", "village"]},
    },
    "required": ["city", "country", "population_millions", "kind"],
    "additionalProperties": False,
}
POEM = [{"role": "user", "content": "Write a two-line poem about the sea."}]


def test_json_schema_output_follows_the_schema_greedy_sampled_and_streamed(client):
    """response_format json_schema (OpenAI's structured outputs): every choice is JSON valid against the
    schema, greedy, sampled at temperature 1 and streamed, on a prompt whose free answer is not JSON."""
    jsonschema = pytest.importorskip("jsonschema")
    free = client.chat.completions.create(model=MODEL, messages=POEM, max_tokens=40, temperature=0)
    with pytest.raises(json.JSONDecodeError):
        json.loads(free.choices[0].message.content)
    fmt = {"type": "json_schema", "json_schema": {"name": "place", "schema": PLACE, "strict": True}}
    greedy = client.chat.completions.create(
        model=MODEL, messages=POEM, max_tokens=80, temperature=0, response_format=fmt
    )
    sampled = client.chat.completions.create(
        model=MODEL, messages=POEM, max_tokens=80, temperature=1.0, n=3, seed=7, response_format=fmt
    )
    answers = [c.message.content for c in greedy.choices + sampled.choices]
    stream = client.chat.completions.create(
        model=MODEL, messages=POEM, max_tokens=80, temperature=0, response_format=fmt, stream=True
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert streamed == answers[0]
    for choice in greedy.choices + sampled.choices:
        assert choice.finish_reason == "stop"
    for text in answers:
        jsonschema.validate(json.loads(text), PLACE)
    print("structured answers:", answers)


def test_json_object_mode_and_the_clients_parse_helper(client):
    pydantic = pytest.importorskip("pydantic")

    class Colour(pydantic.BaseModel):
        name: str
        hex_code: str

    json_object = {"response_format": {"type": "json_object"}}  # the legacy endpoint, as vLLM takes it
    r = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=40, temperature=0, extra_body=json_object)
    assert isinstance(json.loads(r.choices[0].text), dict)
    messages = [{"role": "user", "content": "Name one colour, with its hex code."}]
    parsed = client.chat.completions.parse(model=MODEL, messages=messages, max_tokens=60, temperature=0,
                                           response_format=Colour)  # fmt: skip
    assert isinstance(parsed.choices[0].message.parsed, Colour)


def test_a_bad_response_format_is_a_400_and_the_server_goes_on(client, server):
    for fmt, words in (
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}, "nonsense"),
        ({"type": "json_schema", "json_schema": {"name": "x"}}, "'schema'"),
        ({"type": "xml"}, "'xml'"),
    ):
        status, r = post(server, "/v1/chat/completions",
                         {"messages": POEM, "max_tokens": 4, "response_format": fmt})  # fmt: skip
        assert status == 400 and r["error"]["param"] == "response_format" and words in r["error"]["message"], r
    with pytest.raises(openai.BadRequestError, match="echo"):
        client.completions.create(model=MODEL, prompt="x", max_tokens=2, echo=True,
                                  extra_body={"response_format": {"type": "json_object"}})  # fmt: skip
    assert client.completions.create(model=MODEL, prompt="x", max_tokens=2).usage.completion_tokens >= 1
