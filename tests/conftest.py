"""Shared fixtures: a tokenizer trained by camelid on data this machine has, and small random checkpoints."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


def build_corpus(out: Path, n_files: int = 40) -> Path:
    """Python standard library sources (code, English comments) plus English prose and Japanese lines."""
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:n_files]
    text = "".join(p.read_text(encoding="utf-8", errors="replace") for p in files)
    out.write_text(text + (DATA / "prose_ja.txt").read_text(encoding="utf-8") * 20, encoding="utf-8")
    return out


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    return build_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt")


@pytest.fixture(scope="session")
def tokenizer_path(corpus, tmp_path_factory) -> Path:
    from camelid.tokenizer.train import train_tokenizer

    return train_tokenizer([corpus], tmp_path_factory.mktemp("tok"), vocab_size=2000)


@pytest.fixture(scope="session")
def debug_checkpoint(tokenizer_path, tmp_path_factory) -> Path:
    """A randomly initialised `debug` model with the trained tokenizer, in camelid's native format."""
    from camelid.formats.native import save_native
    from camelid.model import build_model, preset

    args = preset("debug").replace(vocab_size=2000)
    model = build_model(args, seed=0)
    return save_native(tmp_path_factory.mktemp("ckpt") / "debug", model.state_dict(), args, tokenizer_path)


@pytest.fixture(scope="session")
def token_shards(tokenizer_path, tmp_path_factory) -> dict[str, Path]:
    """Train and validation shard directories made from standard-library sources with the trained tokenizer."""
    from camelid.data.tokenize import tokenize_documents
    from camelid.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_path)
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:48]
    docs = [p.read_text(encoding="utf-8", errors="replace") for p in files]
    root = tmp_path_factory.mktemp("shards")
    tokenize_documents(docs[:24], tok, root / "code_a", shard_tokens=60_000)
    tokenize_documents(docs[24:44], tok, root / "code_b", shard_tokens=60_000)
    tokenize_documents(docs[44:], tok, root / "val")
    return {"a": root / "code_a", "b": root / "code_b", "val": root / "val", "tokenizer": tokenizer_path}


def write_train_config(path: Path, shards: dict[str, Path], run_dir: Path, **sections) -> Path:
    """A small fp32 CPU job on the `debug` preset; keyword sections override/extend the defaults."""
    cfg = {
        "job": {"name": "test", "run_dir": str(run_dir)},
        "model": {"preset": "debug", "vocab_size": 2000},
        "data": {
            "train": [{"path": str(shards["a"]), "weight": 0.7}, {"path": str(shards["b"]), "weight": 0.3}],
            "val": [str(shards["val"])],
            "seq_len": 64,
            "tokenizer": str(shards["tokenizer"]),
        },
        "optimizer": {"lr": 3e-3, "warmup_steps": 5},
        "training": {"global_batch_tokens": 1024, "micro_batch": 4, "steps": 20, "precision": "fp32"},
        "checkpoint": {"interval": 5, "keep": 2},
        "metrics": {"log_interval": 1, "progress": False, "tensorboard": False, "val_batches": 4},
    }
    for name, values in sections.items():
        cfg[name] = {**cfg.get(name, {}), **values}
    lines = []
    for name, values in cfg.items():
        lines.append(f"[{name}]")
        for k, v in values.items():
            lines.append(f"{k} = {_toml(v)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(v) -> str:
    import json

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return json.dumps(v)


def train_losses(run_dir: Path) -> dict[int, float]:
    import json

    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["kind"] == "train"}


@pytest.fixture(scope="session")
def llama_cpp_src() -> Path:
    """llama.cpp's own files from the llama-cpp-python sdist (convert_hf_to_gguf.py, models/), which
    `make test` downloads (SHA-256 checked) and unpacks into ~/.cache/camelid."""
    import os

    path = Path(os.environ.get("CAMELID_LLAMA_CPP_SRC", Path.home() / ".cache/camelid/llama.cpp-0.3.36"))
    if not (path / "convert_hf_to_gguf.py").is_file():
        pytest.skip(f"llama.cpp's sources are not unpacked at {path}; `make test` downloads them")
    return path
