"""`camelid demo`: what `make demo` runs until pretraining lands (then it becomes `camelid quickstart`).

It trains a tokenizer the LLaMA way on the Python standard library's sources, writes a randomly
initialised `tiny` checkpoint, then shows `info`, `score` and `generate` on it. The weights are random,
so the generated text is noise: the demo shows the machinery, not a trained model.
"""

from __future__ import annotations

import random
import sysconfig
import time
from pathlib import Path

from camelid.errors import InputError


def stdlib_corpus(out: Path, max_bytes: int = 3_000_000, seed: int = 0) -> Path:
    """A text file of Python standard library sources (a permissively licensed corpus on every machine)."""
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    if not files:
        raise InputError(f"no Python sources found under {sysconfig.get_paths()['stdlib']}")
    random.Random(seed).shuffle(files)
    size = 0
    with open(out, "w", encoding="utf-8") as f:
        for p in files:
            text = p.read_text(encoding="utf-8", errors="replace")
            f.write(text)
            size += len(text)
            if size >= max_bytes:
                break
    return out


def run_demo(out_dir: str | Path = "demo-out") -> None:
    import torch

    from camelid.formats import load
    from camelid.formats.native import save_native
    from camelid.generate import SamplingParams, generate, score_ids
    from camelid.model import build_model, param_count, preset
    from camelid.tokenizer.train import train_tokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    corpus = stdlib_corpus(out / "corpus.txt")
    tok_path = train_tokenizer([corpus], out / "tokenizer", vocab_size=8192)
    print(f"1. tokenizer: trained BPE (8192 pieces, digits split, byte fallback) -> {tok_path}")
    args = preset("tiny")
    model = build_model(args, seed=0)
    ckpt = save_native(out / "tiny-random", model.state_dict(), args, tok_path)
    print(f"2. model: `tiny` preset, {param_count(args):,} parameters, random init -> {ckpt}")
    loaded = load(ckpt)
    text = "def add(a, b):\n    return a + b\n"
    ids = loaded.tokenizer.encode(text)
    logprobs = score_ids(loaded.model, ids)
    ppl = torch.tensor(logprobs).neg().mean().exp().item()
    print(f"3. score: {len(ids)} tokens, perplexity {ppl:.0f} (a random model is near the vocab size, 8192)")
    results, stats = generate(
        loaded.model, loaded.tokenizer, ["def main():"], max_new_tokens=24, params=SamplingParams(temperature=0)
    )
    print(f"4. generate (greedy, random weights, so noise): {results[0].text!r}")
    print(f"   {stats.tokens_per_s:.0f} tokens/s on {torch.get_num_threads()} threads")
    print(f"done in {time.perf_counter() - t0:.1f}s; outputs in {out}/")
