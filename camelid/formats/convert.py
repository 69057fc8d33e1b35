"""`camelid convert SRC DST --to {camelid,meta,hf,gguf}`: any supported checkpoint (or a training checkpoint)
to any release format."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from camelid.errors import CheckpointError
from camelid.model.args import ModelArgs
from camelid.model.transformer import build_model

TARGETS = ("camelid", "meta", "hf", "gguf")


def training_state(src: Path) -> tuple[ModelArgs, dict[str, torch.Tensor], Path]:
    """Model args, full state dict and tokenizer file of a DCP training checkpoint."""
    from camelid.train import checkpoint

    meta = checkpoint.read_meta(src)
    args = ModelArgs.from_dict(meta["model"], source=str(src / "train.json"))
    tokenizer = src / "tokenizer.model"
    if not tokenizer.is_file():
        raise CheckpointError(f"{src} holds no tokenizer.model; set data.tokenizer in the training config")
    model = build_model(args, seed=None)
    checkpoint.load_model_weights(src, model)
    return args, model.state_dict(), tokenizer


def _tokenizer_file(tokenizer, workdir: Path) -> Path | None:
    """A file holding the tokenizer, for formats that ship one beside the weights."""
    from camelid.tokenizer.spm import SentencePieceTokenizer
    from camelid.tokenizer.spm_proto import serialize_model

    if isinstance(tokenizer, SentencePieceTokenizer):
        if tokenizer.path is not None:
            return tokenizer.path
        out = workdir / "tokenizer.model"
        out.write_bytes(serialize_model(tokenizer.model))
        return out
    tok_json = getattr(getattr(tokenizer, "tok", None), "to_str", None)
    if tok_json is not None:
        out = workdir / "tokenizer.json"
        out.write_text(tok_json())
        return out
    return None


def convert(
    src: str | Path,
    dst: str | Path,
    to: str = "camelid",
    dtype: torch.dtype | None = None,
    shards: int = 1,
    quant: str | None = None,
) -> Path:
    from camelid.formats import load_weights, native

    if to not in TARGETS:
        raise CheckpointError(f"--to {to}: choose one of {', '.join(TARGETS)}")
    fmt, args, state, tokenizer, template = load_weights(src, dtype)
    dst = Path(dst)
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
    if args.tie_embeddings and "output.weight" not in state:
        state["output.weight"] = state["tok_embeddings.weight"]
    with tempfile.TemporaryDirectory() as tmp:
        tok_file = _tokenizer_file(tokenizer, Path(tmp))
        if to == "camelid":
            if tok_file is None or tok_file.name != "tokenizer.model":
                raise CheckpointError(
                    f"{src}: camelid's format needs a SentencePiece tokenizer; this one is "
                    f"{type(tokenizer).__name__} (convert to hf or gguf instead)"
                )
            return native.save_native(dst, state, args, tok_file)
        if to == "meta":
            from camelid.formats.meta import save_meta

            return save_meta(dst, state, args, tok_file, shards=shards)
        if to == "hf":
            from camelid.formats.hf import save_hf

            return save_hf(dst, state, args, tok_file)
        from camelid.formats.gguf_format import write_gguf

        default = {torch.float32: "F32", torch.bfloat16: "BF16"}.get(dtype, "F16")
        return write_gguf(dst, state, args, tokenizer, qtype=quant or default, template=template)
