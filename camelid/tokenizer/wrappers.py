"""Tokenizers of released models that camelid reads through their reference libraries:
Hugging Face `tokenizer.json` (via `tokenizers`) and Llama 3's tiktoken-style BPE file (via `tiktoken`)."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from pathlib import Path

from camelid.errors import TokenizerError
from camelid.tokenizer.bpe import LLAMA3_PATTERN

# Llama 3's special tokens (Meta's llama3/tokenizer.py); its pattern is the byte-level BPE module's
LLAMA3_SPECIAL = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|step_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
]


class HFTokenizer:
    """A `tokenizer.json` with its `tokenizer_config.json` (special tokens, BOS convention, chat template)."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        try:
            self.tok = Tokenizer.from_file(str(path))
        except Exception as e:
            raise TokenizerError(f"{path} is not a valid tokenizer.json ({e})") from None
        cfg_path = path.with_name("tokenizer_config.json")
        cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
        self.vocab_size = self.tok.get_vocab_size(with_added_tokens=True)

        def tid(key: str) -> int | None:
            v = cfg.get(key)
            if isinstance(v, dict):
                v = v.get("content")
            return self.tok.token_to_id(v) if isinstance(v, str) else None

        self.bos_id, self.eos_id, self.pad_id = tid("bos_token"), tid("eos_token"), tid("pad_token")
        self.chat_template = cfg.get("chat_template")
        ends = [self.tok.token_to_id(t) for t in ("<|im_end|>", "<|eot_id|>")]
        self.stop_ids = {i for i in (self.eos_id, *ends) if i is not None}
        self.add_bos = bool(cfg.get("add_bos_token", False))

    def encode(self, text: str, bos: bool | None = None, eos: bool = False, special: bool = True) -> list[int]:
        """Token ids; added tokens in the text are matched (the library always does; `special` is accepted for
        the common protocol)."""
        ids = self.tok.encode(text, add_special_tokens=False).ids
        if (self.add_bos if bos is None else bos) and self.bos_id is not None:
            ids.insert(0, self.bos_id)
        if eos and self.eos_id is not None:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def id_to_piece(self, i: int) -> str:
        return self.tok.id_to_token(i)


def is_tiktoken_file(path: Path) -> bool:
    try:
        first = path.open("rb").readline().split()
        return len(first) == 2 and first[1].isdigit() and bool(base64.b64decode(first[0], validate=True))
    except (OSError, ValueError):
        return False


class Llama3Tokenizer:
    """Llama 3's `tokenizer.model`: base64 tokens with merge ranks, 256 special tokens from id 128000."""

    def __init__(self, path: Path) -> None:
        import tiktoken
        from tiktoken.load import load_tiktoken_bpe

        self.path = Path(path)
        try:
            ranks = load_tiktoken_bpe(str(path))
        except Exception as e:
            raise TokenizerError(f"{path} is not a tiktoken BPE file ({e})") from None
        n = len(ranks)
        names = LLAMA3_SPECIAL + [f"<|reserved_special_token_{i}|>" for i in range(2, 256 - len(LLAMA3_SPECIAL) + 2)]
        self.special = {t: n + i for i, t in enumerate(names)}
        self.enc = tiktoken.Encoding(
            name=path.name, pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks, special_tokens=self.special
        )
        self.vocab_size = n + len(self.special)
        self.bos_id = self.special["<|begin_of_text|>"]
        self.eos_id = self.special["<|end_of_text|>"]
        self.pad_id = None
        self.add_bos = True
        self.stop_ids = {self.eos_id, self.special["<|eot_id|>"], self.special["<|eom_id|>"]}

    def encode(self, text: str, bos: bool | None = None, eos: bool = False, special: bool = True) -> list[int]:
        ids = self.enc.encode(text, allowed_special="all") if special else self.enc.encode(text, disallowed_special=())
        if self.add_bos if bos is None else bos:
            ids.insert(0, self.bos_id)
        if eos:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.enc.decode([int(i) for i in ids if int(i) < self.bos_id])

    def id_to_piece(self, i: int) -> str:
        return self.enc.decode_single_token_bytes(i).decode("utf-8", errors="replace")
