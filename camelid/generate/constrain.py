"""Structured output: a grammar (a JSON Schema, or any JSON object) decides which tokens a row may sample next.

llguidance (the Rust engine behind llama.cpp's and vLLM's structured output, a PyPI wheel with no dependencies)
compiles the grammar against the tokenizer's vocabulary. Before each step of a constrained row, the row's
`Constraint` says which tokens keep the output a prefix of some sentence of the grammar (a stop token once the
sentence may end); the others' logits become -inf before sampling, and the sampled token advances the matcher.
"""

from __future__ import annotations

import json
import weakref
from typing import Any

import torch

from camelid.errors import InputError

SPECIAL = b"\xff"  # llguidance's mark on a token that is not text (<s>, <|im_end|>): grammars never spell it
# JSON as the model writes it when nothing else is said: ", " and ": " between items, no other whitespace (a
# grammar that allows any run of whitespace lets a small model pad its answer with newlines until max_tokens)
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}

_TOKENIZERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # camelid tokenizer -> {stop ids: LLTokenizer}


class GrammarError(InputError):
    """A grammar (a response_format's JSON Schema) that cannot be compiled."""


def token_bytes(tokenizer) -> list[bytes]:
    """The bytes each token id stands for in decoded text; tokens that are not text get SPECIAL + their name."""
    from camelid.tokenizer.bpe import ByteLevelBPETokenizer
    from camelid.tokenizer.spm import SPACE, SentencePieceTokenizer
    from camelid.tokenizer.spm_proto import BYTE, CONTROL, UNKNOWN, UNUSED, USER_DEFINED
    from camelid.tokenizer.wrappers import Llama3Tokenizer

    if isinstance(tokenizer, SentencePieceTokenizer):
        out = []
        for piece, kind in zip(tokenizer.pieces, tokenizer.model.types):
            if kind == BYTE:
                out.append(bytes([int(piece[3:5], 16)]))
            elif kind in (CONTROL, UNKNOWN, UNUSED):
                out.append(SPECIAL + piece.encode())
            else:
                out.append(piece.replace(SPACE, " ").encode())
        return out
    if isinstance(tokenizer, ByteLevelBPETokenizer):
        unmap = tokenizer.byte_unmap
        out = []
        for piece, kind in zip(tokenizer.pieces, tokenizer.types):
            if kind == CONTROL or kind == USER_DEFINED and piece.startswith("<") and piece.endswith(">"):
                out.append(SPECIAL + piece.encode())
            elif all(c in unmap for c in piece):
                out.append(bytes(unmap[c] for c in piece))
            else:  # an added token kept as plain text
                out.append(piece.encode())
        return out
    if isinstance(tokenizer, Llama3Tokenizer):
        n = tokenizer.bos_id  # the special tokens follow the mergeable ones
        names = {i: t for t, i in tokenizer.special.items()}
        return [tokenizer.enc.decode_single_token_bytes(i) if i < n else SPECIAL + names[i].encode()
                for i in range(tokenizer.vocab_size)]  # fmt: skip
    raise GrammarError(f"structured output does not support a {type(tokenizer).__name__} yet")


class _Vocabulary:
    """What llguidance's TokenizerWrapper reads: every token's bytes, the special ids, and an encoder."""

    def __init__(self, tokenizer, stop_ids: list[int]) -> None:
        self.tokens = token_bytes(tokenizer)
        self.special_token_ids = [i for i, t in enumerate(self.tokens) if t.startswith(SPECIAL)]
        self.eos_token_id = stop_ids[0]
        self.bos_token_id = tokenizer.bos_id
        self._tokenizer = tokenizer

    def __call__(self, text: bytes | str) -> list[int]:
        """Ids whose bytes are exactly `text`. llguidance tokenizes the bytes a grammar forces with this and
        allows those tokens next, so a SentencePiece tokenizer's dummy prefix (" " before the first piece) must
        not show: the first piece is then re-spelled from the vocabulary without it."""
        data = text if isinstance(text, bytes) else text.encode()
        ids = self._tokenizer.encode(data.decode("utf-8", errors="replace"), bos=False)
        if ids and b"".join(self.tokens[i] for i in ids) == b" " + data:
            ids = self._spell(self.tokens[ids[0]][1:]) + ids[1:]
        return ids

    def _spell(self, data: bytes) -> list[int]:
        """Greedy longest-match ids for `data` from the vocabulary's text tokens."""
        if not hasattr(self, "_by_bytes"):
            self._by_bytes = {}
            for i, t in enumerate(self.tokens):
                if t and not t.startswith(SPECIAL):
                    self._by_bytes.setdefault(t, i)
            self._longest = max(map(len, self._by_bytes))
        out, pos = [], 0
        while pos < len(data):
            for end in range(min(len(data), pos + self._longest), pos, -1):
                if data[pos:end] in self._by_bytes:
                    out.append(self._by_bytes[data[pos:end]])
                    pos = end
                    break
            else:
                raise GrammarError(f"the vocabulary cannot spell the byte {data[pos]:#04x}")
        return out


def lltokenizer(tokenizer, stop_ids) -> Any:
    """llguidance's view of `tokenizer` with `stop_ids` as its end tokens (built once per tokenizer, ~1 s)."""
    import llguidance

    stop = sorted(stop_ids)
    if not stop:
        raise GrammarError("structured output needs a tokenizer with an end-of-sequence token")
    cache = _TOKENIZERS.setdefault(tokenizer, {})
    if tuple(stop) not in cache:
        vocab = _Vocabulary(tokenizer, stop)
        cache[tuple(stop)] = llguidance.LLTokenizer(llguidance.TokenizerWrapper(vocab), eos_token=stop)
    return cache[tuple(stop)]


def json_grammar(schema: dict | None = None) -> str:
    """The grammar of JSON text matching `schema`; None: any JSON object (OpenAI's json_object mode)."""
    import llguidance

    if schema is None:
        schema = {"type": "object"}
    if not isinstance(schema, dict):
        raise GrammarError(f"a JSON Schema must be a JSON object, got {json.dumps(schema)[:80]}")
    try:
        return llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=JSON_OPTIONS)
    except ValueError as e:
        raise GrammarError(f"not a usable JSON Schema: {e}") from None


class Constraint:
    """One row's grammar state: `allowed()` before a step, `advance(token)` after it."""

    def __init__(self, tokenizer, grammar: str, stop_ids, vocab_size: int) -> None:
        import llguidance

        self._tok = lltokenizer(tokenizer, stop_ids)
        self.matcher = llguidance.LLMatcher(self._tok, grammar, log_level=0)  # a bad grammar: an error state
        if self.matcher.is_error():
            raise GrammarError(f"the grammar does not compile: {self.matcher.get_error().splitlines()[0][:300]}")
        self.vocab_size = vocab_size

    def allowed(self) -> torch.Tensor:
        """(vocab_size,) bool: the tokens that may come next (rows of the model past the tokenizer's: never)."""
        bias = torch.frombuffer(bytearray(self.matcher.compute_logit_bias()), dtype=torch.uint8)
        out = torch.zeros(self.vocab_size, dtype=torch.bool)
        n = min(self.vocab_size, bias.numel())
        out[:n] = bias[:n] > 0
        return out

    def advance(self, token: int) -> None:
        if not self.matcher.consume_token(int(token)):
            raise RuntimeError(f"token {token} was sampled outside the grammar: {self.matcher.get_error()}")

    @property
    def complete(self) -> bool:
        """The output is a whole sentence of the grammar and nothing may follow it."""
        return self.matcher.is_stopped()
