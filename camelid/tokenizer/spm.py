"""camelid's own SentencePiece BPE encoder and decoder (the algorithm of sentencepiece's bpe_model.cc).

It reads any `tokenizer.model` (LLaMA 1/2 ship one) or a vocabulary with scores (a GGUF `llama`
tokenizer), and gives the ids the sentencepiece library gives: tests pin this on English, code,
digits and Japanese text.
"""

from __future__ import annotations

import heapq
import re
import struct
from collections.abc import Sequence
from pathlib import Path

from camelid.errors import TokenizerError
from camelid.tokenizer.spm_proto import (
    BPE,
    BYTE,
    CONTROL,
    UNKNOWN,
    UNUSED,
    USER_DEFINED,
    SentencePieceModel,
    load_model,
)

SPACE = "\u2581"  # LOWER ONE EIGHTH BLOCK, SentencePiece's visible whitespace
_CACHE_LIMIT = 200_000


class _CharsMap:
    """sentencepiece's precompiled normalization rules: a darts-clone double-array trie plus replacement text."""

    def __init__(self, blob: bytes) -> None:
        (trie_size,) = struct.unpack_from("<I", blob, 0)
        if trie_size + 4 > len(blob) or trie_size % 4:
            raise TokenizerError("normalization rules in the tokenizer model are corrupt")
        self.units = struct.unpack_from(f"<{trie_size // 4}I", blob, 4)
        self.normalized = blob[4 + trie_size :]

    def longest_match(self, data: bytes, start: int) -> tuple[int, bytes] | None:
        units, pos, best = self.units, 0, None
        unit = units[0]
        pos ^= (unit >> 10) << ((unit & 0x200) >> 6)
        for i in range(start, len(data)):
            c = data[i]
            pos ^= c
            if pos >= len(units):
                break
            unit = units[pos]
            if (unit & 0x800000FF) != c:
                break
            pos ^= (unit >> 10) << ((unit & 0x200) >> 6)
            if (unit >> 8) & 1:
                value = units[pos] & 0x7FFFFFFF
                best = (i + 1 - start, value)
        if best is None:
            return None
        length, value = best
        end = self.normalized.index(b"\0", value)
        return length, self.normalized[value:end]

    def apply(self, text: str) -> list[str]:
        """Per input unit, its normalized form; each unit is one rule match or one character."""
        data = text.encode("utf-8")
        out: list[str] = []
        i = 0
        while i < len(data):
            match = self.longest_match(data, i)
            if match is not None:
                length, repl = match
                out.append(repl.decode("utf-8"))
                i += length
                continue
            ch_len = _utf8_len(data[i])
            out.append(data[i : i + ch_len].decode("utf-8", errors="replace"))
            i += ch_len
        return out


def _utf8_len(lead: int) -> int:
    return 1 if lead < 0x80 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4


class SentencePieceTokenizer:
    """Encode/decode with a SentencePiece BPE model. Unigram models are delegated to the sentencepiece library."""

    def __init__(self, model: SentencePieceModel, path: Path | None = None) -> None:
        self.model = model
        self.path = path
        self.pieces = model.pieces
        self.vocab_size = len(model.pieces)
        self.bos_id = model.bos_id if model.bos_id >= 0 else None
        self.eos_id = model.eos_id if model.eos_id >= 0 else None
        self.pad_id = model.pad_id if model.pad_id >= 0 else None
        self.unk_id = model.unk_id
        self.stop_ids = {self.eos_id} if self.eos_id is not None else set()
        self.add_bos = True  # LLaMA's convention: every sequence starts with <s>
        # Pieces that BPE may merge into (sentencepiece's `pieces_`); control, unknown and byte pieces are not.
        self._merge_vocab = {
            p: i for i, (p, t) in enumerate(zip(model.pieces, model.types)) if t not in (CONTROL, UNKNOWN, BYTE)
        }
        self._all = {p: i for i, p in reversed(list(enumerate(model.pieces)))}
        self._scores = model.scores
        self._unused = {i for i, t in enumerate(model.types) if t == UNUSED}
        self._user_defined = sorted((p for p, t in zip(model.pieces, model.types) if t == USER_DEFINED), key=len)[::-1]
        self._byte_ids = [self._all.get(f"<0x{b:02X}>", -1) for b in range(256)]
        self._charsmap = _CharsMap(model.precompiled_charsmap) if model.precompiled_charsmap else None
        self._cache: dict[str, tuple[int, ...]] = {}
        self._library = None
        if model.model_type != BPE:
            self._library = _library_processor(path)
        # Pieces that never hold SPACE after a non-SPACE character let us run BPE word by word (same result).
        pattern = re.compile(f"{SPACE}*[^{SPACE}]*")
        self._chunked = not model.treat_whitespace_as_suffix and all(pattern.fullmatch(p) for p in self._merge_vocab)
        self._chunk_re = re.compile(f"{SPACE}*[^{SPACE}]+|{SPACE}+")
        control = sorted((p for p, t in zip(model.pieces, model.types) if t == CONTROL and p), key=len, reverse=True)
        self._control = re.compile("|".join(re.escape(p) for p in control)) if control else None

    @classmethod
    def from_file(cls, path: str | Path) -> SentencePieceTokenizer:
        return cls(load_model(path), Path(path))

    def id_to_piece(self, i: int) -> str:
        return self.pieces[i]

    def piece_to_id(self, piece: str) -> int:
        return self._all.get(piece, self.unk_id)

    # -- encoding ---------------------------------------------------------------------------------------------

    def normalize(self, text: str) -> str:
        m = self.model
        units = self._charsmap.apply(text) if self._charsmap else list(text)
        if m.remove_extra_whitespaces:
            while units and units[0] == " ":
                units.pop(0)
        if not units:
            return ""
        out: list[str] = []
        space = SPACE if m.escape_whitespaces else " "
        if m.add_dummy_prefix and not m.treat_whitespace_as_suffix:
            out.append(space)
        prev_space = m.remove_extra_whitespaces
        for unit in units:
            if prev_space:
                unit = unit.lstrip(" ")
            if unit:
                out.append(unit.replace(" ", space))
                prev_space = m.remove_extra_whitespaces and unit.endswith(" ")
        text = "".join(out)
        if m.remove_extra_whitespaces:
            text = text.rstrip(space)
        if m.add_dummy_prefix and m.treat_whitespace_as_suffix:
            text += space
        return text

    def encode(self, text: str, bos: bool | None = None, eos: bool = False, special: bool = False) -> list[int]:
        """Token ids of `text`; `bos` defaults to the tokenizer's own convention (`add_bos`). With `special`, the
        text of control pieces (`<s>`, `</s>`, ...) becomes those tokens and each stretch between them is encoded
        on its own (as transformers' fast Llama tokenizer does); sentencepiece itself never does this."""
        if special and self._control is not None:
            ids = []
            pos = 0
            for m in self._control.finditer(text):
                if m.start() > pos:
                    ids.extend(self.encode(text[pos : m.start()], bos=False))
                ids.append(self._all[m.group()])
                pos = m.end()
            if pos < len(text):
                ids.extend(self.encode(text[pos:], bos=False))
        elif self._library is not None:
            ids = list(self._library.encode(text))
        else:
            normalized = self.normalize(text)
            ids = []
            chunks = self._chunk_re.findall(normalized) if self._chunked else [normalized] if normalized else []
            for chunk in chunks:
                cached = self._cache.get(chunk)
                if cached is None:
                    cached = tuple(self._encode_chunk(chunk))
                    if len(self._cache) < _CACHE_LIMIT:
                        self._cache[chunk] = cached
                ids.extend(cached)
            if not self.model.byte_fallback:  # sentencepiece merges runs of unknown characters into one
                ids = [t for k, t in enumerate(ids) if not (t == self.unk_id and k and ids[k - 1] == self.unk_id)]
        if (self.add_bos if bos is None else bos) and self.bos_id is not None:
            ids.insert(0, self.bos_id)
        if eos and self.eos_id is not None:
            ids.append(self.eos_id)
        return ids

    def _split_units(self, text: str) -> tuple[list[str], list[bool]]:
        units, frozen, i = [], [], 0
        while i < len(text):
            for sym in self._user_defined:
                if text.startswith(sym, i):
                    units.append(sym)
                    frozen.append(True)
                    i += len(sym)
                    break
            else:
                units.append(text[i])
                frozen.append(False)
                i += 1
        return units, frozen

    def _encode_chunk(self, text: str) -> list[int]:
        sym, frozen = self._split_units(text)
        n = len(sym)
        nxt = list(range(1, n)) + [-1]
        prv = list(range(-1, n - 1))
        vocab, scores = self._merge_vocab, self._scores
        heap: list[tuple[float, int, int, int]] = []
        rev_merge: dict[str, tuple[str, str]] = {}

        def push(left: int, right: int) -> None:
            if left < 0 or right < 0 or frozen[left] or frozen[right]:
                return
            merged = sym[left] + sym[right]
            pid = vocab.get(merged)
            if pid is None:
                return
            # Highest score first; among equal scores the leftmost pair, as sentencepiece's agenda orders them.
            heapq.heappush(heap, (-scores[pid], left, right, len(merged)))
            if pid in self._unused:
                rev_merge[merged] = (sym[left], sym[right])

        for i in range(1, n):
            push(i - 1, i)
        while heap:
            _, left, right, size = heapq.heappop(heap)
            if not sym[left] or not sym[right] or len(sym[left]) + len(sym[right]) != size:
                continue  # stale: one side was merged elsewhere since this pair was queued
            sym[left] += sym[right]
            sym[right] = ""
            nxt[left] = nxt[right]
            if nxt[right] >= 0:
                prv[nxt[right]] = left
            push(prv[left], left)
            push(left, nxt[left])

        ids: list[int] = []
        i = 0
        while i != -1:
            self._emit(sym[i], rev_merge, ids)
            i = nxt[i]
        return ids

    def _emit(self, piece: str, rev_merge: dict[str, tuple[str, str]], ids: list[int]) -> None:
        pid = self._all.get(piece)
        if pid is not None and pid in self._unused and piece in rev_merge:
            left, right = rev_merge[piece]
            self._emit(left, rev_merge, ids)
            self._emit(right, rev_merge, ids)
            return
        if pid is not None and pid != self.unk_id:
            ids.append(pid)
        elif self.model.byte_fallback:
            ids.extend(self._byte_ids[b] for b in piece.encode("utf-8"))
        else:
            ids.append(self.unk_id)

    # -- decoding ---------------------------------------------------------------------------------------------

    def decode(self, ids: Sequence[int]) -> str:
        if self._library is not None:
            return self._library.decode([int(i) for i in ids])
        m, types = self.model, self.model.types
        text: list[str] = []
        pending = bytearray()
        strip_first = m.add_dummy_prefix or m.remove_extra_whitespaces
        first = True  # sentencepiece drops the dummy-prefix space of the first piece only
        for i in ids:
            i = int(i)
            if not 0 <= i < self.vocab_size:
                raise TokenizerError(f"token id {i} is outside the vocabulary (size {self.vocab_size})")
            kind = types[i]
            if kind == BYTE:
                pending.append(int(self.pieces[i][3:5], 16))
                continue
            if pending:
                text.append(pending.decode("utf-8", errors="replace"))
                pending.clear()
            if kind == CONTROL:
                continue
            if kind == UNKNOWN:
                text.append(m.unk_surface)
                continue
            piece = self.pieces[i]
            if strip_first and first and piece.startswith(SPACE):
                piece = piece[1:]
            first = False
            text.append(piece.replace(SPACE, " "))
        if pending:
            text.append(pending.decode("utf-8", errors="replace"))
        return "".join(text)


def _library_processor(path: Path | None):
    if path is None:
        raise TokenizerError("only BPE SentencePiece models can be built from a vocabulary; this one is unigram")
    import sentencepiece

    return sentencepiece.SentencePieceProcessor(model_file=str(path))
