"""Worst-case tokenizer time: one word (a single pre-token) of 1K, 4K, 16K and 64K characters, for each tokenizer
camelid implements, next to the library that defines it on the same vocabulary, in the same run.

- byte-level BPE: the embedded SmolLM2's vocabulary; peer `tokenizers` (camelid's own export of that vocabulary)
- SentencePiece BPE: a tokenizer trained here from the Python standard library's sources (4,000 pieces);
  peers `sentencepiece` (the same tokenizer.model) and `tokenizers` (camelid's export of it)

The word is random ASCII letters (seeded): no merge of it is cached and no pre-tokenizer splits it. Each time is
the median of --runs, interleaved; ids are checked equal to the peer's at every length. The caches of camelid's
tokenizers are cleared between runs (a repeated word would be a cache hit).

    PYTHONPATH=. python benchmarks/tokenize_worst.py [--runs 3]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import random
import statistics
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LENGTHS = (1_000, 4_000, 16_000, 64_000)


def word(n: int) -> str:
    rng = random.Random(n)
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(n))


def timed(fn, text: str, reset=None) -> tuple[float, list[int]]:
    if reset is not None:
        reset()
    t0 = time.perf_counter()
    ids = fn(text)
    return time.perf_counter() - t0, list(ids)


def systems(tmp: Path) -> dict[str, dict]:
    import sentencepiece as spm

    from camelid.formats import read
    from camelid.tokenizer import load_tokenizer
    from camelid.tokenizer.hf_json import to_tokenizers
    from camelid.tokenizer.train import train_tokenizer

    bpe = read("smollm2-135m").tokenizer
    sources = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:60]
    corpus = tmp / "stdlib.txt"
    corpus.write_text("\n".join(p.read_text(encoding="utf-8", errors="replace") for p in sources))
    spm_path = train_tokenizer([corpus], tmp / "spm", vocab_size=4000, input_sentence_size=200_000)
    ours_spm = load_tokenizer(spm_path)
    lib_spm = spm.SentencePieceProcessor(model_file=str(spm_path))
    hf_bpe, hf_spm = to_tokenizers(bpe), to_tokenizers(ours_spm)

    def clear(tok):
        return lambda: getattr(tok, "_cache", {}).clear()

    return {
        "byte-level BPE": {
            "camelid": (lambda t: bpe.encode(t, bos=False), clear(bpe)),
            "tokenizers": (lambda t: hf_bpe.encode(t, add_special_tokens=False).ids, None),
        },
        "SentencePiece BPE": {
            "camelid": (lambda t: ours_spm.encode(t, bos=False), clear(ours_spm)),
            "sentencepiece": (lambda t: lib_spm.encode(t), None),
            "tokenizers": (lambda t: hf_spm.encode(t, add_special_tokens=False).ids, None),
        },
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results" / f"tokenize_worst_{datetime.date.today()}.json"))
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        table = systems(Path(tmp))
        result: dict = {}
        for family, impls in table.items():
            result[family] = {}
            for n in LENGTHS:
                text = word(n)
                times: dict[str, list[float]] = {name: [] for name in impls}
                ids: dict[str, list[int]] = {}
                for _ in range(a.runs):
                    for name, (fn, reset) in impls.items():
                        dt, ids[name] = timed(fn, text, reset)
                        times[name].append(dt)
                same = all(v == ids["camelid"] for v in ids.values())
                result[family][n] = {name: statistics.median(ts) for name, ts in times.items()} | {"ids_equal": same}
    print(f"one word of N random letters; median of {a.runs} runs, seconds")
    for family, rows in result.items():
        names = [k for k in next(iter(rows.values())) if k != "ids_equal"]
        print(f"\n{family:<18} " + " ".join(f"{n:>13}" for n in names) + "  ids equal")
        for n, r in rows.items():
            print(f"{n:>18,} " + " ".join(f"{r[k]:>13.4f}" for k in names) + f"  {r['ids_equal']}")
        growth = rows[64_000]["camelid"] / rows[4_000]["camelid"]
        peer = max(rows[64_000][k] for k in names if k != "camelid")
        print(f"camelid 4K -> 64K: {growth:.1f}x (16x is linear); at 64K {rows[64_000]['camelid'] / peer:.2f}x the "
              "slowest library")  # fmt: skip
    meta = {"date": str(datetime.date.today()), "python": platform.python_version(), "cpu": platform.machine()}
    Path(a.out).write_text(json.dumps({**meta, "runs": a.runs, "results": result}, indent=1) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
