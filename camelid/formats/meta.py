"""Meta's checkpoint layout: params.json, consolidated.NN.pth (model-parallel shards), tokenizer.model.

Shards split wq/wk/wv/w1/w3/output on dim 0, wo/w2 on dim 1, tok_embeddings on dim 1 (dim 0 in Llama 3),
norms replicated (shared/SPEC.md section 2). `.pth` files are read with `weights_only=True`: a pickle
that would run code is refused, never executed.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import torch

from camelid.errors import CheckpointError
from camelid.formats.atomic import atomic_directory
from camelid.model.args import ModelArgs, RopeScaling

_DIM0 = (
    "attention.wq.weight",
    "attention.wk.weight",
    "attention.wv.weight",
    "feed_forward.w1.weight",
    "feed_forward.w3.weight",
)
_DIM1 = ("attention.wo.weight", "feed_forward.w2.weight")


def split_dim(name: str, args: ModelArgs) -> int | None:
    """The dimension a tensor is split on across model-parallel shards; None if replicated."""
    if name.endswith(_DIM0) or name == "output.weight":
        return 0
    if name.endswith(_DIM1):
        return 1
    if name == "tok_embeddings.weight":
        return 0 if args.vocab_size >= 128000 else 1  # Llama 3 shards its 128K vocabulary by rows
    return None


def meta_ffn_params(args: ModelArgs) -> tuple[int, float | None]:
    """(multiple_of, ffn_dim_multiplier) that make Meta's rounding rule give this model's FFN width."""
    if args.hidden_dim is None:
        return args.multiple_of, args.ffn_dim_multiplier
    for multiplier in (None, args.ffn_dim_multiplier, 1.3, 1.5, 2.0):
        for multiple_of in (args.multiple_of, 256, 1024, 4096, 512, 128, 64, 32, 16, 8, 4, 2, 1):
            trial = args.replace(hidden_dim=None, multiple_of=multiple_of, ffn_dim_multiplier=multiplier)
            if trial.ffn_hidden == args.hidden_dim:
                return multiple_of, multiplier
    raise CheckpointError(f"Meta's params.json cannot express an FFN width of {args.hidden_dim} for dim {args.dim}")


def read_params(path: Path) -> ModelArgs:
    p = path / "params.json"
    try:
        params = json.loads(p.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{p} does not exist") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{p} is not valid JSON ({e})") from None
    try:
        scaling = None
        if params.get("use_scaled_rope"):
            scaling = RopeScaling(factor=float(params.get("rope_scaling_factor", 8.0)))
        vocab = int(params.get("vocab_size", -1))
        return ModelArgs(
            dim=int(params["dim"]),
            n_layers=int(params["n_layers"]),
            n_heads=int(params["n_heads"]),
            n_kv_heads=params.get("n_kv_heads"),
            vocab_size=vocab if vocab > 0 else 32000,
            multiple_of=int(params.get("multiple_of", 256)),
            ffn_dim_multiplier=params.get("ffn_dim_multiplier"),
            norm_eps=float(params["norm_eps"]),
            rope_theta=float(params.get("rope_theta", 10000.0)),
            rope_scaling=scaling,
            max_seq_len=int(params.get("max_seq_len", 2048 if vocab <= 32000 else 8192)),
        )
    except KeyError as e:
        raise CheckpointError(f"{p}: missing key {e.args[0]!r}") from None


def _load_pth(path: Path) -> dict[str, torch.Tensor]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0][:200]
        raise CheckpointError(f"{path} holds objects other than tensors; refused to unpickle it ({first})") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({str(e).splitlines()[0][:200]})") from None


def load_meta(path: Path) -> tuple[ModelArgs, dict[str, torch.Tensor]]:
    """Merge every consolidated.NN.pth of a Meta checkpoint directory into one state dict."""
    args = read_params(path)
    files = sorted(path.glob("consolidated.*.pth"))
    if not files:
        raise CheckpointError(f"{path} holds no consolidated.*.pth files")
    shards = [_load_pth(f) for f in files]
    names = set(shards[0])
    for f, s in zip(files, shards):
        if set(s) != names:
            raise CheckpointError(f"{f}: its tensor names differ from {files[0].name}'s")
    state = {}
    for name in sorted(names):
        if name.endswith("rope.freqs"):  # v1 checkpoints saved this buffer
            continue
        parts = [s[name] for s in shards]
        dim = split_dim(name, args) if len(parts) > 1 else None
        if dim is None:
            state[name] = parts[0]
            continue
        other = [i for i in range(parts[0].dim()) if i != dim]
        for f, t in zip(files, parts):
            if t.dim() != parts[0].dim() or any(t.shape[i] != parts[0].shape[i] for i in other):
                raise CheckpointError(
                    f"{f}: tensor {name} has shape {tuple(t.shape)}, which cannot be joined on dim {dim} with "
                    f"{files[0].name}'s {tuple(parts[0].shape)}"
                )
        state[name] = torch.cat(parts, dim=dim)
    vocab = state["tok_embeddings.weight"].shape[0]
    if vocab != args.vocab_size:
        args = args.replace(vocab_size=vocab)
    return args, state


def save_meta(
    path: str | Path, state: dict[str, torch.Tensor], args: ModelArgs, tokenizer_file: Path | None, shards: int = 1
) -> Path:
    """Write params.json and `shards` consolidated.NN.pth files, atomically (temp directory + rename)."""
    path = Path(path)
    tied = args.tie_embeddings
    if tied:
        state = {**state, "output.weight": state["tok_embeddings.weight"]}  # Meta's format has no tying
    for name, t in state.items():
        dim = split_dim(name, args)
        if dim is not None and t.shape[dim] % shards:
            raise CheckpointError(f"cannot split {name} {tuple(t.shape)} into {shards} shards on dim {dim}")
    multiple_of, multiplier = meta_ffn_params(args)
    params = {
        "dim": args.dim,
        "multiple_of": multiple_of,
        "n_heads": args.n_heads,
        "n_layers": args.n_layers,
        "norm_eps": args.norm_eps,
        "vocab_size": args.vocab_size,
        "rope_theta": args.rope_theta,
    }
    if args.n_kv_heads is not None:
        params["n_kv_heads"] = args.n_kv_heads
    if multiplier is not None:
        params["ffn_dim_multiplier"] = multiplier
    if args.rope_scaling is not None:
        params["use_scaled_rope"] = True
        params["rope_scaling_factor"] = args.rope_scaling.factor
    with atomic_directory(path) as tmp:
        (tmp / "params.json").write_text(json.dumps(params, indent=2))
        for r in range(shards):
            part = {}
            for name, t in state.items():
                dim = split_dim(name, args) if shards > 1 else None
                part[name] = t.clone() if dim is None else t.chunk(shards, dim=dim)[r].clone()
            torch.save(part, tmp / f"consolidated.{r:02d}.pth")
        if tokenizer_file is not None:
            shutil.copyfile(tokenizer_file, tmp / "tokenizer.model")
    return path
