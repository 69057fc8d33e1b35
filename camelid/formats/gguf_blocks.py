"""GGUF's quantized blocks onto camelid's packed weights, without a dense copy of the model.

Exact maps (the integer values and the scales are the file's; the kernels then hold scales in bf16):
Q8_0 -> int8 in groups of 32; Q5_0 -> int8 in groups of 32 (its 5-bit values minus 16); Q4_0 -> int4 g32
(zero 0); Q4_1 -> int4 g32 (zero m + 8 d); Q4_K -> int4 g32 (each 32-wide sub-block's d * sc and
8 d sc - dmin m). Every other type llama.cpp's quantizer emits (Q5_1, Q2_K, Q3_K, Q5_K, Q6_K, the IQ and TQ
types) is dequantized one tensor at a time and re-quantized (6- and 5-bit types to int8 g32, the rest to
int4 g32), and the error is measured: `requantized` lists each tensor's relative RMS error.
"""

from __future__ import annotations

import numpy as np

from camelid.lazy import torch
from camelid.transforms.quant_weight import QuantizedWeight, check_quantizable, pack_nibbles, quantize_rows

EXACT = ("Q8_0", "Q5_0", "Q4_0", "Q4_1", "Q4_K")
TO_INT8 = ("Q8_0", "Q5_0", "Q5_1", "Q5_K", "Q6_K", "Q8_K")


def _rows(t) -> tuple[int, int, np.ndarray]:
    n, k = (int(d) for d in reversed(t.shape.tolist()))
    return n, k, np.asarray(t.data).reshape(n, -1)


def _f16(a: np.ndarray) -> np.ndarray:
    """The fp16 fields of the blocks, kept fp16 (their exact values, a quarter of fp32's size)."""
    return np.ascontiguousarray(a).view(np.float16).reshape(a.shape[:-1])


def _exact(kind: str, t) -> QuantizedWeight:
    n, k, raw = _rows(t)
    if kind in ("Q8_0", "Q4_0", "Q4_1", "Q5_0"):
        size = {"Q8_0": 34, "Q4_0": 18, "Q4_1": 20, "Q5_0": 22}[kind]
        b = raw.reshape(n, k // 32, size)
        d = _f16(b[..., 0:2])
        if kind == "Q8_0":
            q = np.ascontiguousarray(b[..., 2:]).view(np.int8).reshape(n, k)
            return QuantizedWeight(8, (n, k), 32, torch.from_numpy(q.copy()), torch.from_numpy(d))
        if kind == "Q5_0":
            high = np.unpackbits(np.ascontiguousarray(b[..., 2:6]), axis=-1, bitorder="little")  # (n, g, 32)
            qs = b[..., 6:]
            low = np.concatenate([qs & 15, qs >> 4], axis=-1)
            q = (low | (high << 4)).astype(np.int16) - 16
            return QuantizedWeight(
                8, (n, k), 32, torch.from_numpy(q.reshape(n, k).astype(np.int8)), torch.from_numpy(d)
            )
        qs = b[..., 4:] if kind == "Q4_1" else b[..., 2:]
        u = np.concatenate([qs & 15, qs >> 4], axis=-1).reshape(n, k)  # element j < 16 low nibble, j + 16 high
        packed = pack_nibbles(torch.from_numpy(u))
        if kind == "Q4_1":  # value = q d + m: kept as the file's fp16 m
            return QuantizedWeight(
                4, (n, k), 32, packed, torch.from_numpy(d), minimum=torch.from_numpy(_f16(b[..., 2:4]))
            )
        return QuantizedWeight(4, (n, k), 32, packed, torch.from_numpy(d), torch.zeros(d.shape))
    # Q4_K: super-blocks of 256 = 8 sub-blocks of 32, 6-bit scales and mins
    from gguf.quants import Q4_K

    b = raw.reshape(-1, 144)
    d, dmin = _f16(b[:, 0:2]).astype(np.float32)[:, None], _f16(b[:, 2:4]).astype(np.float32)[:, None]
    sc, mn = Q4_K.get_scale_min(np.ascontiguousarray(b[:, 4:16]))
    qs = b[:, 16:].reshape(-1, 4, 32)  # each 32 bytes: low nibbles one sub-block, high nibbles the next
    u = np.stack([qs & 15, qs >> 4], axis=2).reshape(n, k)
    scale = (d * sc.astype(np.float32)).reshape(n, k // 32)
    zero = 8 * scale - (dmin * mn.astype(np.float32)).reshape(n, k // 32)
    return QuantizedWeight(4, (n, k), 32, pack_nibbles(torch.from_numpy(u)), torch.from_numpy(scale),
                           torch.from_numpy(zero))  # fmt: skip


def packed_weight(t, rows_of, bits: int | None = None) -> tuple[QuantizedWeight, float | None]:
    """(camelid's packed weight for GGUF tensor `t`, relative RMS error if it was re-quantized else None).

    `bits` None keeps the file's type where it maps exactly; 8 or 4 asks for that width (an exact map when the
    type matches, re-quantization otherwise). `rows_of(t, start, end)` dequantizes some rows (fp32): a tensor is
    re-quantized a block of rows at a time, never held dense whole."""
    kind = t.tensor_type.name
    want = bits or (8 if kind in TO_INT8 else 4)
    if kind in EXACT and (want == 8) == (kind in ("Q8_0", "Q5_0")):
        return _exact(kind, t), None
    n, k = (int(d) for d in reversed(t.shape.tolist()))
    check_quantizable((n, k), want, 32, t.name)
    errors: list = []
    qw = quantize_rows(n, k, want, 32, lambda a, b: rows_of(t, a, b), errors)
    return qw, (sum(e for e, _ in errors) / max(sum(x for _, x in errors), 1e-30)) ** 0.5


def gguf_blocks(qw: QuantizedWeight) -> tuple[np.ndarray, str] | None:
    """GGUF blocks holding `qw` exactly (int8 g32 -> Q8_0; int4 g32 -> Q4_0 when every zero is 0, else Q4_1), or
    None when GGUF has no exact form for it."""
    n, k = qw.shape
    if qw.group_size != 32:
        return None
    d = qw.scale.float().numpy().astype(np.float16)
    if not np.array_equal(d.astype(np.float32), qw.scale.float().numpy()):
        return None  # fp32 scales GGUF's fp16 cannot hold
    if qw.bits == 8:
        q = qw.q.numpy().reshape(n, k // 32, 32)
        blocks = np.concatenate([d.reshape(n, k // 32, 1).view(np.uint8), q.view(np.uint8)], axis=-1)
        return blocks.reshape(n, -1), "Q8_0"
    u = qw.values().numpy().astype(np.uint8).reshape(n, k // 32, 32)
    qs = (u[..., :16] | (u[..., 16:] << 4)).astype(np.uint8)
    dd = d.reshape(n, k // 32, 1).view(np.uint8)
    if qw.minimum is not None:
        m = qw.minimum.numpy().astype(np.float16)
    else:
        zero = qw.zero.float().numpy()
        if not zero.any():
            return np.concatenate([dd, qs], axis=-1).reshape(n, -1), "Q4_0"
        m = (zero - 8 * qw.scale.float().numpy()).astype(np.float16)
        if not np.allclose(m.astype(np.float32) + 8 * qw.scale.float().numpy(), zero, rtol=0, atol=1e-6):
            return None
    return np.concatenate([dd, m.reshape(n, k // 32, 1).view(np.uint8), qs], axis=-1).reshape(n, -1), "Q4_1"
