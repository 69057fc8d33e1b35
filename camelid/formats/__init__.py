"""Checkpoint formats: each adapter maps to and from camelid's state dict (Meta's tensor names)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from camelid.errors import CheckpointError
from camelid.formats import native
from camelid.model.args import ModelArgs
from camelid.model.transformer import Transformer
from camelid.tokenizer import Tokenizer, load_tokenizer


@dataclass
class LoadedModel:
    model: Transformer
    tokenizer: Tokenizer
    args: ModelArgs
    source: Path


def load(path: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model and its tokenizer from a checkpoint directory, detecting the format."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"model path {path} does not exist")
    if path.is_dir() and (path / native.CONFIG).is_file() and native.is_native(path):
        args = native.read_config(path)
        tokenizer = load_tokenizer(path / native.TOKENIZER)
        if tokenizer.vocab_size > args.vocab_size:
            raise CheckpointError(
                f"{path}: tokenizer has {tokenizer.vocab_size} pieces but the model only {args.vocab_size} embeddings"
            )
        model = native.model_from_state(args, native.load_state(path, args), dtype, device)
        return LoadedModel(model, tokenizer, args, path)
    if path.is_dir() and (path / native.CONFIG).is_file():
        native.read_config(path)  # reports what is wrong with a config.json that is not camelid's
    raise CheckpointError(f"{path} is not a camelid checkpoint directory (config.json with format 'camelid')")


__all__ = ["LoadedModel", "load"]
