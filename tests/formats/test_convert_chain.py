"""The README's convert chain, as a user runs it (`camelid convert` commands), on the embedded SmolLM2 and on a
model with a SentencePiece tokenizer trained the LLaMA way: GGUF -> HF -> Meta (2 shards) -> GGUF Q8_0 -> camelid.
At every step the same greedy text (Q8_0: within its agreement bound), the tokenizer and the chat template."""

import os
import subprocess
import sys

import pytest
import torch

from camelid.formats import read, write
from camelid.formats.release import Release
from camelid.generate import SamplingParams, generate
from camelid.model import ModelArgs, build_model

TEXTS = ["The capital of France is", "def main():\n\treturn 0", "東京 2024 🦙", " leading space"]
PROMPTS = ["The capital of France is", "Once upon a time"]


def camelid(*args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-m", "camelid", *args], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc


def greedy(release: Release, n: int = 12) -> list[list[int]]:
    model = release.build_model()
    out = []
    for p in PROMPTS:
        results, _ = generate(model, release.tokenizer, [p], max_new_tokens=n, params=SamplingParams(temperature=0))
        out.append(results[0].ids)
    return out


def top1_agreement(a: Release, b: Release) -> float:
    ids = torch.tensor([a.tokenizer.encode(" ".join(TEXTS * 8))[:256]])
    with torch.no_grad():
        return float((a.build_model()(ids).argmax(-1) == b.build_model()(ids).argmax(-1)).float().mean())


def run_chain(source, tmp_path):
    steps = [
        ("hf", ["convert", str(source), str(tmp_path / "hf"), "--to", "hf"]),
        ("meta", ["convert", str(tmp_path / "hf"), str(tmp_path / "meta"), "--to", "meta", "--shards", "2"]),
        ("q8", ["convert", str(tmp_path / "meta"), str(tmp_path / "q8.gguf"), "--to", "gguf", "--quant", "Q8_0"]),
        ("camelid", ["convert", str(tmp_path / "q8.gguf"), str(tmp_path / "back")]),
    ]
    first = read(source)
    want = greedy(first)
    report = []
    for name, cmd in steps:
        camelid(*cmd)
        release = read(cmd[2])
        for t in TEXTS:
            assert release.tokenizer.encode(t) == first.tokenizer.encode(t), (name, t)
        assert release.special == first.special, name
        assert release.chat_template == first.chat_template, name
        assert release.metadata.get("license") == first.metadata.get("license"), name
        got = greedy(release)
        if name in ("q8", "camelid"):  # re-quantized to Q8_0: the same text, or nearly the same predictions
            agreement = top1_agreement(first, release)
            assert got == want or agreement >= 0.97, (name, agreement)
            report.append(f"{name}: greedy {'identical' if got == want else 'differs'}, top-1 {agreement:.1%}")
        else:
            assert got == want, name
            report.append(f"{name}: greedy identical")
    if len(list((tmp_path / "meta").glob("consolidated.*.pth"))) != 2:
        pytest.fail("the Meta step did not write 2 shards")
    return report


@pytest.mark.slow
def test_chain_on_the_embedded_model(tmp_path):
    from camelid.formats import resolve

    print("embedded SmolLM2:", "; ".join(run_chain(resolve("smollm2-135m"), tmp_path)))


def test_chain_on_a_sentencepiece_model(tokenizer_path, tmp_path):
    from camelid.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_path)
    args = ModelArgs(dim=64, n_layers=2, n_heads=4, vocab_size=tok.vocab_size, multiple_of=32, max_seq_len=512)
    model = build_model(args, seed=2)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(2)  # peakier than init, but not so peaky that Q8_0's rounding decides the argmax
    template = "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    release = Release(args, model.state_dict(), tok, template, {}, {"license": "apache-2.0", "name": "spm-chain"})
    source = write(release, tmp_path / "src.gguf", "gguf", quant="F32")
    print("SentencePiece model:", "; ".join(run_chain(source, tmp_path)))
