"""GGUF (llama.cpp, ollama): read every tensor type the `gguf` library dequantizes; write F32, F16, BF16, Q8_0,
Q4_0 and Q4_1.

A name map to and from camelid's (Meta's) tensor names; llama.cpp's converter already puts q/k rows in
Meta's RoPE order, so no permutation is needed. The tokenizer, the chat template and the `general.*`
metadata (name, licence, ...) travel in the file's key-value section; Llama 3.1's RoPE scaling is the
`rope_freqs` tensor llama.cpp reads (plus the exact parameters under `camelid.rope_scaling`), linear
scaling llama.cpp's `rope.scaling.*` keys. Every count, type and length is checked before use.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from camelid.errors import CheckpointError, ConfigError
from camelid.formats.release import FILE_KEYS, Release, clean_metadata
from camelid.formats.safetensors_io import regular_file
from camelid.lazy import torch
from camelid.model.args import ModelArgs, RopeScaling
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
DENSE_TYPES = ("F32", "F16", "BF16")
QUANT_TYPES = (
    "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
    "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0",
)  # fmt: skip
READ_TYPES = DENSE_TYPES + QUANT_TYPES
WRITE_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1")
# llama.cpp's LLAMA_FTYPE for a file whose matrices are all of one type
FILE_TYPE = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "BF16": 32}
ROPE_KEY = "camelid.rope_scaling"


def gguf_to_meta_name(name: str) -> str:
    base, _, suffix = name.rpartition(".")
    if base in _TOP:
        return f"{_TOP[base]}.{suffix}"
    parts = base.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _LAYER:
        return f"layers.{int(parts[1])}.{_LAYER[parts[2]]}.{suffix}"
    raise KeyError(name)


def meta_to_gguf_name(name: str) -> str:
    base, _, suffix = name.rpartition(".")
    if base in _TOP_BACK:
        return f"{_TOP_BACK[base]}.{suffix}"
    _, i, rest = base.split(".", 2)
    return f"blk.{i}.{_LAYER_BACK[rest]}.{suffix}"


def _reader(path: Path):
    from camelid.formats.gguf_file import GGUFFile

    regular_file(path, "GGUF file")
    try:
        return GGUFFile(path)
    except CheckpointError:
        raise
    except Exception as e:  # struct.error, UnicodeDecodeError, ... on a bad or truncated file
        raise CheckpointError(f"{path} is not a valid GGUF file ({type(e).__name__}: {e})") from None


def _field(reader, key: str, default: Any = None) -> Any:
    from camelid.formats.gguf_file import contents

    v = reader.fields.get(key)
    return default if v is None else contents(v)


class Fields:
    """Typed access to a GGUF file's key-value section: a wrong type is a one-line error naming the key."""

    def __init__(self, reader, path: Path) -> None:
        self.reader, self.path = reader, path

    def get(self, key: str, kind: type, default: Any = ...) -> Any:
        v = _field(self.reader, key, None)
        if v is None:
            if default is ...:
                raise CheckpointError(f"{self.path}: missing metadata key {key}")
            return default
        if kind is float and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            # GGUF stores float32: read back the shortest decimal of that float32 (1e-05, not 9.99999974e-06)
            return float(str(np.float32(v))) if isinstance(v, float) else float(v)
        if kind is int and isinstance(v, int) and not isinstance(v, bool):
            return v
        if kind in (str, bool) and isinstance(v, kind):
            return v
        if kind is list and isinstance(v, list):
            return v
        raise CheckpointError(f"{self.path}: metadata key {key} has a value of the wrong type ({v!r:.80})")

    def strings(self, key: str, default: Any = ...) -> list[str] | None:
        v = self.get(key, list, default)
        if v is not None and not all(isinstance(x, str) for x in v):
            raise CheckpointError(f"{self.path}: metadata key {key} must be a list of strings")
        return v

    def numbers(self, key: str, n: int, kind: type) -> list | None:
        from camelid.formats.gguf_file import STRING, GGUFArray

        raw = self.reader.fields.get(key)
        if raw is None:
            return None
        floats = kind is float
        ok = isinstance(raw, GGUFArray) and raw.kind not in (STRING, 7) and (floats or raw.kind not in (6, 12))
        if not ok or len(raw) != n:
            raise CheckpointError(f"{self.path}: metadata key {key} must hold {n} {kind.__name__} values")
        return raw.tolist()


def llama3_from_factors(factors: list[float], head_dim: int, theta: float) -> RopeScaling | None:
    """Llama 3.1's scaling parameters that give these per-frequency factors (llama.cpp's rope_freqs), or None.

    The rule depends on (factor, original/(high-low), low/(high-low)) only, so low is fixed at 1."""
    from camelid.model.rope import inverse_frequencies

    f = np.asarray(factors, dtype=np.float64)
    wavelen = 2 * np.pi / inverse_frequencies(head_dim, theta).double().numpy()
    top = float(f.max())
    top = float(f"{top:.7g}")
    if top <= 1.0:
        return None
    mid = (f > 1 + 1e-6) & (f < top - 1e-6 * top)
    if mid.sum() >= 2:
        s = (1 / f[mid] - 1 / top) / (1 - 1 / top)
        a, minus_b = np.polyfit(1 / wavelen[mid], s, 1)
        b = -minus_b
        if b <= 0:
            return None
        candidate = RopeScaling(
            factor=top, low_freq_factor=1.0, high_freq_factor=float(1 + 1 / b), original_max_seq_len=round(a / b)
        )
    else:
        first_scaled = wavelen[f > 1 + 1e-6].min()
        candidate = RopeScaling(factor=top, original_max_seq_len=max(1, round(first_scaled * 4 * 0.999)))

    def fits(c: RopeScaling) -> bool:
        got = inverse_frequencies(head_dim, theta).double() / inverse_frequencies(head_dim, theta, c).double()
        return bool(np.allclose(got.numpy(), f, rtol=1e-5, atol=0))

    # the fit carries float error (high 1.9999998 for 2): keep a rounded value when it gives the same factors
    rounded = RopeScaling(
        factor=float(f"{candidate.factor:.6g}"),
        high_freq_factor=float(f"{candidate.high_freq_factor:.6g}"),
        original_max_seq_len=candidate.original_max_seq_len,
    )
    return rounded if fits(rounded) else candidate if fits(candidate) else None


def read_args(reader, path: Path) -> ModelArgs:
    fields = Fields(reader, path)
    arch = fields.get("general.architecture", str)
    if arch != "llama":
        raise CheckpointError(f"{path}: architecture {arch!r} is not a LLaMA-family model")
    names = {t.name for t in reader.tensors}
    dim = fields.get("llama.embedding_length", int)
    n_heads = fields.get("llama.attention.head_count", int)
    if n_heads <= 0 or dim <= 0:
        raise CheckpointError(f"{path}: llama.embedding_length and llama.attention.head_count must be positive")
    tokens = fields.strings("tokenizer.ggml.tokens", None)
    vocab = fields.get("llama.vocab_size", int, len(tokens) if tokens else 0)
    head_dim = fields.get("llama.attention.key_length", int, None)
    if head_dim is None:
        head_dim = fields.get("llama.rope.dimension_count", int, dim // n_heads)
    if head_dim <= 0:
        raise CheckpointError(f"{path}: the head dimension (llama.attention.key_length) must be positive")
    theta = fields.get("llama.rope.freq_base", float, 10000.0)
    scaling = _read_rope_scaling(reader, fields, path, names, head_dim, theta)
    try:
        return ModelArgs(
            dim=dim,
            n_layers=fields.get("llama.block_count", int),
            n_heads=n_heads,
            n_kv_heads=fields.get("llama.attention.head_count_kv", int, n_heads),
            vocab_size=vocab,
            hidden_dim=fields.get("llama.feed_forward_length", int),
            head_dim=None if head_dim * n_heads == dim else head_dim,
            norm_eps=fields.get("llama.attention.layer_norm_rms_epsilon", float),
            rope_theta=theta,
            rope_scaling=scaling,
            max_seq_len=fields.get("llama.context_length", int),
            tie_embeddings="output.weight" not in names,
        )
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None


def _read_rope_scaling(reader, fields: Fields, path: Path, names: set, head_dim: int, theta: float):
    kind = fields.get("llama.rope.scaling.type", str, "none")
    if kind == "linear":
        return RopeScaling(rope_type="linear", factor=fields.get("llama.rope.scaling.factor", float))
    if kind not in ("none", ""):
        raise CheckpointError(f"{path}: RoPE scaling type {kind!r} is not supported (camelid runs linear and llama3)")
    if "rope_freqs.weight" not in names:
        return None
    exact = fields.get(ROPE_KEY, str, None)
    if exact is not None:
        try:
            return RopeScaling(**json.loads(exact))
        except (json.JSONDecodeError, TypeError, ConfigError) as e:
            raise CheckpointError(f"{path}: metadata key {ROPE_KEY} is malformed ({e})") from None
    (t,) = [t for t in reader.tensors if t.name == "rope_freqs.weight"]
    factors = np.asarray(t.data, dtype=np.float64).reshape(-1).tolist()
    if len(factors) != head_dim // 2:
        raise CheckpointError(f"{path}: rope_freqs has {len(factors)} values, expected {head_dim // 2}")
    scaling = llama3_from_factors(factors, head_dim, theta)
    if scaling is None:
        raise CheckpointError(f"{path}: its rope_freqs factors do not follow Llama 3.1's scaling rule")
    return scaling


def rows_of(t, start: int, end: int) -> torch.Tensor:
    """Rows start..end of a GGUF matrix, dequantized to fp32."""
    import gguf

    kind = t.tensor_type.name
    block = np.array(np.asarray(t.data)[start:end])  # a copy: the mmap is read-only
    if kind == "BF16":
        return torch.from_numpy(block.view(np.int16)).view(torch.bfloat16).float()
    if kind in ("F32", "F16"):
        return torch.from_numpy(block).float()
    return torch.from_numpy(gguf.quants.dequantize(block, t.tensor_type)).reshape(end - start, -1)


def _tensor(t, path: Path, dtype: torch.dtype) -> torch.Tensor:
    kind = t.tensor_type.name
    if kind not in READ_TYPES:
        raise CheckpointError(f"{path}: tensor {t.name} has type {kind}; camelid reads {', '.join(READ_TYPES)}")
    shape = tuple(int(d) for d in reversed(t.shape.tolist()))  # GGUF lists dims innermost first
    out = torch.empty(shape, dtype=dtype)
    flat_rows = out.view(-1, shape[-1]) if out.dim() > 1 else out.view(1, -1)
    rows = flat_rows.shape[0]
    # Convert a few rows at a time, so the only transient memory is one chunk in fp32, never the whole tensor.
    step = max(1, (1 << 22) // max(1, shape[-1]))
    for r in range(0, rows, step):
        flat_rows[r : r + step] = rows_of(t, r, min(rows, r + step)).reshape(-1, flat_rows.shape[1]).to(dtype)
    return out


def read_state(
    reader, path: Path, dtype: torch.dtype | None = None, quant: str | None = None
) -> tuple[dict[str, torch.Tensor], dict]:
    """(dense tensors, packed weights) in camelid's names, one tensor at a time (peak memory: the result + one).

    `quant` "none" dequantizes everything to `dtype`; None keeps each quantized matrix packed (exactly where its
    type maps onto camelid's int8 / int4 layouts, re-quantized with its error logged otherwise); "int8" / "int4"
    packs every matrix to that width."""
    from camelid.formats.gguf_blocks import packed_weight
    from camelid.memory import trim
    from camelid.transforms.quant_weight import layout_for

    dense, packed, errors = {}, {}, []
    bits = {"int8": 8, "int4": 4}.get(quant or "")
    for t in reader.tensors:
        if t.name == "rope_freqs.weight":  # read by read_args as the RoPE scaling
            continue
        try:
            name = gguf_to_meta_name(t.name)
        except KeyError:
            raise CheckpointError(f"{path}: unexpected tensor {t.name!r} for a LLaMA model") from None
        kind = t.tensor_type.name
        if kind not in READ_TYPES:
            raise CheckpointError(f"{path}: tensor {t.name} has type {kind}; camelid reads {', '.join(READ_TYPES)}")
        matrix = len(t.shape) == 2 and name != "norm.weight"
        try:
            if matrix and quant != "none" and (kind in QUANT_TYPES or bits is not None):
                width = bits and layout_for(name, bits, 32, int(t.shape[0]))[0]
                qw, err = packed_weight(t, rows_of, width)
                packed[name] = qw
                if err is not None:
                    errors.append((name, kind, qw.scheme, err))
            else:
                dense[name] = _tensor(t, path, dtype)
        except (ValueError, IndexError) as e:
            raise CheckpointError(f"{path}: tensor {t.name} is truncated or malformed ({e})") from None
        reader.release(t)  # its file pages are read: out of this process's memory
        trim(t.nbytes)  # and the transient copies made for it (every few MB)
    if errors:
        worst = max(errors, key=lambda e: e[3])
        kinds = sorted({f"{k} -> {s}" for _, k, s, _ in errors})
        log.warning("%s: %d tensor(s) re-quantized (%s); largest relative RMS error %.4f (%s)", path.name,
                    len(errors), ", ".join(kinds), worst[3], worst[0])  # fmt: skip
    return dense, packed


END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|eom_id|>", "<end_of_turn>")


def read_tokenizer(reader, path: Path):
    from camelid.tokenizer.bpe import ByteLevelBPETokenizer
    from camelid.tokenizer.spm import SentencePieceTokenizer

    fields = Fields(reader, path)
    kind = fields.get("tokenizer.ggml.model", str, None)
    tokens = fields.strings("tokenizer.ggml.tokens", None)
    if kind is None or tokens is None:
        raise CheckpointError(f"{path} carries no tokenizer (tokenizer.ggml.model / tokens)")
    n = len(tokens)
    types = fields.numbers("tokenizer.ggml.token_type", n, int) or [1] * n

    def token_id(key: str) -> int | None:
        v = fields.get(key, int, None)
        if v is not None and not 0 <= v < n:
            raise CheckpointError(f"{path}: {key} = {v} is outside the vocabulary of {n} tokens")
        return v

    bos, eos, pad = token_id("tokenizer.ggml.bos_token_id"), token_id("tokenizer.ggml.eos_token_id"), None
    pad = token_id("tokenizer.ggml.padding_token_id")
    add_bos = fields.get("tokenizer.ggml.add_bos_token", bool, None)
    eot = token_id("tokenizer.ggml.eot_token_id")
    if kind == "gpt2":
        merges = fields.strings("tokenizer.ggml.merges", []) or []
        if any(" " not in m for m in merges):
            raise CheckpointError(f"{path}: tokenizer.ggml.merges holds an entry without a space")
        # chat models end a turn with an end-of-turn token as well as eos
        extra = [i for i, t in enumerate(tokens) if t in END_OF_TURN] + ([eot] if eot is not None else [])
        pre = fields.get("tokenizer.ggml.pre", str, "gpt2")
        try:
            return ByteLevelBPETokenizer(
                tokens, merges, types, pre=pre, bos_id=bos, eos_id=eos, pad_id=pad,
                add_bos=bool(add_bos), extra_stop_ids=extra,
            )  # fmt: skip
        except Exception as e:  # noqa: BLE001 - a malformed vocabulary is the file's fault
            raise CheckpointError(f"{path}: its tokenizer cannot be built ({e})") from None
    if kind == "llama":
        scores = fields.numbers("tokenizer.ggml.scores", n, float) or [0.0] * n
        model = SentencePieceModel(
            pieces=list(tokens),
            scores=[float(s) for s in scores],
            types=[int(t) for t in types],
            model_type=BPE,
            byte_fallback=any(int(t) == 6 for t in types),
            unk_id=fields.get("tokenizer.ggml.unknown_token_id", int, 0),
            bos_id=-1 if bos is None else bos,
            eos_id=-1 if eos is None else eos,
            pad_id=-1 if pad is None else pad,
            normalizer_name="identity",
            add_dummy_prefix=fields.get("tokenizer.ggml.add_space_prefix", bool, True),
            remove_extra_whitespaces=False,
        )
        tok = SentencePieceTokenizer(model)
        tok.add_bos = True if add_bos is None else add_bos
        if eot is not None:
            tok.stop_ids = tok.stop_ids | {eot}
        return tok
    raise CheckpointError(f"{path}: tokenizer type {kind!r} is not supported (camelid reads 'llama' and 'gpt2')")


def chat_template(reader) -> str | None:
    v = _field(reader, "tokenizer.chat_template")
    return v if isinstance(v, str) else None


def read_metadata(reader) -> dict[str, Any]:
    meta = {}
    for key in reader.fields:
        if key.startswith("general.") and key[8:] not in FILE_KEYS:
            meta[key[8:]] = _field(reader, key)
    return clean_metadata(meta)


def _write_metadata(w, meta: dict[str, Any]) -> None:
    for k, v in clean_metadata(meta).items():
        key = f"general.{k}"
        if isinstance(v, list):
            w.add_array(key, v)
        elif isinstance(v, str):
            w.add_string(key, v)
        elif isinstance(v, int):
            w.add_uint32(key, v) if v >= 0 else w.add_int32(key, v)
        else:
            w.add_float32(key, v)


def _write_rope(w, args: ModelArgs) -> torch.Tensor | None:
    """Write the RoPE scaling keys; returns the rope_freqs tensor llama.cpp needs for Llama 3.1's rule."""
    import gguf

    s = args.rope_scaling
    if s is None:
        return None
    if s.rope_type == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(s.factor)
        return None
    from camelid.model.rope import inverse_frequencies

    w.add_string(ROPE_KEY, json.dumps(s.__dict__))
    plain, scaled = (
        inverse_frequencies(args.head_size, args.rope_theta),
        inverse_frequencies(args.head_size, args.rope_theta, s),
    )
    return (plain.double() / scaled.double()).float()


def write_gguf(path: str | Path, release: Release, qtype: str = "F16") -> Path:
    """Write a GGUF llama.cpp runs. Norms stay F32; matrices take `qtype` (F32, F16, BF16, Q8_0, Q4_0 or Q4_1); a matrix
    whose rows are not a multiple of the quantization block is written F16, as llama.cpp's converter does."""
    import gguf
    from gguf.utility import size_label

    from camelid.atomic import atomic_path
    from camelid.model.args import param_count

    if qtype not in WRITE_TYPES:
        raise CheckpointError(f"GGUF type {qtype} cannot be written; choose one of {', '.join(WRITE_TYPES)}")
    args, state = release.args, release.state
    path = Path(path)
    with atomic_path(path) as tmp:
        w = gguf.GGUFWriter(str(tmp), "llama")
        meta = {**release.metadata}
        meta.setdefault("name", path.stem)
        meta.setdefault("type", "model")
        meta.setdefault("size_label", size_label(param_count(args), 0, 0, 0))
        _write_metadata(w, meta)
        shape = {
            w.add_block_count: args.n_layers,
            w.add_context_length: args.max_seq_len,
            w.add_embedding_length: args.dim,
            w.add_feed_forward_length: args.ffn_hidden,
            w.add_head_count: args.n_heads,
            w.add_head_count_kv: args.kv_heads,
            w.add_key_length: args.head_size,  # llama.cpp needs these when head_dim != dim / n_heads
            w.add_value_length: args.head_size,
            w.add_rope_dimension_count: args.head_size,
            w.add_rope_freq_base: args.rope_theta,
            w.add_layer_norm_rms_eps: args.norm_eps,
            w.add_vocab_size: args.vocab_size,
            w.add_file_type: FILE_TYPE[qtype],
        }
        for add, value in shape.items():
            add(value)
        if qtype not in DENSE_TYPES:
            w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        rope_freqs = _write_rope(w, args)
        _write_tokenizer(w, release.tokenizer, args.vocab_size)
        if release.chat_template:
            w.add_chat_template(release.chat_template)
        if rope_freqs is not None:
            w.add_tensor("rope_freqs.weight", rope_freqs.numpy())
        quant = gguf.GGMLQuantizationType[qtype]
        block = gguf.constants.GGML_QUANT_SIZES[quant][0]
        from tqdm import tqdm

        # a bar where it is seen (a terminal), on big models: the quantizer is numpy, about 50 MB/s per core
        big = sum(t.numel() for t in state.values()) > 50_000_000 and qtype not in DENSE_TYPES
        for key, t in tqdm(state.items(), desc=f"writing {qtype}", unit="tensor", disable=None if big else True):
            arr = t.detach().float().cpu().numpy()
            name = meta_to_gguf_name(key)
            if arr.ndim == 1 or qtype == "F32":
                w.add_tensor(name, arr.astype(np.float32))
            elif qtype == "F16" or arr.shape[-1] % block:
                if qtype != "F16":
                    log.warning("%s: rows of %d are not a multiple of %s's block of %d; written as F16",
                                name, arr.shape[-1], qtype, block)  # fmt: skip
                w.add_tensor(name, arr.astype(np.float16))
            else:
                data = gguf.quants.quantize(arr, quant)
                w.add_tensor(name, data, raw_shape=data.shape, raw_dtype=quant)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
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
        w.add_tokenizer_pre("default")
        w.add_add_space_prefix(m.add_dummy_prefix)
        w.add_add_sep_token(False)
        if m.unk_id >= 0:
            w.add_unk_token_id(m.unk_id)
    elif isinstance(tokenizer, ByteLevelBPETokenizer):
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(tokenizer.pre)
        w.add_token_list(tokenizer.pieces)
        w.add_token_types(tokenizer.types)
        w.add_token_merges([f"{a} {b}" for a, b in tokenizer.merge_list])
    else:
        raise CheckpointError(
            f"a {type(tokenizer).__name__} tokenizer cannot be stored in GGUF (camelid writes SentencePiece "
            "and byte-level BPE vocabularies)"
        )
    if tokenizer.vocab_size != vocab_size:
        log.warning("tokenizer has %d entries, the model %d rows", tokenizer.vocab_size, vocab_size)
    if tokenizer.bos_id is not None:
        w.add_bos_token_id(tokenizer.bos_id)
    if tokenizer.eos_id is not None:
        w.add_eos_token_id(tokenizer.eos_id)
    if tokenizer.pad_id is not None:
        w.add_pad_token_id(tokenizer.pad_id)
    turn_ends = sorted(set(tokenizer.stop_ids) - {tokenizer.eos_id})
    if turn_ends:
        w.add_eot_token_id(turn_ends[0])
    w.add_add_bos_token(bool(getattr(tokenizer, "add_bos", True)))
    w.add_add_eos_token(False)


class GGUFFormat:
    name = "gguf"
    priority = 10
    options = ("quant",)

    def detect(self, path: Path) -> bool:
        if not path.is_file():
            return False
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic == b"GGUF":
            return True
        if path.suffix == ".gguf":
            raise CheckpointError(f"{path} is not a GGUF file (bad magic {magic!r}, expected b'GGUF')")
        return False

    def read_args(self, path: Path) -> ModelArgs:
        return read_args(_reader(path), path)

    def read(self, path: Path, dtype: torch.dtype | None = None, quant: str | None = None) -> Release:
        reader = _reader(path)
        args = read_args(reader, path)
        tok = read_tokenizer(reader, path)
        state, packed = read_state(reader, path, dtype or torch.float32, quant)
        release = Release(args, state, tok, chat_template(reader), {}, read_metadata(reader))
        release.quantized = packed
        return release

    def write(self, release: Release, path: Path, quant: str | None = None) -> Path:
        dtype = next(iter(release.state.values())).dtype
        default = {torch.float32: "F32", torch.bfloat16: "BF16"}.get(dtype, "F16")
        return write_gguf(path, release, quant or default)


FORMAT = GGUFFormat()
