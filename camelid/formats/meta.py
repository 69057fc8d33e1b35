"""Meta's checkpoint layout: params.json, consolidated.NN.pth (model-parallel shards), tokenizer.model.

Shards split wq/wk/wv/w1/w3/output on dim 0, wo/w2 on dim 1, tok_embeddings on dim 1 (dim 0 in Llama 3),
norms replicated (shared/SPEC.md section 2). `.pth` files are read with `weights_only=True`: a pickle
that would run code is refused, never executed. Meta's layout cannot tie embeddings (both tensors are
written; identical ones are read back as tied) and has no place for a byte-level BPE tokenizer or a chat
template: those go beside it as tokenizer.json / tokenizer_config.json, with a warning for the tokenizer.
"""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

from camelid.atomic import atomic_directory
from camelid.errors import CheckpointError, ConfigError
from camelid.formats.hf import card_text, read_card
from camelid.formats.release import Release
from camelid.formats.safetensors_io import regular_file
from camelid.lazy import torch
from camelid.model.args import ModelArgs, RopeScaling

log = logging.getLogger(__name__)

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


def _num(params: dict, key: str, kind: type, source: Path, default=...):
    if key not in params or params[key] is None:
        if default is ...:
            raise CheckpointError(f"{source}: missing key {key!r}")
        return default
    v = params[key]
    if isinstance(v, bool) or not isinstance(v, (int, float) if kind is float else int):
        raise CheckpointError(f"{source}: {key} must be {'a number' if kind is float else 'an integer'}, got {v!r}")
    return float(v) if kind is float else v


def read_params(path: Path) -> ModelArgs:
    p = path / "params.json"
    regular_file(p)
    try:
        params = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{p} is not valid JSON ({e})") from None
    if not isinstance(params, dict):
        raise CheckpointError(f"{p} must hold a JSON object")
    vocab = _num(params, "vocab_size", int, p, -1)
    try:
        scaling = None
        if params.get("use_scaled_rope"):
            scaling = RopeScaling(factor=_num(params, "rope_scaling_factor", float, p, 8.0))
        return ModelArgs(
            dim=_num(params, "dim", int, p),
            n_layers=_num(params, "n_layers", int, p),
            n_heads=_num(params, "n_heads", int, p),
            n_kv_heads=_num(params, "n_kv_heads", int, p, None),
            vocab_size=vocab if vocab > 0 else 32000,
            multiple_of=_num(params, "multiple_of", int, p, 256),
            ffn_dim_multiplier=_num(params, "ffn_dim_multiplier", float, p, None),
            norm_eps=_num(params, "norm_eps", float, p),
            rope_theta=_num(params, "rope_theta", float, p, 10000.0),
            rope_scaling=scaling,
            max_seq_len=_num(params, "max_seq_len", int, p, 2048 if vocab <= 32000 else 8192),
        )
    except ConfigError as e:
        raise CheckpointError(f"{p}: {e}") from None


def _load_pth(path: Path) -> dict[str, torch.Tensor]:
    regular_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0][:200]
        raise CheckpointError(f"{path} holds objects other than tensors; refused to unpickle it ({first})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({str(e).splitlines()[0][:200]})") from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointError(f"{path} does not hold a dict of named tensors")
    return state


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
            if t.dim() != parts[0].dim() or t.dim() <= dim or any(t.shape[i] != parts[0].shape[i] for i in other):
                raise CheckpointError(
                    f"{f}: tensor {name} has shape {tuple(t.shape)}, which cannot be joined on dim {dim} with "
                    f"{files[0].name}'s {tuple(parts[0].shape)}"
                )
        state[name] = torch.cat(parts, dim=dim)
    emb = state.get("tok_embeddings.weight")
    if emb is None or emb.dim() != 2:
        raise CheckpointError(f"{path}: missing tensor 'tok_embeddings.weight'")
    if emb.shape[0] != args.vocab_size:
        args = args.replace(vocab_size=emb.shape[0])
    out = state.get("output.weight")
    if out is not None and out.shape == emb.shape and torch.equal(out, emb):
        args = args.replace(tie_embeddings=True)  # written twice by a tied model; read back as one
    return args, state


class MetaFormat:
    name = "meta"
    priority = 50
    options = ("shards",)

    def detect(self, path: Path) -> bool:
        return path.is_dir() and (path / "params.json").is_file()

    def read_args(self, path: Path) -> ModelArgs:
        return read_params(path)

    def read(self, path: Path, dtype: torch.dtype | None = None, quant: str | None = None) -> Release:
        from camelid.tokenizer.files import read_dir

        args, state = load_meta(path)
        tok = read_dir(path)
        if tok is None:
            raise CheckpointError(f"{path} holds no tokenizer (tokenizer.model or tokenizer.json)")
        template = None
        tcfg = path / "tokenizer_config.json"
        if tcfg.is_file():
            try:
                cfg = json.loads(tcfg.read_text(encoding="utf-8"))
                template = cfg.get("chat_template")
                context = cfg.get("model_max_length")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                raise CheckpointError(f"{tcfg} is not a valid JSON object") from None
            if isinstance(context, int) and not isinstance(context, bool) and 0 < context < 2**31:
                args = args.replace(max_seq_len=context)
        return Release(args, state, tok, template if isinstance(template, str) else None, {}, read_card(path))

    def write(self, release: Release, path: Path, shards: int = 1) -> Path:
        from camelid.tokenizer.files import hf_files, native_files
        from camelid.tokenizer.hf_json import tokenizer_config
        from camelid.tokenizer.spm import SentencePieceTokenizer
        from camelid.tokenizer.wrappers import Llama3Tokenizer

        args = release.args
        if not isinstance(shards, int) or shards < 1:
            raise CheckpointError(f"--shards must be a positive integer, got {shards!r}")
        state = release.full_state()  # Meta's format has no tying
        for name, t in state.items():
            dim = split_dim(name, args)
            if dim is not None and t.shape[dim] % shards:
                raise CheckpointError(f"cannot split {name} {tuple(t.shape)} into {shards} shards on dim {dim}")
        if args.head_size * args.n_heads != args.dim:
            raise CheckpointError(
                f"Meta's params.json cannot express a head dimension of {args.head_size} (Meta's code uses dim / "
                f"n_heads = {args.dim // args.n_heads}); convert to hf or gguf instead"
            )
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
            s = args.rope_scaling
            if s.rope_type != "llama3" or (s.low_freq_factor, s.high_freq_factor, s.original_max_seq_len) != (
                1.0,
                4.0,
                8192,
            ):
                raise CheckpointError(
                    f"Meta's params.json holds only Llama 3.1's RoPE scaling (factor; low 1, high 4, original "
                    f"context 8192), not {s}; convert to hf or gguf instead"
                )
            params["use_scaled_rope"] = True
            params["rope_scaling_factor"] = s.factor
        tok = release.tokenizer
        # params.json has no context length, special-token table or chat template (Meta's code passes
        # max_seq_len at run time): tokenizer_config.json beside the weights carries them.
        beside: dict[str, bytes] = {}
        if isinstance(tok, (SentencePieceTokenizer, Llama3Tokenizer)):
            beside = native_files(tok)
            cfg = tokenizer_config(tok, release.chat_template, args.max_seq_len)
            beside["tokenizer_config.json"] = (json.dumps(cfg, indent=2, ensure_ascii=False) + "\n").encode()
        else:
            log.warning(
                "Meta's layout has no form for a %s tokenizer; writing it beside the weights as tokenizer.json "
                "and tokenizer_config.json (Meta's own code will not read it, camelid and transformers will)",
                type(tok).__name__,
            )
            beside = {k: v for k, v in hf_files(tok, release.chat_template, args.max_seq_len).items()}
        with atomic_directory(path) as tmp:
            (tmp / "params.json").write_text(json.dumps(params, indent=2) + "\n")
            for r in range(shards):
                part = {}
                for name, t in state.items():
                    dim = split_dim(name, args) if shards > 1 else None
                    part[name] = t.clone() if dim is None else t.chunk(shards, dim=dim)[r].clone()
                torch.save(part, tmp / f"consolidated.{r:02d}.pth")
            for name, data in beside.items():
                (tmp / name).write_bytes(data)
            if release.metadata:
                (tmp / "README.md").write_text(card_text(release.metadata, args), encoding="utf-8")
        return path


FORMAT = MetaFormat()
