"""camelid against llama.cpp (PyPI llama-cpp-python, built portable by `make setup`) on SmolLM2-135M.

Loose: the Q4_1 file as shipped (llama.cpp quantizes activations in Q4_1 matmuls and keeps an f16 KV
cache, so logits differ by up to ~2). Tight: an F32 GGUF camelid writes, run with an F32 KV cache."""

import random
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch

llama_cpp = pytest.importorskip("llama_cpp")

from camelid.formats import load, resolve  # noqa: E402
from camelid.formats.convert import convert  # noqa: E402
from tests.peers.texts import random_unicode  # noqa: E402

PROMPTS = {
    "prose": "The history of the Roman Empire spans more than a thousand years, from the founding of the city",
    "code": "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "numbers": "In 2023 the population was 8,045,311,447 and it grew by 0.88% (about 70,000,000 people).",
    "japanese": "東京は日本の首都であり、世界で最も人口の多い都市圏の一つです。",
    "emoji": "I love llamas 🦙 and camels 🐪! They are great 👍🏽 friends ❤️.",
    "whitespace": "a  b   c\n\n\n    indented\t\ttabs\n \n  end   ",
}
GGML_TYPE_F32 = 0


def llama(path: Path, f32_cache: bool = False):
    kw = dict(type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32) if f32_cache else {}
    return llama_cpp.Llama(
        model_path=str(path), n_ctx=512, n_threads=2, n_batch=512, logits_all=True, verbose=False, seed=0, **kw
    )


def their_logits(llm, ids):
    llm.reset()
    llm.eval(ids)
    return torch.tensor(np.array(llm.scores[: len(ids)]), dtype=torch.float32)


def their_greedy(llm, ids, n):
    llm.reset()
    out = []
    llm.eval(ids)
    for _ in range(n):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(nxt)
        llm.eval([nxt])
    return out


@pytest.fixture(scope="module")
def q4():
    return resolve("smollm2-135m")


@pytest.fixture(scope="module")
def ours_q4():
    return load("smollm2-135m")


def test_q4_1_loose_agreement(q4, ours_q4):
    llm = llama(q4)
    agree = total = 0
    kls, worst = [], 0.0
    for name, text in PROMPTS.items():
        ids = ours_q4.tokenizer.encode(text)
        assert ids == llm.tokenize(text.encode(), add_bos=False, special=False), name
        theirs = their_logits(llm, ids)
        with torch.no_grad():
            ours = ours_q4.model(torch.tensor([ids]))[0].float()
        agree += int((ours.argmax(-1) == theirs.argmax(-1)).sum())
        total += len(ids)
        p = torch.log_softmax(theirs, -1)
        q = torch.log_softmax(ours, -1)
        kls.append(float((p.exp() * (p - q)).sum(-1).mean()))
        worst = max(worst, float((ours - theirs).abs().max()))
    print(
        f"Q4_1: top-1 agreement {agree}/{total} = {agree / total:.1%}, mean KL {np.mean(kls):.4f}, "
        f"largest logit difference {worst:.3f}"
    )
    assert agree / total >= 0.90 and np.mean(kls) < 0.04


@pytest.fixture(scope="module")
def f32_gguf(tmp_path_factory):
    return convert("smollm2-135m", tmp_path_factory.mktemp("f32") / "smollm2-f32.gguf", to="gguf", quant="F32")


def test_f32_tight_agreement_and_greedy(f32_gguf):
    ours = load(f32_gguf)
    llm = llama(f32_gguf, f32_cache=True)
    worst = 0.0
    for name, text in PROMPTS.items():
        ids = ours.tokenizer.encode(text)
        theirs = their_logits(llm, ids)
        with torch.no_grad():
            mine = ours.model(torch.tensor([ids]))[0].float()
        diff = float((mine - theirs).abs().max())
        worst = max(worst, diff)
        assert diff < 1e-3, (name, diff)
        from camelid.generate import GREEDY, generate_ids

        rows, _ = generate_ids(ours.model, [ids], 32, GREEDY)
        assert rows[0].ids == their_greedy(llm, ids, 32), name
    print(f"F32 GGUF, F32 KV cache: largest logit difference {worst:.2e}; 32-token greedy identical on 6 prompts")


def test_f16_gguf_runs_in_llama_cpp(tmp_path):
    path = convert("smollm2-135m", tmp_path / "smollm2-f16.gguf", to="gguf", quant="F16")
    llm = llama(path)
    ours = load(path)
    ids = ours.tokenizer.encode(PROMPTS["prose"])
    theirs = their_logits(llm, ids)
    with torch.no_grad():
        mine = ours.model(torch.tensor([ids]))[0].float()
    assert (mine.argmax(-1) == theirs.argmax(-1)).float().mean() > 0.9


def test_gguf_tokenizer_equals_llama_cpp(q4, ours_q4):
    llm = llama_cpp.Llama(model_path=str(q4), vocab_only=True, verbose=False)
    tok = ours_q4.tokenizer
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    rng = random.Random(0)
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in files]
    texts += [random_unicode(rng) for _ in range(300)]
    same = 0
    for text in texts:
        # special=False on both sides: text that spells a special token (<|im_start|>) stays plain text
        if tok.encode(text, special=False) == llm.tokenize(text.encode(), add_bos=False, special=False):
            same += 1
        else:
            pytest.fail(f"ids differ on {text[:80]!r}")
    print(f"GGUF tokenizer: {same}/{len(texts)} texts identical to llama.cpp ({len(files)} stdlib files, 300 random)")
    assert same == len(texts)
    # with special parsing, the chat template's control tokens become single ids on both sides
    chat = "<|im_start|>user\nHi<|im_end|>\n"
    assert tok.encode(chat) == llm.tokenize(chat.encode(), add_bos=False, special=True)
