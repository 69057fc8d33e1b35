"""Tokenizers: one small protocol, camelid's SentencePiece BPE, and training the LLaMA way."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from camelid.errors import TokenizerError
from camelid.tokenizer.spm import SentencePieceTokenizer


class Tokenizer(Protocol):
    vocab_size: int
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    stop_ids: set[int]
    add_bos: bool

    def encode(self, text: str, bos: bool | None = None, eos: bool = False, special: bool = ...) -> list[int]:
        """Token ids; `bos` None means the tokenizer's own convention (`add_bos`); with `special`, the text of
        special tokens (`<|im_start|>`, `<s>`) becomes those tokens."""

    def decode(self, ids: Sequence[int]) -> str: ...

    def id_to_piece(self, i: int) -> str: ...


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A tokenizer from a file, or from a directory holding `tokenizer.model`."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.model"
    if not path.exists():
        raise TokenizerError(f"tokenizer file {path} does not exist")
    return SentencePieceTokenizer.from_file(path)


__all__ = ["SentencePieceTokenizer", "Tokenizer", "load_tokenizer"]
