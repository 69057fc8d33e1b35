"""Hugging Face `LlamaForCausalLM` layout: a name map plus the q/k row permutation (Meta pairs -> HF halves)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from camelid.errors import CheckpointError
from camelid.model.args import ModelArgs, RopeScaling

_LAYER_NAMES = {
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "attention_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}
_TOP_NAMES = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


def meta_to_hf_name(name: str) -> str:
    if name in _TOP_NAMES:
        return _TOP_NAMES[name]
    prefix, i, rest = name.split(".", 2)
    if prefix != "layers" or rest not in _LAYER_NAMES:
        raise KeyError(name)
    return f"model.layers.{i}.{_LAYER_NAMES[rest]}"


_HF_TO_META = {v: k for k, v in {**_LAYER_NAMES, **_TOP_NAMES}.items()}


def hf_to_meta_name(name: str) -> str:
    if name in _HF_TO_META:
        return _HF_TO_META[name]
    if name.startswith("model.layers."):
        _, _, i, rest = name.split(".", 3)
        if rest in _HF_TO_META:
            return f"layers.{i}.{_HF_TO_META[rest]}"
    raise KeyError(name)


def permute_to_hf(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Rows of wq/wk from Meta's interleaved (x[2i], x[2i+1]) RoPE order to HF's (x[i], x[i+hd/2])."""
    rows, cols = w.shape
    return w.view(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def permute_to_meta(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Inverse of `permute_to_hf`."""
    rows, cols = w.shape
    return w.view(n_heads, 2, rows // n_heads // 2, cols).transpose(1, 2).reshape(rows, cols)


def to_hf_state_dict(state: dict[str, torch.Tensor], args: ModelArgs) -> dict[str, torch.Tensor]:
    out = {}
    for name, w in state.items():
        if name == "output.weight" and args.tie_embeddings:
            continue
        if name.endswith("attention.wq.weight"):
            w = permute_to_hf(w, args.n_heads)
        elif name.endswith("attention.wk.weight"):
            w = permute_to_hf(w, args.kv_heads)
        out[meta_to_hf_name(name)] = w
    return out


def from_hf_state_dict(state: dict[str, torch.Tensor], args: ModelArgs, source: str = "") -> dict[str, torch.Tensor]:
    out = {}
    for name, w in state.items():
        if name.endswith("rotary_emb.inv_freq"):  # older HF checkpoints saved this buffer
            continue
        try:
            meta = hf_to_meta_name(name)
        except KeyError:
            raise CheckpointError(f"{source or 'checkpoint'}: unexpected tensor {name!r} for a Llama model") from None
        if meta.endswith("attention.wq.weight"):
            w = permute_to_meta(w, args.n_heads)
        elif meta.endswith("attention.wk.weight"):
            w = permute_to_meta(w, args.kv_heads)
        out[meta] = w
    return out


def to_hf_config(args: ModelArgs, bos_id: int = 1, eos_id: int = 2) -> dict[str, Any]:
    """The `config.json` of an equivalent `LlamaForCausalLM`."""
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": args.rope_theta}
    if args.rope_scaling is not None:
        s = args.rope_scaling
        rope = {
            "rope_type": "llama3",
            "rope_theta": args.rope_theta,
            "factor": s.factor,
            "low_freq_factor": s.low_freq_factor,
            "high_freq_factor": s.high_freq_factor,
            "original_max_position_embeddings": s.original_max_seq_len,
        }
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": args.dim,
        "intermediate_size": args.ffn_hidden,
        "num_hidden_layers": args.n_layers,
        "num_attention_heads": args.n_heads,
        "num_key_value_heads": args.kv_heads,
        "head_dim": args.head_size,
        "vocab_size": args.vocab_size,
        "rms_norm_eps": args.norm_eps,
        "max_position_embeddings": args.max_seq_len,
        "tie_word_embeddings": args.tie_embeddings,
        "rope_parameters": rope,
        "rope_theta": args.rope_theta,
        "rope_scaling": None if args.rope_scaling is None else rope,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "torch_dtype": "float32",
    }


def from_hf_config(cfg: dict[str, Any], source: str = "config.json") -> ModelArgs:
    """ModelArgs from an HF Llama `config.json` (transformers 4.x `rope_scaling` or 5.x `rope_parameters`)."""
    try:
        rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
        theta = rope.get("rope_theta", cfg.get("rope_theta", 10000.0))
        scaling = None
        if rope.get("rope_type", rope.get("type")) == "llama3":
            scaling = RopeScaling(
                factor=float(rope["factor"]),
                low_freq_factor=float(rope["low_freq_factor"]),
                high_freq_factor=float(rope["high_freq_factor"]),
                original_max_seq_len=int(rope["original_max_position_embeddings"]),
            )
        dim, n_heads = cfg["hidden_size"], cfg["num_attention_heads"]
        head_dim = cfg.get("head_dim") or dim // n_heads
        return ModelArgs(
            dim=dim,
            n_layers=cfg["num_hidden_layers"],
            n_heads=n_heads,
            n_kv_heads=cfg.get("num_key_value_heads") or n_heads,
            vocab_size=cfg["vocab_size"],
            hidden_dim=cfg["intermediate_size"],
            head_dim=None if head_dim * n_heads == dim else head_dim,
            norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            rope_theta=float(theta),
            rope_scaling=scaling,
            max_seq_len=cfg.get("max_position_embeddings", 2048),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        )
    except KeyError as e:
        raise CheckpointError(f"{source}: missing key {e.args[0]!r}") from None


def load_hf(path: Path) -> tuple[ModelArgs, dict[str, torch.Tensor]]:
    """A Hugging Face Llama directory: config.json plus model.safetensors, or shards listed in its index."""
    import json

    from camelid.formats.safetensors_io import load_file

    cfg_path = path / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_path} is not valid JSON ({e})") from None
    if cfg.get("model_type") not in ("llama", "mistral", None) and "LlamaForCausalLM" not in cfg.get(
        "architectures", []
    ):
        raise CheckpointError(f"{cfg_path}: model_type {cfg.get('model_type')!r} is not a Llama architecture")
    args = from_hf_config(cfg, str(cfg_path))
    index = path / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (path / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise CheckpointError(f"{path} holds neither model.safetensors nor model.safetensors.index.json")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(path / f))
    return args, from_hf_state_dict(state, args, str(path))


def save_hf(
    path: Path,
    state: dict[str, torch.Tensor],
    args: ModelArgs,
    tokenizer_file: Path | None,
    max_shard_bytes: int = 5 * 2**30,
) -> Path:
    """Write config.json and safetensors (sharded with an index past `max_shard_bytes`), atomically."""
    import json
    import shutil

    from camelid.formats.atomic import atomic_directory
    from camelid.formats.safetensors_io import save_file

    hf_state = to_hf_state_dict(state, args)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in hf_state.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    with atomic_directory(path) as tmp:
        cfg = to_hf_config(args)
        cfg["torch_dtype"] = str(next(iter(hf_state.values())).dtype).removeprefix("torch.")
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
        if len(shards) == 1:
            save_file(shards[0], tmp / "model.safetensors", metadata={"format": "pt"})
        else:
            weight_map = {}
            for i, shard in enumerate(shards):
                name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
                save_file(shard, tmp / name, metadata={"format": "pt"})
                weight_map.update({k: name for k in shard})
            total = sum(t.numel() * t.element_size() for t in hf_state.values())
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        if tokenizer_file is not None:
            shutil.copyfile(tokenizer_file, tmp / tokenizer_file.name)
    return path
