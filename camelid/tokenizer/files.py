"""A tokenizer as files in a model folder, and back: the one place that decides which file holds which kind.

- SentencePiece: `tokenizer.model` (the protobuf, as LLaMA ships it) and, for Hugging Face, `tokenizer.json`;
- byte-level BPE (GGUF `gpt2`, SmolLM2, Llama 3 in HF layout): `tokenizer.json`;
- Llama 3's tiktoken `tokenizer.model`: the file itself;
- any other `tokenizer.json`: the file itself, run by the `tokenizers` library.
Special ids and the BOS convention live in `tokenizer_config.json` (or the format's own config) and are
applied on top with `apply_special`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from camelid.errors import TokenizerError


def apply_special(tok, special: dict[str, Any] | None) -> None:
    """Set bos/eos/pad ids, the stop ids and add_bos from a saved `special` table (camelid's config.json)."""
    if not special:
        return
    for key in ("bos_id", "eos_id", "pad_id"):
        if key in special:
            v = special[key]
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < tok.vocab_size):
                raise TokenizerError(f"special token id {key}={v!r} is outside the vocabulary ({tok.vocab_size})")
            setattr(tok, key, v)
    if "add_bos" in special:
        tok.add_bos = bool(special["add_bos"])
    if "stop_ids" in special:
        ids = special["stop_ids"]
        if not isinstance(ids, list) or not all(isinstance(i, int) and 0 <= i < tok.vocab_size for i in ids):
            raise TokenizerError(f"stop_ids {ids!r} must be token ids inside the vocabulary")
        tok.stop_ids = set(ids)


def special_table(tok) -> dict[str, Any]:
    return {
        "bos_id": tok.bos_id,
        "eos_id": tok.eos_id,
        "pad_id": tok.pad_id,
        "stop_ids": sorted(tok.stop_ids),
        "add_bos": bool(getattr(tok, "add_bos", False)),
    }


def native_files(tok) -> dict[str, bytes]:
    """The most faithful files for `tok` (camelid's own format and Meta's)."""
    from camelid.tokenizer.bpe import ByteLevelBPETokenizer
    from camelid.tokenizer.spm import SentencePieceTokenizer
    from camelid.tokenizer.spm_proto import serialize_model
    from camelid.tokenizer.wrappers import HFTokenizer, Llama3Tokenizer

    if isinstance(tok, SentencePieceTokenizer):
        if tok.path is not None and tok.path.is_file():
            return {"tokenizer.model": tok.path.read_bytes()}
        return {"tokenizer.model": serialize_model(tok.model)}
    if isinstance(tok, ByteLevelBPETokenizer):
        from camelid.tokenizer.hf_json import to_tokenizers

        return {"tokenizer.json": to_tokenizers(tok).to_str().encode("utf-8")}
    if isinstance(tok, Llama3Tokenizer):
        return {"tokenizer.model": tok.path.read_bytes()}
    if isinstance(tok, HFTokenizer):
        return {"tokenizer.json": tok.tok.to_str().encode("utf-8")}
    raise TokenizerError(f"a {type(tok).__name__} cannot be saved")


def hf_files(tok, chat_template: str | None, context: int) -> dict[str, bytes]:
    """The files `transformers` reads: tokenizer.json (+ tokenizer.model for SentencePiece), tokenizer_config.json
    and special_tokens_map.json."""
    from camelid.tokenizer.hf_json import to_tokenizers, tokenizer_config
    from camelid.tokenizer.spm import SentencePieceTokenizer
    from camelid.tokenizer.wrappers import HFTokenizer, Llama3Tokenizer

    files = {}
    if isinstance(tok, HFTokenizer):
        files["tokenizer.json"] = tok.tok.to_str().encode("utf-8")
    elif isinstance(tok, Llama3Tokenizer):
        raise TokenizerError(
            "Llama 3's tiktoken tokenizer.model has no tokenizer.json form in camelid yet; convert to meta instead"
        )
    else:
        files["tokenizer.json"] = to_tokenizers(tok).to_str().encode("utf-8")
    if isinstance(tok, SentencePieceTokenizer):
        files.update(native_files(tok))
    cfg = tokenizer_config(tok, chat_template, context)
    files["tokenizer_config.json"] = (json.dumps(cfg, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    special_map = {k: cfg[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token") if cfg.get(k) is not None}
    files["special_tokens_map.json"] = (json.dumps(special_map, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    return files


def read_dir(path: Path, prefer: str = "tokenizer.model"):
    """camelid's tokenizer for the files in `path` (a model folder), with tokenizer_config.json applied.

    `prefer` picks between tokenizer.model and tokenizer.json when a folder has both."""
    from camelid.tokenizer.hf_json import from_tokenizer_json
    from camelid.tokenizer.spm import SentencePieceTokenizer
    from camelid.tokenizer.wrappers import HFTokenizer, Llama3Tokenizer, is_tiktoken_file

    cfg_path = path / "tokenizer_config.json"
    config: dict[str, Any] = {}
    if cfg_path.is_file():
        try:
            config = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise TokenizerError(f"{cfg_path} is not valid JSON ({e})") from None
        if not isinstance(config, dict):
            raise TokenizerError(f"{cfg_path} must hold a JSON object")
    spm, tj = path / "tokenizer.model", path / "tokenizer.json"
    order = [spm, tj] if prefer == "tokenizer.model" else [tj, spm]
    for f in order:
        if not f.is_file():
            continue
        if f == spm:
            if is_tiktoken_file(spm):
                return Llama3Tokenizer(spm)
            tok = SentencePieceTokenizer.from_file(spm)
            if "add_bos_token" in config:
                tok.add_bos = bool(config["add_bos_token"])
            return tok
        tok = from_tokenizer_json(tj, config)
        return tok if tok is not None else HFTokenizer(tj)
    return None
