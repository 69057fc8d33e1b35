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
