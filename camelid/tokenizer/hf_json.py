"""Hugging Face `tokenizer.json` to and from camelid's tokenizers, through the `tokenizers` library.

Export builds the same pipeline `transformers` builds for these models (LlamaTokenizerFast's for a
SentencePiece BPE, GPT-2's byte-level BPE with the vocabulary's own pre-tokenizer), so `AutoTokenizer` on
an exported folder gives camelid's ids. Import turns a byte-level or SentencePiece-style BPE back into
camelid's own tokenizer (so it can be written to GGUF again); anything else is run by the library itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from camelid.errors import TokenizerError
from camelid.tokenizer.bpe import LLAMA3_PATTERN, ByteLevelBPETokenizer
from camelid.tokenizer.spm import SPACE, SentencePieceTokenizer
from camelid.tokenizer.spm_proto import BPE, BYTE, CONTROL, NORMAL, UNKNOWN, USER_DEFINED, SentencePieceModel


def _spm_merges(pieces: list[str], types: list[int], scores: list[float]) -> list[tuple[str, str]]:
    """BPE merges equivalent to a SentencePiece BPE model: every split of a mergeable piece into two
    mergeable pieces, ordered by the merged piece's score (SentencePiece merges the best-scoring pair first)."""
    mergeable = {p: i for i, (p, t) in enumerate(zip(pieces, types)) if t in (NORMAL, USER_DEFINED)}
    found = []
    for piece, i in mergeable.items():
        if types[i] == USER_DEFINED:
            continue
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in mergeable and right in mergeable:
                found.append((-scores[i], i, mergeable[left], mergeable[right], left, right))
    found.sort()
    return [(left, right) for *_, left, right in found]


def _added(tokenizer, pieces: list[str], types: list[int]):
    from tokenizers import AddedToken

    out = []
    for i, (p, t) in enumerate(zip(pieces, types)):
        if t in (CONTROL, UNKNOWN) or (t == USER_DEFINED and p):
            out.append((i, AddedToken(p, special=t != USER_DEFINED, normalized=False)))
    return out


def _post_processor(tokenizer, bos_piece: str | None):
    from tokenizers import processors

    if getattr(tokenizer, "add_bos", False) and bos_piece is not None:
        return processors.TemplateProcessing(
            single=f"{bos_piece} $A",
            pair=f"{bos_piece} $A {bos_piece} $B",
            special_tokens=[(bos_piece, tokenizer.bos_id)],
        )
    return None


def to_tokenizers(tokenizer):
    """A `tokenizers.Tokenizer` giving the same ids as camelid's SentencePiece or byte-level BPE tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    if isinstance(tokenizer, SentencePieceTokenizer):
        m = tokenizer.model
        if m.model_type != BPE or m.precompiled_charsmap or m.remove_extra_whitespaces:
            raise TokenizerError(
                "only SentencePiece BPE models with identity normalization (LLaMA's) can be written as tokenizer.json"
            )
        vocab = {p: i for i, p in reversed(list(enumerate(m.pieces)))}
        unk = m.pieces[m.unk_id] if 0 <= m.unk_id < len(m.pieces) else None
        merges = _spm_merges(m.pieces, m.types, m.scores)
        tok = Tokenizer(models.BPE(vocab, merges, unk_token=unk, fuse_unk=True, byte_fallback=m.byte_fallback))
        steps = [normalizers.Replace(" ", SPACE)]
        if m.add_dummy_prefix:
            steps.insert(0, normalizers.Prepend(SPACE))
        tok.normalizer = normalizers.Sequence(steps)
        dec = [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
        if m.add_dummy_prefix:
            dec.append(decoders.Strip(" ", 1, 0))
        tok.decoder = decoders.Sequence(dec)
        pieces, types = m.pieces, m.types
    elif isinstance(tokenizer, ByteLevelBPETokenizer):
        vocab = {p: i for i, p in reversed(list(enumerate(tokenizer.pieces)))}
        tok = Tokenizer(models.BPE(vocab, tokenizer.merge_list, byte_fallback=False))
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        if tokenizer.pre == "smollm":
            tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
        elif tokenizer.pre in ("llama-bpe", "llama3"):
            split = pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False)
            no_regex = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
            tok.pre_tokenizer = pre_tokenizers.Sequence([split, no_regex])
        elif tokenizer.pre in ("gpt2", "default"):
            tok.pre_tokenizer = byte_level
        else:
            raise TokenizerError(f"pre-tokenizer {tokenizer.pre!r} has no tokenizer.json form in camelid")
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        pieces, types = tokenizer.pieces, tokenizer.types
    else:
        raise TokenizerError(f"a {type(tokenizer).__name__} cannot be written as tokenizer.json")
    tok.add_tokens([a for _, a in _added(tokenizer, pieces, types)])
    for i, a in _added(tokenizer, pieces, types):
        if tok.token_to_id(a.content) != i:
            raise TokenizerError(f"special token {a.content!r} (id {i}) does not keep its id in tokenizer.json")
    bos = pieces[tokenizer.bos_id] if tokenizer.bos_id is not None else None
    post = _post_processor(tokenizer, bos)
    if post is not None:
        tok.post_processor = post
    return tok


def tokenizer_config(tokenizer, chat_template: str | None, context: int) -> dict[str, Any]:
    """`tokenizer_config.json`: special tokens, the BOS/EOS convention, the chat template."""

    def piece(i):
        return tokenizer.id_to_piece(i) if i is not None else None

    spm = isinstance(tokenizer, SentencePieceTokenizer)
    # PreTrainedTokenizerFast runs tokenizer.json as written; LlamaTokenizerFast would rebuild the pipeline (in
    # transformers 5 with a Metaspace that does not double a leading space, unlike sentencepiece)
    cfg: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": bool(getattr(tokenizer, "add_bos", False)),
        "add_eos_token": False,
        "bos_token": piece(tokenizer.bos_id),
        "eos_token": piece(tokenizer.eos_id),
        "pad_token": piece(tokenizer.pad_id),
        "model_max_length": context,
        "clean_up_tokenization_spaces": False,
    }
    if spm:
        cfg["unk_token"] = piece(tokenizer.unk_id)
    if chat_template:
        cfg["chat_template"] = chat_template
    return cfg


# -- import -----------------------------------------------------------------------------------------------


def _merge_pairs(merges: list) -> list[tuple[str, str]]:
    out = []
    for m in merges:
        if isinstance(m, str):
            a, sep, b = m.partition(" ")
            if not sep:
                raise TokenizerError(f"malformed merge {m!r}")
            out.append((a, b))
        elif isinstance(m, list) and len(m) == 2 and all(isinstance(x, str) for x in m):
            out.append((m[0], m[1]))
        else:
            raise TokenizerError(f"malformed merge {m!r}")
    return out


def _pre_name(pre: dict | None) -> str | None:
    """camelid's pre-tokenizer name for a tokenizer.json byte-level pipeline, or None if it is another."""
    if not isinstance(pre, dict):
        return None
    kind = pre.get("type")
    if kind == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space", False):
        return "gpt2"
    if kind != "Sequence":
        return None
    steps = pre.get("pretokenizers") or []
    kinds = [s.get("type") for s in steps if isinstance(s, dict)]
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        pattern = (steps[0].get("pattern") or {}).get("Regex")
        if pattern == LLAMA3_PATTERN:
            return "llama-bpe"
    return None


def _is_spm_style(data: dict) -> bool:
    norm = json.dumps(data.get("normalizer")) + json.dumps(data.get("pre_tokenizer"))
    return bool(data["model"].get("byte_fallback")) or SPACE in norm


def from_tokenizer_json(path: Path, config: dict[str, Any]):
    """camelid's tokenizer for a tokenizer.json (+ tokenizer_config.json values in `config`)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        model = data["model"]
        if not isinstance(model, dict):
            raise TypeError("model is not an object")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise TokenizerError(f"{path} is not a valid tokenizer.json ({type(e).__name__}: {e})") from None
    added = {a["id"]: a for a in data.get("added_tokens") or [] if isinstance(a, dict) and "id" in a}
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        return None
    vocab = model["vocab"]
    size = max([*vocab.values(), *added.keys()], default=-1) + 1
    pieces = [""] * size
    for p, i in vocab.items():
        if not isinstance(i, int) or not 0 <= i < size:
            raise TokenizerError(f"{path}: token {p!r} has a bad id {i!r}")
        pieces[i] = p
    types = [NORMAL] * size
    for i, a in added.items():
        pieces[i] = a.get("content", pieces[i])
        types[i] = CONTROL if a.get("special") else USER_DEFINED
    merges = _merge_pairs(model.get("merges") or [])

    def tid(key: str) -> int | None:
        v = config.get(key)
        if isinstance(v, dict):
            v = v.get("content")
        if not isinstance(v, str):
            return None
        ids = [i for i, p in enumerate(pieces) if p == v]
        return ids[0] if ids else None

    bos, eos, pad = tid("bos_token"), tid("eos_token"), tid("pad_token")
    add_bos = bool(config.get("add_bos_token", _template_adds_bos(data)))
    pre = _pre_name(data.get("pre_tokenizer"))
    if pre is not None and not _is_spm_style(data):
        ends = [i for i, p in enumerate(pieces) if p in ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|eom_id|>")]
        return ByteLevelBPETokenizer(
            pieces, [f"{a} {b}" for a, b in merges], types, pre=pre, bos_id=bos, eos_id=eos, pad_id=pad,
            add_bos=add_bos, extra_stop_ids=ends,
        )  # fmt: skip
    if _is_spm_style(data) and data.get("pre_tokenizer") in (None, {}) or _metaspace(data):
        return _spm_from_json(data, pieces, types, merges, bos, eos, pad, add_bos)
    return None


def _metaspace(data: dict) -> bool:
    pre = data.get("pre_tokenizer")
    return isinstance(pre, dict) and pre.get("type") == "Metaspace" and data.get("normalizer") in (None, {})


def _template_adds_bos(data: dict) -> bool:
    post = data.get("post_processor")
    if not isinstance(post, dict) or post.get("type") != "TemplateProcessing":
        return False
    single = post.get("single") or []
    return bool(single) and "SpecialToken" in single[0]


def _spm_from_json(data, pieces, types, merges, bos, eos, pad, add_bos):
    model = data["model"]
    unk_piece = model.get("unk_token")
    for i, p in enumerate(pieces):
        if len(p) == 6 and p.startswith("<0x") and p.endswith(">"):
            types[i] = BYTE
        if p == unk_piece:
            types[i] = UNKNOWN
    rank = {}
    for r, (a, b) in enumerate(merges):
        rank.setdefault(a + b, r)
    scores = [-float(rank[p]) if p in rank else -float(len(merges) + i) for i, p in enumerate(pieces)]
    text = json.dumps(data.get("normalizer")) + json.dumps(data.get("pre_tokenizer"))
    spm = SentencePieceModel(
        pieces=pieces,
        scores=scores,
        types=types,
        model_type=BPE,
        byte_fallback=bool(model.get("byte_fallback")),
        unk_id=pieces.index(unk_piece) if unk_piece in pieces else 0,
        bos_id=-1 if bos is None else bos,
        eos_id=-1 if eos is None else eos,
        pad_id=-1 if pad is None else pad,
        normalizer_name="identity",
        add_dummy_prefix="Prepend" in text
        or '"prepend_scheme": "always"' in text
        or '"prepend_scheme": "first"' in text,
        remove_extra_whitespaces=False,
    )
    tok = SentencePieceTokenizer(spm)
    tok.add_bos = add_bos
    return tok
