"""camelid's training checkpoints as a release format (read only): `camelid convert RUN/checkpoints/step-N OUT`.

Registered through the `camelid.formats` entry point, so the formats package never imports the trainer.
"""

from __future__ import annotations

from pathlib import Path

from camelid.errors import CheckpointError
from camelid.formats.release import Release
from camelid.lazy import torch
from camelid.model.args import ModelArgs


class TrainingFormat:
    name = "training"
    priority = 20
    options = ()

    def detect(self, path: Path) -> bool:
        return path.is_dir() and (path / "train.json").is_file()

    def read_args(self, path: Path) -> ModelArgs:
        from camelid.train.checkpoint import read_meta

        return ModelArgs.from_dict(read_meta(path)["model"], source=str(path / "train.json"))

    def read(self, path: Path, dtype: torch.dtype | None = None, quant: str | None = None) -> Release:
        from camelid.model.transformer import build_model
        from camelid.tokenizer import load_tokenizer
        from camelid.train import checkpoint

        args = self.read_args(path)
        tokenizer = path / "tokenizer.model"
        if not tokenizer.is_file():
            raise CheckpointError(f"{path} holds no tokenizer.model; set data.tokenizer in the training config")
        model = build_model(args, seed=None)
        checkpoint.load_model_weights(path, model)
        return Release(args, model.state_dict(), load_tokenizer(tokenizer))

    def write(self, release: Release, path: Path) -> Path:
        raise CheckpointError(
            "training checkpoints are written by `camelid train`; convert to camelid, hf, meta or gguf"
        )


FORMAT = TrainingFormat()
