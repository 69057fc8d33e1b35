"""Read and write SentencePiece `tokenizer.model` files (a `ModelProto` protobuf) without protobuf.

Only the fields a BPE encoder needs are decoded; unknown fields are skipped as the wire format allows.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from camelid.errors import TokenizerError

# SentencePiece.Type
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
# TrainerSpec.ModelType
UNIGRAM, BPE, WORD, CHAR = 1, 2, 3, 4


@dataclass
class SentencePieceModel:
    pieces: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    types: list[int] = field(default_factory=list)
    model_type: int = UNIGRAM
    byte_fallback: bool = False
    treat_whitespace_as_suffix: bool = False
    unk_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    pad_id: int = -1
    unk_surface: str = " \u2047 "
    normalizer_name: str = ""
    precompiled_charsmap: bytes = b""
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    escape_whitespaces: bool = True


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes):
    """Yield (field number, value) for each field: ints for varints, bytes for length-delimited data."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated field")
        yield number, value


def _signed(v: int) -> int:
    v = _int(v)
    return v - (1 << 64) if v >= 1 << 63 else v


def _int(v) -> int:
    """A varint field's value; another wire type where the schema has a varint is a malformed file."""
    if not isinstance(v, int):
        raise ValueError("a varint field holds length-delimited data")
    return v


def _bytes(v) -> bytes:
    """A length-delimited field's bytes (a submessage, a string, a fixed32 float)."""
    if isinstance(v, int):
        raise ValueError("a length-delimited field holds a varint")
    return v


def parse_model(data: bytes) -> SentencePieceModel:
    m = SentencePieceModel()
    for number, value in _fields(data):
        if number == 1:
            piece, score, kind = "", 0.0, NORMAL
            for n, v in _fields(_bytes(value)):
                if n == 1:
                    piece = _bytes(v).decode("utf-8")
                elif n == 2:
                    score = struct.unpack("<f", _bytes(v))[0]
                elif n == 3:
                    kind = _int(v)
            m.pieces.append(piece)
            m.scores.append(score)
            m.types.append(kind)
        elif number == 2:
            for n, v in _fields(_bytes(value)):
                if n == 3:
                    m.model_type = _int(v)
                elif n == 24:
                    m.treat_whitespace_as_suffix = bool(_int(v))
                elif n == 35:
                    m.byte_fallback = bool(_int(v))
                elif n in (40, 41, 42, 43):
                    setattr(m, {40: "unk_id", 41: "bos_id", 42: "eos_id", 43: "pad_id"}[n], _signed(v))
                elif n == 44:
                    m.unk_surface = _bytes(v).decode("utf-8")
        elif number == 3:
            for n, v in _fields(_bytes(value)):
                if n == 1:
                    m.normalizer_name = _bytes(v).decode("utf-8")
                elif n == 2:
                    m.precompiled_charsmap = bytes(_bytes(v))
                elif n == 3:
                    m.add_dummy_prefix = bool(_int(v))
                elif n == 4:
                    m.remove_extra_whitespaces = bool(_int(v))
                elif n == 5:
                    m.escape_whitespaces = bool(_int(v))
    return m


def load_model(path: str | Path) -> SentencePieceModel:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TokenizerError(f"cannot read tokenizer file {path}: {e.strerror}") from None
    try:
        model = parse_model(data)
    except (ValueError, UnicodeDecodeError, struct.error) as e:
        raise TokenizerError(f"{path} is not a SentencePiece model file ({e})") from None
    if not model.pieces:
        raise TokenizerError(f"{path} is not a SentencePiece model file (no pieces)")
    return model


def _key(number: int, wire: int) -> bytes:
    return _enc_varint(number << 3 | wire)


def _enc_varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _bytes_field(number: int, data: bytes) -> bytes:
    return _key(number, 2) + _enc_varint(len(data)) + data


def _int_field(number: int, v: int) -> bytes:
    return _key(number, 0) + _enc_varint(v)


def serialize_model(m: SentencePieceModel) -> bytes:
    """Encode `m` as a ModelProto that the sentencepiece library loads (used to export GGUF vocabularies)."""
    out = bytearray()
    for piece, score, kind in zip(m.pieces, m.scores, m.types):
        body = _bytes_field(1, piece.encode("utf-8")) + _key(2, 5) + struct.pack("<f", score) + _int_field(3, kind)
        out += _bytes_field(1, body)
    trainer = (
        _int_field(3, m.model_type)
        + _int_field(4, len(m.pieces))
        + _int_field(24, int(m.treat_whitespace_as_suffix))
        + _int_field(35, int(m.byte_fallback))
        + _int_field(40, m.unk_id)
        + _int_field(41, m.bos_id)
        + _int_field(42, m.eos_id)
        + _int_field(43, m.pad_id)
        + _bytes_field(44, m.unk_surface.encode("utf-8"))
    )
    out += _bytes_field(2, trainer)
    normalizer = (
        _bytes_field(1, m.normalizer_name.encode("utf-8"))
        + (_bytes_field(2, m.precompiled_charsmap) if m.precompiled_charsmap else b"")
        + _int_field(3, int(m.add_dummy_prefix))
        + _int_field(4, int(m.remove_extra_whitespaces))
        + _int_field(5, int(m.escape_whitespaces))
    )
    out += _bytes_field(3, normalizer)
    return bytes(out)
