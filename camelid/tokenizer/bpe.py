"""Byte-level BPE (GPT-2 style) as GGUF `gpt2` vocabularies use it: a pre-tokenizer split by regex, bytes
mapped to printable characters, merges applied by rank, special tokens matched in the text.

The pre-tokenizer regexes are llama.cpp's, by the GGUF key `tokenizer.ggml.pre` (llama-vocab.cpp).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import regex

from camelid.errors import TokenizerError

_GPT2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"""
    r"""|\s+(?!\S)|\s+"""
)
# Each pre-tokenizer is a sequence of regexes; a later one splits the pieces the earlier ones produced.
PRE_TOKENIZERS: dict[str, list[str]] = {
    "gpt2": [_GPT2],
    "default": [_GPT2],
    "smollm": [r"\p{N}", _GPT2],  # every digit on its own, then GPT-2's rule
    "llama-bpe": [LLAMA3_PATTERN],
    "llama3": [LLAMA3_PATTERN],
}

# GGUF / sentencepiece token types
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (spaces become 'Ġ', newlines 'Ċ')."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def split_keeping(pattern: regex.Pattern, text: str) -> list[str]:
    """The matches of `pattern` and the text between them, in order (llama.cpp's unicode_regex_split)."""
    out, pos = [], 0
    for m in pattern.finditer(text):
        if m.start() > pos:
            out.append(text[pos : m.start()])
        if m.end() > m.start():
            out.append(m.group())
        pos = m.end()
    if pos < len(text):
        out.append(text[pos:])
    return out


class ByteLevelBPETokenizer:
    def __init__(
        self,
        tokens: Sequence[str],
        merges: Sequence[str],
        types: Sequence[int] | None = None,
        pre: str = "gpt2",
        bos_id: int | None = None,
        eos_id: int | None = None,
        pad_id: int | None = None,
        add_bos: bool = False,
        extra_stop_ids: Sequence[int] = (),
    ) -> None:
        if pre not in PRE_TOKENIZERS:
            raise TokenizerError(
                f"unsupported pre-tokenizer {pre!r}; camelid knows {', '.join(sorted(PRE_TOKENIZERS))}"
            )
        self.pieces = list(tokens)
        self.vocab_size = len(self.pieces)
        self.types = list(types) if types is not None else [NORMAL] * self.vocab_size
        self.pre = pre
        self._patterns = [regex.compile(p) for p in PRE_TOKENIZERS[pre]]
        ids = {t: i for i, t in enumerate(self.pieces)}  # only while building: pieces are looked up as ids after
        # merges by the ids of their two halves: left * vocab + right -> rank * vocab + id of the merged piece (two
        # ints in one, a third of a tuple's memory). Pairs whose halves or result are not in the vocabulary can never
        # apply and are left out.
        self._merges: dict[int, int] = {}
        v = self.vocab_size
        for rank, m in enumerate(merges):
            a, _, b = m.partition(" ")
            ia, ib, iab = ids.get(a), ids.get(b), ids.get(a + b)
            if ia is not None and ib is not None and iab is not None:
                self._merges.setdefault(ia * v + ib, rank * v + iab)
        self.byte_map = bytes_to_unicode()
        self._byte_ids = [ids.get(self.byte_map[b]) for b in range(256)]
        self.byte_unmap = {c: b for b, c in self.byte_map.items()}
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id
        self.add_bos = add_bos
        self.stop_ids = {i for i in (eos_id, *extra_stop_ids) if i is not None}
        special = [t for t, k in zip(self.pieces, self.types) if k in (CONTROL, USER_DEFINED) and t]
        self._special_ids = {t: ids[t] for t in special}
        self._special = regex.compile("|".join(regex.escape(t) for t in sorted(special, key=len, reverse=True)))
        self._has_special = bool(special)
        self._cache: dict[str, list[int]] = {}

    def id_to_piece(self, i: int) -> str:
        return self.pieces[i]

    @property
    def merge_list(self) -> list[tuple[str, str]]:
        """The merges, by rank, as (left, right) piece pairs (what a tokenizer file stores)."""
        v = self.vocab_size
        by_rank = sorted((packed // v, key) for key, packed in self._merges.items())
        return [(self.pieces[key // v], self.pieces[key % v]) for _, key in by_rank]

    def _bpe(self, word: bytes) -> list[int]:
        """BPE over one pre-token's bytes: a linked list of symbols and a heap of mergeable pairs, lowest rank
        (then leftmost) first, so a word of n bytes costs O(n log n) instead of O(n^2) (a 64K-character
        minified line or base64 blob stays fast). Equivalent to GPT-2's loop, which merges the best pair
        everywhere before the next; ids are pinned against llama.cpp and the tokenizers library."""
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        sym = [self._byte_ids[b] for b in word]
        if any(i is None for i in sym):  # a byte the vocabulary lacks is dropped, as the string version did
            sym = [i for i in sym if i is not None]
        n = len(sym)
        if n > 1:
            v, merges = self.vocab_size, self._merges
            nxt = list(range(1, n + 1))
            prv = list(range(-1, n - 1))
            heap = []
            for i in range(n - 1):
                m = merges.get(sym[i] * v + sym[i + 1])
                if m is not None:  # (rank, position): the lowest rank first, then the leftmost
                    heap.append((m, i, sym[i], sym[i + 1]))
            heapq.heapify(heap)
            while heap:
                m, i, left, right = heapq.heappop(heap)
                j = nxt[i]
                if j >= n or sym[i] != left or sym[j] != right:
                    continue  # stale: a neighbour was merged since this pair was queued
                merged = m % v
                sym[i], sym[j] = merged, -1
                nxt[i] = nxt[j]
                if nxt[j] < n:
                    prv[nxt[j]] = i
                p, q = prv[i], nxt[i]
                if p >= 0:
                    m2 = merges.get(sym[p] * v + merged)
                    if m2 is not None:
                        heapq.heappush(heap, (m2, p, sym[p], merged))
                if q < n:
                    m2 = merges.get(merged * v + sym[q])
                    if m2 is not None:
                        heapq.heappush(heap, (m2, i, merged, sym[q]))
            sym = [s for s in sym if s >= 0]
        if len(self._cache) < 200_000 and len(word) < 256:
            self._cache[word] = sym
        return sym

    def _encode_ordinary(self, text: str) -> list[int]:
        words = [text]
        for pattern in self._patterns:
            words = [w for piece in words for w in split_keeping(pattern, piece)]
        ids: list[int] = []
        for w in words:
            ids.extend(self._bpe(w.encode("utf-8")))
        return ids

    def encode(self, text: str, bos: bool | None = None, eos: bool = False, special: bool = True) -> list[int]:
        """Token ids; `special` parses control/user-defined token text (e.g. `<|im_start|>`) as those tokens."""
        ids: list[int] = []
        if (self.add_bos if bos is None else bos) and self.bos_id is not None:
            ids.append(self.bos_id)
        if special and self._has_special:
            pos = 0
            for m in self._special.finditer(text):
                ids.extend(self._encode_ordinary(text[pos : m.start()]))
                ids.append(self._special_ids[m.group()])
                pos = m.end()
            ids.extend(self._encode_ordinary(text[pos:]))
        else:
            ids.extend(self._encode_ordinary(text))
        if eos and self.eos_id is not None:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        out = bytearray()
        for i in ids:
            i = int(i)
            if not 0 <= i < self.vocab_size:
                raise TokenizerError(f"token id {i} is outside the vocabulary (size {self.vocab_size})")
            kind = self.types[i]
            if kind == CONTROL and skip_special:
                continue
            piece = self.pieces[i]
            if kind in (CONTROL, USER_DEFINED):
                out += piece.encode("utf-8")
            else:
                out += bytes(self.byte_unmap.get(c, ord("?")) for c in piece)
        return out.decode("utf-8", errors="replace")
