"""Hugging Face `LlamaForCausalLM` layout: a name map plus the q/k row permutation (Meta pairs -> HF halves).

A folder holds config.json, model.safetensors (or shards listed in model.safetensors.index.json), the
tokenizer as `transformers` reads it (tokenizer.json, tokenizer_config.json with the special tokens and the
chat template, tokenizer.model for SentencePiece), generation_config.json (stop ids, sampling defaults) and
a README.md model card whose front matter carries the licence and the other metadata, as the Hub and
llama.cpp's converter read it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from camelid.atomic import atomic_directory
from camelid.errors import CheckpointError, ConfigError
from camelid.formats.release import Release, clean_metadata
from camelid.formats.safetensors_io import load_file, regular_file, save_file
from camelid.lazy import torch
from camelid.model.args import ModelArgs, RopeScaling

log = logging.getLogger(__name__)

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
_HF_TO_META = {v: k for k, v in {**_LAYER_NAMES, **_TOP_NAMES}.items()}
# README front-matter keys for the metadata keys whose model-card name differs (llama.cpp reads these)
_CARD_NAMES = {"license.name": "license_name", "license.link": "license_link", "languages": "language"}
_CARD_BACK = {v: k for k, v in _CARD_NAMES.items()}


def meta_to_hf_name(name: str) -> str:
    if name in _TOP_NAMES:
        return _TOP_NAMES[name]
    prefix, i, rest = name.split(".", 2)
    if prefix != "layers" or rest not in _LAYER_NAMES:
        raise KeyError(name)
    return f"model.layers.{i}.{_LAYER_NAMES[rest]}"


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
        heads = args.n_heads if meta.endswith("attention.wq.weight") else args.kv_heads
        if meta.endswith(("attention.wq.weight", "attention.wk.weight")):
            if w.dim() != 2 or w.shape[0] != heads * args.head_size:
                raise CheckpointError(
                    f"{source}: tensor {name!r} has shape {tuple(w.shape)}, the config implies "
                    f"({heads * args.head_size}, {args.dim})"
                )
            w = permute_to_meta(w, heads)
        out[meta] = w
    return out


def _rope_config(args: ModelArgs) -> dict[str, Any]:
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": args.rope_theta}
    s = args.rope_scaling
    if s is not None and s.rope_type == "llama3":
        rope.update(
            rope_type="llama3",
            factor=s.factor,
            low_freq_factor=s.low_freq_factor,
            high_freq_factor=s.high_freq_factor,
            original_max_position_embeddings=s.original_max_seq_len,
        )
    elif s is not None:
        rope.update(rope_type="linear", factor=s.factor)
    return rope


def to_hf_config(args: ModelArgs, bos_id: int | None = 1, eos_id: int | None = 2, pad_id: int | None = None) -> dict:
    """The `config.json` of an equivalent `LlamaForCausalLM` (transformers 4.x and 5.x keys)."""
    rope = _rope_config(args)
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
        "pad_token_id": pad_id,
        "torch_dtype": "float32",
    }


def _typed(cfg: dict, key: str, kind: type, source: str, default: Any = ...) -> Any:
    if key not in cfg or cfg[key] is None:
        if default is ...:
            raise CheckpointError(f"{source}: missing key {key!r}")
        return default
    v = cfg[key]
    ok = isinstance(v, (int, float)) if kind is float else isinstance(v, kind)
    if isinstance(v, bool) and kind is not bool:
        ok = False
    if not ok:
        raise CheckpointError(f"{source}: {key} must be {'a number' if kind is float else kind.__name__}, got {v!r}")
    return float(v) if kind is float else v


def _rope_from_hf(cfg: dict, source: str) -> tuple[float, RopeScaling | None]:
    for key in ("rope_parameters", "rope_scaling"):
        if cfg.get(key) is not None and not isinstance(cfg[key], dict):
            raise CheckpointError(f"{source}: {key} must be an object, got {cfg[key]!r}")
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    rope = rope.get("full_attention", rope) if isinstance(rope.get("full_attention"), dict) else rope
    theta = _typed(rope, "rope_theta", float, source, None) or _typed(cfg, "rope_theta", float, source, 10000.0)
    kind = rope.get("rope_type", rope.get("type", "default")) or "default"
    if kind == "default":
        return theta, None
    try:
        if kind == "llama3":
            return theta, RopeScaling(
                factor=_typed(rope, "factor", float, source),
                low_freq_factor=_typed(rope, "low_freq_factor", float, source),
                high_freq_factor=_typed(rope, "high_freq_factor", float, source),
                original_max_seq_len=_typed(rope, "original_max_position_embeddings", int, source),
            )
        if kind == "linear":
            return theta, RopeScaling(rope_type="linear", factor=_typed(rope, "factor", float, source))
    except ConfigError as e:
        raise CheckpointError(f"{source}: {e}") from None
    raise CheckpointError(
        f"{source}: rope scaling type {kind!r} is not supported; camelid runs default, linear and llama3 RoPE"
    )


def from_hf_config(cfg: dict[str, Any], source: str = "config.json") -> ModelArgs:
    """ModelArgs from an HF Llama `config.json` (transformers 4.x `rope_scaling` or 5.x `rope_parameters`)."""
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{source} must hold a JSON object")
    dim = _typed(cfg, "hidden_size", int, source)
    n_heads = _typed(cfg, "num_attention_heads", int, source)
    head_dim = _typed(cfg, "head_dim", int, source, None)
    if head_dim is None and n_heads > 0:
        head_dim = dim // n_heads
    theta, scaling = _rope_from_hf(cfg, source)
    try:
        return ModelArgs(
            dim=dim,
            n_layers=_typed(cfg, "num_hidden_layers", int, source),
            n_heads=n_heads,
            n_kv_heads=_typed(cfg, "num_key_value_heads", int, source, None) or n_heads,
            vocab_size=_typed(cfg, "vocab_size", int, source),
            hidden_dim=_typed(cfg, "intermediate_size", int, source),
            head_dim=None if head_dim is None or head_dim * n_heads == dim else head_dim,
            norm_eps=_typed(cfg, "rms_norm_eps", float, source, 1e-6),
            rope_theta=theta,
            rope_scaling=scaling,
            max_seq_len=_typed(cfg, "max_position_embeddings", int, source, 2048),
            tie_embeddings=_typed(cfg, "tie_word_embeddings", bool, source, False),
        )
    except ConfigError as e:
        raise CheckpointError(f"{source}: {e}") from None


def _read_json(path: Path) -> Any:
    regular_file(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from None


def inside(folder: Path, name: Any, source: Path) -> Path:
    """`folder / name` for a file name taken from an index file: a plain relative name whose real path (symlinks
    followed) stays inside `folder` and is a regular file; anything else is refused."""
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise CheckpointError(f"{source}: shard file {name!r} is not a plain name inside the model folder")
    target = (folder / name).resolve()
    if not target.is_relative_to(folder.resolve()):
        raise CheckpointError(f"{source}: shard file {name!r} points outside the model folder")
    regular_file(target, "shard file")
    return target


def weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        data = _read_json(index)
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index}: missing or empty 'weight_map'")
        return [inside(path, f, index) for f in sorted(set(weight_map.values()), key=str)]
    if (path / "model.safetensors").exists():
        return [inside(path, "model.safetensors", path)]
    raise CheckpointError(f"{path} holds neither model.safetensors nor model.safetensors.index.json")


def read_card(path: Path) -> dict[str, Any]:
    """The metadata in a README.md model card's YAML front matter."""
    card = path / "README.md"
    if not card.is_file():
        return {}
    text = card.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    if end < 0:
        return {}
    import yaml

    try:
        data = yaml.safe_load(text[3:end])
    except yaml.YAMLError:
        log.warning("%s: the model card's front matter is not valid YAML; its metadata is ignored", card)
        return {}
    if not isinstance(data, dict):
        return {}
    meta = {_CARD_BACK.get(k, k): v for k, v in data.items() if isinstance(k, str)}
    if isinstance(meta.get("languages"), str):
        meta["languages"] = [meta["languages"]]
    return clean_metadata(meta)


def card_text(meta: dict[str, Any], args: ModelArgs) -> str:
    import yaml

    front = {_CARD_NAMES.get(k, k): v for k, v in clean_metadata(meta).items()}
    title = meta.get("name") or "camelid export"
    body = f"# {title}\n\nA LLaMA-architecture model ({args.n_layers} layers, dim {args.dim}) written by camelid.\n"
    if not front:
        return body
    return "---\n" + yaml.safe_dump(front, allow_unicode=True, sort_keys=True) + "---\n\n" + body


class HFFormat:
    name = "hf"
    priority = 40
    options = ("max_shard_bytes",)

    def detect(self, path: Path) -> bool:
        cfg = path / "config.json"
        if not path.is_dir() or not cfg.is_file():
            return False
        data = _read_json(cfg)
        if isinstance(data, dict) and ("model_type" in data or "architectures" in data):
            return True
        raise CheckpointError(f"{cfg} is neither a camelid nor a Hugging Face config")

    def _config(self, path: Path) -> dict:
        cfg_path = path / "config.json"
        cfg = _read_json(cfg_path)
        if not isinstance(cfg, dict):
            raise CheckpointError(f"{cfg_path} must hold a JSON object")
        archs = cfg.get("architectures") or []
        if cfg.get("model_type") not in ("llama", "mistral", None) and "LlamaForCausalLM" not in archs:
            raise CheckpointError(f"{cfg_path}: model_type {cfg.get('model_type')!r} is not a Llama architecture")
        return cfg

    def read_args(self, path: Path) -> ModelArgs:
        return from_hf_config(self._config(path), str(path / "config.json"))

    def read(self, path: Path, dtype: torch.dtype | None = None, quant: str | None = None) -> Release:
        from camelid.tokenizer.files import read_dir

        cfg = self._config(path)
        args = from_hf_config(cfg, str(path / "config.json"))
        state: dict[str, torch.Tensor] = {}
        for f in weight_files(path):
            state.update(load_file(f))
        tok = read_dir(path)
        if tok is None:
            raise CheckpointError(f"{path} holds no tokenizer (tokenizer.json or tokenizer.model)")
        generation = {}
        gen_path = path / "generation_config.json"
        if gen_path.is_file():
            gen = _read_json(gen_path)
            if isinstance(gen, dict):
                generation = _generation_from_hf(gen, tok)
        template = None
        tcfg = path / "tokenizer_config.json"
        if tcfg.is_file():
            t = _read_json(tcfg)
            template = t.get("chat_template") if isinstance(t, dict) else None
            if isinstance(template, list):  # several named templates: the default one
                named = {x.get("name"): x.get("template") for x in template if isinstance(x, dict)}
                template = named.get("default")
        if template is None and (path / "chat_template.jinja").is_file():
            template = (path / "chat_template.jinja").read_text(encoding="utf-8")
        return Release(
            args,
            from_hf_state_dict(state, args, str(path)),
            tok,
            template if isinstance(template, str) else None,
            generation,
            read_card(path),
        )

    def write(self, release: Release, path: Path, max_shard_bytes: int = 5 * 2**30) -> Path:
        from camelid.tokenizer.files import hf_files

        args, tok = release.args, release.tokenizer
        hf_state = to_hf_state_dict(release.state, args)
        shards: list[dict[str, torch.Tensor]] = [{}]
        size = 0
        for name, t in hf_state.items():
            nbytes = t.numel() * t.element_size()
            if shards[-1] and size + nbytes > max_shard_bytes:
                shards.append({})
                size = 0
            shards[-1][name] = t
            size += nbytes
        tok_files = hf_files(tok, release.chat_template, args.max_seq_len)
        with atomic_directory(path) as tmp:
            cfg = to_hf_config(args, tok.bos_id, tok.eos_id, tok.pad_id)
            cfg["torch_dtype"] = str(next(iter(hf_state.values())).dtype).removeprefix("torch.")
            (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
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
                (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
            for name, data in tok_files.items():
                (tmp / name).write_bytes(data)
            gen = _generation_to_hf(release)
            (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
            (tmp / "README.md").write_text(card_text(release.metadata, args), encoding="utf-8")
        return path


_SAMPLING_KEYS = {"temperature": float, "top_p": float, "top_k": int, "max_new_tokens": int}


def _generation_from_hf(gen: dict, tok) -> dict[str, Any]:
    eos = gen.get("eos_token_id")
    ids = eos if isinstance(eos, list) else [eos] if isinstance(eos, int) else []
    valid = [i for i in ids if isinstance(i, int) and not isinstance(i, bool) and 0 <= i < tok.vocab_size]
    if valid:
        tok.stop_ids = set(tok.stop_ids) | set(valid)
    out = {}
    if gen.get("do_sample") is not False:
        for k, kind in _SAMPLING_KEYS.items():
            v = gen.get(k)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and (kind is float or isinstance(v, int)):
                out[k] = v
    elif isinstance(gen.get("max_new_tokens"), int):
        out["max_new_tokens"] = gen["max_new_tokens"]
    return out


def _generation_to_hf(release: Release) -> dict[str, Any]:
    tok = release.tokenizer
    stops = sorted(tok.stop_ids)
    gen: dict[str, Any] = {
        "bos_token_id": tok.bos_id,
        "eos_token_id": stops[0] if len(stops) == 1 else stops or tok.eos_id,
        "pad_token_id": tok.pad_id,
    }
    sampling = {k: v for k, v in release.generation.items() if k in _SAMPLING_KEYS}
    if sampling.get("temperature"):
        gen["do_sample"] = True
    gen.update(sampling)
    return gen


FORMAT = HFFormat()
