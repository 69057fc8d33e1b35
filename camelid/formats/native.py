"""camelid's own format: a directory with config.json, model.safetensors and the tokenizer's files.

config.json holds `{"format": "camelid", "format_version": 2, "model": {ModelArgs}, "dtype": ...,
"special": {bos/eos/pad ids, stop ids, add_bos}, "chat_template", "generation", "metadata"}`; the
tokenizer is `tokenizer.model` (SentencePiece, Llama 3's tiktoken file) or `tokenizer.json` (byte-level BPE).
Version 1 (tokenizer.model only) still reads. Loading mmaps the weights; saving writes a temp directory
and renames it into place, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from camelid.atomic import atomic_directory
from camelid.errors import CheckpointError
from camelid.formats.release import Release, clean_metadata
from camelid.formats.safetensors_io import load_file, save_file
from camelid.lazy import torch
from camelid.model.args import ModelArgs

CONFIG, WEIGHTS = "config.json", "model.safetensors"
FORMAT_VERSION = 2


def _config(path: Path) -> dict[str, Any]:
    cfg_path = path / CONFIG
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{cfg_path} does not exist; a camelid checkpoint directory needs one") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path} is not valid JSON ({e})") from None
    if not isinstance(cfg, dict) or "model" not in cfg:
        raise CheckpointError(f"{cfg_path}: missing key 'model'")
    return cfg


def read_config(path: Path) -> ModelArgs:
    return ModelArgs.from_dict(_config(path)["model"], source=str(path / CONFIG))


PARTS = ("q", "scale", "zero", "minimum")  # a packed weight's tensors: `<name>.q`, `<name>.scale`, ...


def _packed_from_state(state: dict[str, torch.Tensor], table: Any, source: Path) -> dict:
    """The packed weights config.json's "quantization" table names, taken out of `state` and checked."""
    from camelid.transforms.quant_weight import QuantizedWeight

    if table is None:
        return {}
    if not isinstance(table, dict):
        raise CheckpointError(f"{source}: 'quantization' must be an object")
    packed = {}
    for name, spec in table.items():
        try:
            bits, group, shape = spec["bits"], spec["group_size"], tuple(spec["shape"])
            n, k = shape
            parts = {p: state.pop(f"{name}.{p}", None) for p in PARTS}
            q, scale = parts["q"], parts["scale"]
            ok = bits in (4, 8) and isinstance(group, int) and group >= 0 and q is not None and scale is not None
            ok = ok and (group == 0 or k % group == 0) and (bits == 8 or group > 0)
            want_q = (n, k) if bits == 8 else (n, k // 2)
            want_s = (n,) if group == 0 else (n, k // group)
            ok = ok and tuple(q.shape) == want_q and tuple(scale.shape) == want_s
            ok = ok and q.dtype == (torch.int8 if bits == 8 else torch.uint8)
            for extra in ("zero", "minimum"):
                ok = ok and (parts[extra] is None or tuple(parts[extra].shape) == want_s)
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise CheckpointError(f"{source}: the packed weight {name!r} is malformed (its tensors or table entry)")
        packed[name] = QuantizedWeight(bits, shape, group, q, scale, parts["zero"], parts["minimum"])
    return packed


class CamelidFormat:
    name = "camelid"
    priority = 30
    options = ()
    holds_quantized = True

    def detect(self, path: Path) -> bool:
        cfg = path / CONFIG
        if not path.is_dir() or not cfg.is_file():
            return False
        try:
            data = json.loads(cfg.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{cfg} is not valid JSON ({e})") from None
        if isinstance(data, dict) and data.get("format") == "camelid":
            return True
        if isinstance(data, dict) and "model" in data and "model_type" not in data and "architectures" not in data:
            raise CheckpointError(f"{cfg}: missing key 'format' (expected \"camelid\")")
        return False

    def read_args(self, path: Path) -> ModelArgs:
        return read_config(path)

    def read(self, path: Path, dtype: torch.dtype | None = None, quant: str | None = None) -> Release:
        from camelid.tokenizer.files import apply_special, read_dir

        cfg = _config(path)
        args = ModelArgs.from_dict(cfg["model"], source=str(path / CONFIG))
        state = load_file(path / WEIGHTS)
        packed = _packed_from_state(state, cfg.get("quantization"), path / CONFIG)
        tok = read_dir(path)
        if tok is None:
            raise CheckpointError(f"{path} holds no tokenizer (tokenizer.model or tokenizer.json)")
        apply_special(tok, cfg.get("special"))
        template = cfg.get("chat_template")
        release = Release(
            args,
            state,
            tok,
            template if isinstance(template, str) else None,
            cfg.get("generation") if isinstance(cfg.get("generation"), dict) else {},
            clean_metadata(cfg.get("metadata") or {}),
        )
        release.quantized = packed
        return release

    def write(self, release: Release, path: Path) -> Path:
        from camelid.tokenizer.files import native_files, special_table

        tensors = dict(release.state)
        any_dtype = next(iter(tensors.values())).dtype
        quantization = {}
        for name, qw in release.quantized.items():
            quantization[name] = {"bits": qw.bits, "group_size": qw.group_size, "shape": list(qw.shape)}
            for part in PARTS:
                if getattr(qw, part) is not None:
                    tensors[f"{name}.{part}"] = getattr(qw, part)
        with atomic_directory(path) as tmp:
            save_file(tensors, tmp / WEIGHTS, metadata={"format": "pt"})
            for name, data in native_files(release.tokenizer).items():
                (tmp / name).write_bytes(data)
            config: dict[str, Any] = {
                "format": "camelid",
                "format_version": FORMAT_VERSION,
                "model": release.args.to_dict(),
                "dtype": str(any_dtype).removeprefix("torch."),
                "special": special_table(release.tokenizer),
            }
            if quantization:
                config["quantization"] = quantization
            if release.chat_template:
                config["chat_template"] = release.chat_template
            if release.generation:
                config["generation"] = release.generation
            if release.metadata:
                config["metadata"] = clean_metadata(release.metadata)
            (tmp / CONFIG).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path


FORMAT = CamelidFormat()


def save_native(
    path: str | Path,
    state_dict: dict[str, torch.Tensor],
    args: ModelArgs,
    tokenizer,
    dtype: torch.dtype | None = None,
    chat_template: str | None = None,
) -> Path:
    """Write a checkpoint directory atomically from a model's state dict; `tokenizer` is a tokenizer object or
    the path of a tokenizer.model. `dtype` converts the weights (default: as given)."""
    from camelid.formats.release import canonical_state
    from camelid.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer) if isinstance(tokenizer, (str, Path)) else tokenizer
    state = canonical_state(args, state_dict, path)
    release = Release(args, state, tok, chat_template).to(dtype)
    return FORMAT.write(release, Path(path))
