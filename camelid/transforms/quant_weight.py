"""The portable form of a quantized weight, as files hold it (camelid's format, and what GGUF blocks map onto),
its round-to-nearest quantization and which layout each of a model's weights gets. No kernels here: formats
read and write these without building a module (`quantize.py` turns them into the kernels' layouts).

int8: `q` int8 [N, K], `scale` [N] (per channel) or [N, K/g]; int4: `q` uint8 [N, K/2] (low nibble = even
column), `scale` and `zero` [N, K/g], value = (q - 8) * scale + zero (or Q4_1's `minimum`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from camelid.errors import ConfigError
from camelid.lazy import torch

SCHEMES = ("int8", "int4")
INT4_GROUPS = (32, 64, 128, 256)
PACK_ROWS = 256  # rows converted at a time, so a transient copy (int32 for the kernels' converter) stays small


@dataclass
class QuantizedWeight:
    """A quantized [N, K] weight in camelid's portable layout."""

    bits: int  # 8 or 4
    shape: tuple[int, int]
    group_size: int  # 0: one scale per output channel (int8 only)
    q: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor | None = None
    """int4: value = (q - 8) * scale + zero."""
    minimum: torch.Tensor | None = None
    """int4 in GGUF's Q4_1 form instead of `zero`: value = q * scale + minimum (kept in the file's fp16, half of
    fp32's memory); zero = minimum + 8 * scale."""

    @property
    def scheme(self) -> str:
        return f"int{self.bits}" + (f"-g{self.group_size}" if self.group_size else "")

    def nbytes(self) -> int:
        parts = (self.q, self.scale, self.zero, self.minimum)
        return sum(t.numel() * t.element_size() for t in parts if t is not None)

    def zeros(self, rows=None) -> torch.Tensor | None:
        """The int4 offsets (fp32) of all rows or of `rows`."""
        if self.minimum is not None:
            m, s = (self.minimum, self.scale) if rows is None else (self.minimum[rows], self.scale[rows])
            return m.float() + 8 * s.float()
        if self.zero is None:
            return None
        return self.zero if rows is None else self.zero[rows]

    def to(self, device) -> QuantizedWeight:
        moved = [None if t is None else t.to(device) for t in (self.q, self.scale, self.zero, self.minimum)]
        return QuantizedWeight(self.bits, self.shape, self.group_size, *moved)

    def values(self) -> torch.Tensor:
        """The integer values as int16 [N, K] (int4: 0..15, int8: -128..127)."""
        if self.bits == 8:
            return self.q.to(torch.int16)
        lo, hi = self.q & 15, self.q >> 4
        return torch.stack([lo, hi], dim=-1).reshape(self.shape).to(torch.int16)

    def dequantize(self, dtype: torch.dtype | None = None, rows: slice | torch.Tensor | None = None) -> torch.Tensor:
        """The dense values (fp32 unless `dtype`), of all rows or of `rows`."""
        dtype = dtype or torch.float32
        n, k = self.shape
        q, scale, zero = self.q, self.scale, self.zeros(rows)
        if rows is not None:
            q, scale = q[rows], scale[rows]
        if self.bits == 8:
            v = q.to(torch.float32)
        else:
            v = torch.stack([q & 15, q >> 4], dim=-1).reshape(q.shape[0], k).to(torch.float32) - 8
        if self.group_size == 0:
            return (v * scale[:, None].float()).to(dtype)
        g = self.group_size
        v = v.view(-1, k // g, g) * scale.float()[..., None]
        if zero is not None:
            v = v + zero.float()[..., None]
        return v.reshape(-1, k).to(dtype)


def check_group_size(bits: int, group_size: int) -> None:
    if bits == 4 and group_size not in INT4_GROUPS:
        raise ConfigError(
            f"int4 group size {group_size} is not supported; choose one of {', '.join(map(str, INT4_GROUPS))}"
        )
    if bits == 8 and group_size not in (0, 32):
        raise ConfigError(f"int8 group size {group_size} is not supported; choose 0 (per channel) or 32")


def check_quantizable(shape: tuple[int, int], bits: int, group_size: int, name: str = "a layer") -> None:
    n, k = shape
    check_group_size(bits, group_size)
    if group_size and k % group_size:
        raise ConfigError(f"group size {group_size} does not divide {name}'s {k} input columns; choose another")
    if (bits == 4 or group_size) and n % 16:
        raise ConfigError(f"{name} has {n} output rows; the int4 kernels need a multiple of 16")


def quantize_weight(w: torch.Tensor, bits: int, group_size: int) -> QuantizedWeight:
    """Round-to-nearest quantization: int8 symmetric (absmax), int4 asymmetric (min/max per group); a block of
    rows at a time (the transient fp32 copy is one block)."""
    n, k = w.shape
    check_quantizable((n, k), bits, group_size)
    if n > PACK_ROWS:
        return quantize_rows(n, k, bits, group_size, lambda a, b: w[a:b])
    return _quantize_rows(w, bits, group_size)


def _fp16_scale(scale: torch.Tensor) -> torch.Tensor:
    """Scales as fp16 (what GGUF stores and the files hold; the kernels round them to bf16), never zero."""
    return scale.clamp(min=6.1e-5).half()


def _quantize_rows(w: torch.Tensor, bits: int, group_size: int) -> QuantizedWeight:
    """Round to nearest against the fp16 scales that are stored, so the stored values and scales agree exactly."""
    n, k = w.shape
    w = w.detach().float()
    if bits == 8:
        if group_size == 0:
            scale = _fp16_scale(w.abs().amax(dim=1) / 127)
            q = (w / scale.float()[:, None]).round().clamp(-128, 127).to(torch.int8)
            return QuantizedWeight(8, (n, k), 0, q, scale)
        g = w.view(n, k // group_size, group_size)
        scale = _fp16_scale(g.abs().amax(dim=-1) / 127)
        q = (g / scale.float()[..., None]).round().clamp(-128, 127).to(torch.int8).view(n, k)
        return QuantizedWeight(8, (n, k), group_size, q, scale)
    g = w.view(n, k // group_size, group_size)
    lo, hi = g.amin(dim=-1), g.amax(dim=-1)
    scale = _fp16_scale((hi - lo) / 15)
    lo16 = lo.half()
    u = ((g - lo16.float()[..., None]) / scale.float()[..., None]).round().clamp(0, 15).to(torch.uint8).view(n, k)
    # value = u * scale + lo: GGUF's Q4_1 form (zero = lo + 8 * scale)
    return QuantizedWeight(4, (n, k), group_size, pack_nibbles(u), scale, minimum=lo16)


def quantize_rows(n: int, k: int, bits: int, group_size: int, rows_of, errors: list | None = None) -> QuantizedWeight:
    """Quantize an [n, k] matrix PACK_ROWS rows at a time (`rows_of(start, end)` gives those rows, fp32) into
    tensors made once, so neither a dense copy nor a list of parts is ever held. With `errors`, appends
    (squared error, squared norm) of the rounding."""
    out = None
    for r in range(0, n, PACK_ROWS):
        w = rows_of(r, min(n, r + PACK_ROWS))
        part = _quantize_rows(w, bits, group_size)
        if errors is not None:
            errors.append((float((part.dequantize() - w).pow(2).sum()), float(w.pow(2).sum())))
        if out is None:

            def like(t):
                return None if t is None else torch.empty((n, *t.shape[1:]), dtype=t.dtype)

            out = QuantizedWeight(bits, (n, k), group_size, like(part.q), like(part.scale), like(part.zero),
                                  like(part.minimum))  # fmt: skip
        rows = slice(r, r + w.shape[0])
        for name in ("q", "scale", "zero", "minimum"):
            if getattr(part, name) is not None:
                getattr(out, name)[rows] = getattr(part, name)
        del w, part
    return out


def pack_nibbles(u: torch.Tensor) -> torch.Tensor:
    """uint8 [N, K] of values 0..15 -> uint8 [N, K/2], low nibble the even column.

    Each pair of columns read as one little-endian int16 (even + odd << 8) is folded into its low byte: 13x faster
    than two strided slices, and most of a 4-bit GGUF file's load time before."""
    assert sys.byteorder == "little"
    v = u.contiguous().view(torch.int16)
    return ((v | (v >> 4)) & 0xFF).to(torch.uint8)


LINEARS = ("attention.wq", "attention.wk", "attention.wv", "attention.wo", "feed_forward.w1", "feed_forward.w2",
           "feed_forward.w3")  # fmt: skip


TABLES = ("tok_embeddings.weight", "output.weight")


def layout_for(name: str, bits: int, group_size: int, k: int) -> tuple[int, int]:
    """(bits, group size) for weight `name` when a model is quantized to `bits`: with int4, the embedding and
    the output head stay int8 (groups of 32 where they divide, as GGUF's Q8_0), as llama.cpp's 4-bit mixes keep
    them at 6 bits or more. Measured on the embedded SmolLM2 (tests/transforms/test_quant_quality.py): an int4
    embedding alone costs +7.6% held-out perplexity; int8 +0.2%."""
    if bits == 4 and name in TABLES:
        return 8, 32 if k % 32 == 0 else 0
    return bits, group_size


def quantize_state(
    state: dict[str, torch.Tensor], bits: int, group_size: int, embeddings: bool = True
) -> tuple[dict[str, torch.Tensor], dict[str, QuantizedWeight]]:
    """Split a dense state dict into what stays dense (norms) and the quantized matrices, one tensor at a time
    (each in `layout_for` its name)."""
    dense, quantized = {}, {}
    for name, t in state.items():
        is_matrix = t.dim() == 2 and (name.endswith(tuple(f"{n}.weight" for n in LINEARS)) or name == "output.weight")
        if name == "tok_embeddings.weight" and embeddings:
            is_matrix = True
        if is_matrix:
            b, g = layout_for(name, bits, group_size, t.shape[1])
            check_quantizable(tuple(t.shape), b, g, name)
            quantized[name] = quantize_weight(t, b, g)
        else:
            dense[name] = t
    return dense, quantized


def default_group_size(bits: int, group_size: int | None) -> int:
    """32 unless given (int8 in groups of 32 is llama.cpp's Q8_0 layout: per channel, 0, loses 1.6% perplexity on
    SmolLM2-135M against 0.2%, tests/transforms/test_quant_quality.py)."""
    return 32 if group_size is None else group_size
