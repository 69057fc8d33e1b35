"""GGUF (llama.cpp, ollama): read any of its common tensor types, write F32, F16, BF16 and Q8_0.

A name map to and from camelid's (Meta's) tensor names; llama.cpp's converter already puts q/k rows in
Meta's RoPE order, so no permutation is needed. The tokenizer travels in the file's metadata.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from camelid.errors import CheckpointError
from camelid.model.args import ModelArgs
from camelid.tokenizer.spm_proto import BPE, SentencePieceModel

log = logging.getLogger(__name__)

_LAYER = {
    "attn_q": "attention.wq",
    "attn_k": "attention.wk",
    "attn_v": "attention.wv",
    "attn_output": "attention.wo",
    "ffn_gate": "feed_forward.w1",
    "ffn_down": "feed_forward.w2",
    "ffn_up": "feed_forward.w3",
    "attn_norm": "attention_norm",
    "ffn_norm": "ffn_norm",
}
_TOP = {"token_embd": "tok_embeddings", "output_norm": "norm", "output": "output"}
_LAYER_BACK = {v: k for k, v in _LAYER.items()}
_TOP_BACK = {v: k for k, v in _TOP.items()}
READ_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K")
WRITE_TYPES = ("F32", "F16", "BF16", "Q8_0")


def gguf_to_meta_name(name: str) -> str:
    base, _, suffix = name.rpartition(".")
    if base in _TOP:
        return f"{_TOP[base]}.{suffix}"
    parts = base.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[2] in _LAYER:
        return f"layers.{parts[1]}.{_LAYER[parts[2]]}.{suffix}"
    raise KeyError(name)


def meta_to_gguf_name(name: str) -> str:
    base, _, suffix = name.rpartition(".")
    if base in _TOP_BACK:
        return f"{_TOP_BACK[base]}.{suffix}"
    _, i, rest = base.split(".", 2)
    return f"blk.{i}.{_LAYER_BACK[rest]}.{suffix}"


def _reader(path: Path):
    import gguf

    try:
        return gguf.GGUFReader(str(path))
    except FileNotFoundError:
        raise CheckpointError(f"GGUF file {path} does not exist") from None
    except Exception as e:  # the reader raises ValueError, struct.error, ... on a bad or truncated file
        raise CheckpointError(f"{path} is not a valid GGUF file ({type(e).__name__}: {e})") from None


def _field(reader, key: str, default: Any = None) -> Any:
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def read_args(reader, path: Path) -> ModelArgs:
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise CheckpointError(f"{path}: architecture {arch!r} is not a LLaMA-family model")
    names = {t.name for t in reader.tensors}
    if "rope_freqs.weight" in names:
        raise CheckpointError(f"{path}: per-dimension RoPE factors (rope_freqs, Llama 3.1 GGUFs) are not supported yet")

    def need(key: str):
        v = _field(reader, f"llama.{key}")
        if v is None:
            raise CheckpointError(f"{path}: missing metadata key llama.{key}")
        return v

    dim, n_heads = int(need("embedding_length")), int(need("attention.head_count"))
    tokens = _field(reader, "tokenizer.ggml.tokens")
    vocab = int(_field(reader, "llama.vocab_size", len(tokens) if tokens else 0))
    head_dim = int(_field(reader, "llama.rope.dimension_count", dim // n_heads))
    return ModelArgs(
        dim=dim,
        n_layers=int(need("block_count")),
        n_heads=n_heads,
        n_kv_heads=int(_field(reader, "llama.attention.head_count_kv", n_heads)),
        vocab_size=vocab,
        hidden_dim=int(need("feed_forward_length")),
        head_dim=None if head_dim * n_heads == dim else head_dim,
        norm_eps=float(need("attention.layer_norm_rms_epsilon")),
        rope_theta=float(_field(reader, "llama.rope.freq_base", 10000.0)),
        max_seq_len=int(need("context_length")),
        tie_embeddings="output.weight" not in names,
    )


def _tensor(t, path: Path, dtype: torch.dtype) -> torch.Tensor:
    import gguf

    kind = t.tensor_type.name
    if kind not in READ_TYPES:
        raise CheckpointError(f"{path}: tensor {t.name} has type {kind}; camelid reads {', '.join(READ_TYPES)}")
    shape = tuple(int(d) for d in reversed(t.shape.tolist()))  # GGUF lists dims innermost first
    data = t.data  # a view of the mmap'd file: (rows, bytes per row) for quantized types
    out = torch.empty(shape, dtype=dtype)
    flat_rows = out.view(-1, shape[-1]) if out.dim() > 1 else out.view(1, -1)
    rows = flat_rows.shape[0]
    src = np.asarray(data).reshape(rows, -1)
    # Convert a few rows at a time, so the only transient memory is one chunk in fp32, never the whole tensor.
    step = max(1, (1 << 22) // max(1, shape[-1]))
    for r in range(0, rows, step):
        block = np.array(src[r : r + step])  # a copy: the mmap is read-only
        if kind == "BF16":
            chunk = torch.from_numpy(block.view(np.int16)).view(torch.bfloat16)
        elif kind in ("F32", "F16"):
            chunk = torch.from_numpy(block)
        else:
            chunk = torch.from_numpy(gguf.quants.dequantize(block, t.tensor_type))
        flat_rows[r : r + step] = chunk.reshape(-1, flat_rows.shape[1]).to(dtype)
    return out


def read_state(reader, path: Path, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Every tensor in camelid's names, dequantized one at a time to `dtype` (peak memory: the result + one)."""
    out = {}
    for t in reader.tensors:
        try:
            name = gguf_to_meta_name(t.name)
        except KeyError:
            raise CheckpointError(f"{path}: unexpected tensor {t.name!r} for a LLaMA model") from None
        try:
            out[name] = _tensor(t, path, dtype)
        except (ValueError, IndexError) as e:
            raise CheckpointError(f"{path}: tensor {t.name} is truncated or malformed ({e})") from None
    return out


def read_tokenizer(reader, path: Path):
    from camelid.tokenizer.bpe import ByteLevelBPETokenizer
    from camelid.tokenizer.spm import SentencePieceTokenizer

    kind = _field(reader, "tokenizer.ggml.model")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    if kind is None or tokens is None:
        raise CheckpointError(f"{path} carries no tokenizer (tokenizer.ggml.model / tokens)")
    types = _field(reader, "tokenizer.ggml.token_type") or [1] * len(tokens)
    bos = _field(reader, "tokenizer.ggml.bos_token_id")
    eos = _field(reader, "tokenizer.ggml.eos_token_id")
    pad = _field(reader, "tokenizer.ggml.padding_token_id")
    add_bos = _field(reader, "tokenizer.ggml.add_bos_token")
    if kind == "gpt2":
        merges = _field(reader, "tokenizer.ggml.merges") or []
        # chat models end a turn with an end-of-turn token as well as eos
        extra = [i for i, t in enumerate(tokens) if t in ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>")]
        return ByteLevelBPETokenizer(
            tokens,
            merges,
            types,
            pre=_field(reader, "tokenizer.ggml.pre", "gpt2"),
            bos_id=bos,
            eos_id=eos,
            pad_id=pad,
            add_bos=bool(add_bos),
            extra_stop_ids=extra,
        )
    if kind == "llama":
        scores = _field(reader, "tokenizer.ggml.scores") or [0.0] * len(tokens)
        model = SentencePieceModel(
            pieces=list(tokens),
            scores=[float(s) for s in scores],
            types=[int(t) for t in types],
            model_type=BPE,
            byte_fallback=any(int(t) == 6 for t in types),
            unk_id=int(_field(reader, "tokenizer.ggml.unknown_token_id", 0)),
            bos_id=-1 if bos is None else int(bos),
            eos_id=-1 if eos is None else int(eos),
            pad_id=-1 if pad is None else int(pad),
            normalizer_name="identity",
            add_dummy_prefix=bool(_field(reader, "tokenizer.ggml.add_space_prefix", True)),
            remove_extra_whitespaces=False,
        )
        tok = SentencePieceTokenizer(model)
        tok.add_bos = True if add_bos is None else bool(add_bos)
        return tok
    raise CheckpointError(f"{path}: tokenizer type {kind!r} is not supported (camelid reads 'llama' and 'gpt2')")


def chat_template(reader) -> str | None:
    return _field(reader, "tokenizer.chat_template")


def write_gguf(
    path: str | Path,
    state: dict[str, torch.Tensor],
    args: ModelArgs,
    tokenizer,
    qtype: str = "F16",
    name: str = "camelid",
    template: str | None = None,
) -> Path:
    """Write a GGUF llama.cpp runs. Norms stay F32; matrices take `qtype` (F32, F16, BF16 or Q8_0)."""
    import gguf

    if qtype not in WRITE_TYPES:
        raise CheckpointError(f"GGUF type {qtype} cannot be written; choose one of {', '.join(WRITE_TYPES)}")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    w = gguf.GGUFWriter(str(tmp), "llama")
    w.add_name(name)
    w.add_block_count(args.n_layers)
    w.add_context_length(args.max_seq_len)
    w.add_embedding_length(args.dim)
    w.add_feed_forward_length(args.ffn_hidden)
    w.add_head_count(args.n_heads)
    w.add_head_count_kv(args.kv_heads)
    w.add_rope_dimension_count(args.head_size)
    w.add_rope_freq_base(args.rope_theta)
    w.add_layer_norm_rms_eps(args.norm_eps)
    w.add_vocab_size(args.vocab_size)
    w.add_file_type({"F32": 0, "F16": 1, "Q8_0": 7, "BF16": 32}[qtype])
    _write_tokenizer(w, tokenizer, args.vocab_size)
    if template:
        w.add_chat_template(template)
    quant = {
        "F32": gguf.GGMLQuantizationType.F32,
        "F16": gguf.GGMLQuantizationType.F16,
        "BF16": gguf.GGMLQuantizationType.BF16,
        "Q8_0": gguf.GGMLQuantizationType.Q8_0,
    }[qtype]
    for key, t in state.items():
        if key == "output.weight" and args.tie_embeddings:
            continue
        arr = t.detach().float().cpu().numpy()
        if arr.ndim == 1 or qtype == "F32":
            w.add_tensor(meta_to_gguf_name(key), arr.astype(np.float32))
        elif qtype == "F16":
            w.add_tensor(meta_to_gguf_name(key), arr.astype(np.float16))
        else:
            data = gguf.quants.quantize(arr, quant)
            w.add_tensor(meta_to_gguf_name(key), data, raw_shape=data.shape, raw_dtype=quant)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.replace(path)
    return path


def _write_tokenizer(w, tokenizer, vocab_size: int) -> None:
    from camelid.tokenizer.bpe import ByteLevelBPETokenizer
    from camelid.tokenizer.spm import SentencePieceTokenizer

    if isinstance(tokenizer, SentencePieceTokenizer):
        m = tokenizer.model
        w.add_tokenizer_model("llama")
        w.add_token_list(m.pieces)
        w.add_token_scores(m.scores)
        w.add_token_types(m.types)
        w.add_add_space_prefix(m.add_dummy_prefix)
    elif isinstance(tokenizer, ByteLevelBPETokenizer):
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(tokenizer.pre)
        w.add_token_list(tokenizer.pieces)
        w.add_token_types(tokenizer.types)
        merges = sorted(tokenizer.ranks, key=tokenizer.ranks.get)
        w.add_token_merges([f"{a} {b}" for a, b in merges])
    else:
        raise CheckpointError(f"cannot store a {type(tokenizer).__name__} in GGUF")
    if tokenizer.vocab_size != vocab_size:
        log.warning("tokenizer has %d entries, the model %d rows", tokenizer.vocab_size, vocab_size)
    if tokenizer.bos_id is not None:
        w.add_bos_token_id(tokenizer.bos_id)
    if tokenizer.eos_id is not None:
        w.add_eos_token_id(tokenizer.eos_id)
    if tokenizer.pad_id is not None:
        w.add_pad_token_id(tokenizer.pad_id)
    w.add_add_bos_token(bool(getattr(tokenizer, "add_bos", True)))
