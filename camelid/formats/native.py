"""camelid's native checkpoint: a directory with config.json, tokenizer.model and model.safetensors.

config.json holds `{"format": "camelid", "format_version": 1, "model": {ModelArgs}, "dtype": ...}`.
Loading mmaps the weights into a model built on the meta device; saving writes a temp directory and
renames it into place, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from camelid.errors import CheckpointError
from camelid.formats.atomic import atomic_directory
from camelid.formats.safetensors_io import load_file, save_file
from camelid.model.args import ModelArgs
from camelid.model.transformer import Transformer

CONFIG, WEIGHTS, TOKENIZER = "config.json", "model.safetensors", "tokenizer.model"
FORMAT_VERSION = 1


def is_native(path: Path) -> bool:
    cfg = path / CONFIG
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text()).get("format") == "camelid"
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def read_config(path: Path) -> ModelArgs:
    cfg_path = path / CONFIG
    try:
        cfg = json.loads(cfg_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{cfg_path} does not exist; a camelid checkpoint directory needs one") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path} is not valid JSON ({e})") from None
    if not isinstance(cfg, dict) or "model" not in cfg:
        raise CheckpointError(f"{cfg_path}: missing key 'model'")
    return ModelArgs.from_dict(cfg["model"], source=str(cfg_path))


def save_native(
    path: str | Path,
    state_dict: dict[str, torch.Tensor],
    args: ModelArgs,
    tokenizer_file: str | Path,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write a checkpoint directory atomically; `dtype` converts the weights (default: as given)."""
    path = Path(path)
    tensors = {}
    for name, t in state_dict.items():
        if name == "output.weight" and args.tie_embeddings:
            continue
        tensors[name] = t.to(dtype) if dtype is not None else t
    any_dtype = next(iter(tensors.values())).dtype
    with atomic_directory(path) as tmp:
        save_file(tensors, tmp / WEIGHTS, metadata={"format": "pt"})
        shutil.copyfile(tokenizer_file, tmp / TOKENIZER)
        config = {
            "format": "camelid",
            "format_version": FORMAT_VERSION,
            "model": args.to_dict(),
            "dtype": str(any_dtype).removeprefix("torch."),
        }
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return path


def expected_shapes(args: ModelArgs) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape for a model of `args` (tied embeddings store no `output.weight`)."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in Transformer(args).state_dict().items()}
    if args.tie_embeddings:
        expected.pop("output.weight")
    return expected


def load_state(path: Path, args: ModelArgs) -> dict[str, torch.Tensor]:
    """The mmap'd weights of a checkpoint, checked tensor by tensor against the shapes `args` implies."""
    weights = path / WEIGHTS
    state = load_file(weights)
    expected = expected_shapes(args)
    for name in expected:
        if name not in state:
            raise CheckpointError(f"{weights}: missing tensor {name!r}")
        if tuple(state[name].shape) != tuple(expected[name]):
            raise CheckpointError(
                f"{weights}: tensor {name!r} has shape {tuple(state[name].shape)}, "
                f"config.json implies {tuple(expected[name])}"
            )
    extra = sorted(set(state) - set(expected))
    if extra:
        raise CheckpointError(f"{weights}: unexpected tensor {extra[0]!r} for this config")
    return state


def model_from_state(
    args: ModelArgs, state: dict[str, torch.Tensor], dtype: torch.dtype | None, device: str | torch.device
) -> Transformer:
    """Assign `state` into a meta-built model: no weight is copied unless a dtype or device change asks for it."""
    with torch.device("meta"):
        model = Transformer(args)
    if dtype is not None or str(device) != "cpu":
        state = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else None) for k, v in state.items()}
    model.load_state_dict(state, strict=not args.tie_embeddings, assign=True)
    model.tie_weights()
    return model.eval()
