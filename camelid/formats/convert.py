"""`camelid convert`: from a training checkpoint (or, later, any supported format) to a release format."""

from __future__ import annotations

from pathlib import Path

import torch

from camelid.errors import CheckpointError
from camelid.formats import native
from camelid.model.args import ModelArgs
from camelid.model.transformer import build_model


def convert(src: str | Path, dst: str | Path, to: str = "camelid", dtype: torch.dtype | None = None) -> Path:
    src, dst = Path(src), Path(dst)
    if (src / "train.json").is_file():
        from camelid.train import checkpoint

        meta = checkpoint.read_meta(src)
        args = ModelArgs.from_dict(meta["model"], source=str(src / "train.json"))
        tokenizer = src / "tokenizer.model"
        if not tokenizer.is_file():
            raise CheckpointError(f"{src} holds no tokenizer.model; set data.tokenizer in the training config")
        model = build_model(args, seed=None)
        checkpoint.load_model_weights(src, model)
        state = model.state_dict()
    elif src.is_dir() and native.is_native(src):
        from camelid.formats import load

        loaded = load(src)
        args, state, tokenizer = loaded.args, loaded.model.state_dict(), src / native.TOKENIZER
    else:
        raise CheckpointError(f"{src} is neither a training checkpoint (train.json) nor a camelid checkpoint")
    if to != "camelid":
        raise CheckpointError(f"--to {to} is not supported yet")
    return native.save_native(dst, state, args, tokenizer, dtype=dtype)
