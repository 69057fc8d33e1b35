"""Weight-only int8 / int4 quantization as a module swap (gpt-fast's pattern): `nn.Linear` -> `QuantizedLinear`,
`nn.Embedding` -> `QuantizedEmbedding`, applied from outside the model.

Weights stay packed in memory and run on PyTorch's own kernels with bf16 activations:
`aten._weight_int8pack_mm` (int8, one scale per output channel) and `aten._weight_int4pack_mm_for_cpu` /
`aten._weight_int4pack_mm` (int4 in groups of 32/64/128/256, a scale and an offset per group). int8 in groups
of 32 (exactly GGUF's Q8_0, the default) is one int4 matmul over twice the columns: q + 128 = 16 hi + lo, so
x W^T = [x, x] [hi | lo]^T with scales 16 s and s (the [hi | lo] rows take the int8 rows' own bytes). An input
of many rows (a prefill) dequantizes one layer's weight to bf16 for that call and runs a dense matmul, which is
faster there; a decode step (few rows) always runs the packed kernel. Where a kernel is missing, that is said in
one line and the layer dequantizes per call.

The portable form files hold (`QuantizedWeight`), its rounding and which layout each weight gets are in
`quant_weight.py`; this module is the kernels, the modules that hold them and the swap.
"""

from __future__ import annotations

import functools
import logging

import torch
import torch.nn.functional as F
from torch import nn

from camelid.errors import ConfigError
from camelid.transforms.quant_weight import (
    PACK_ROWS,
    QuantizedWeight,
    default_group_size,
    layout_for,
    pack_nibbles,
    quantize_state,
)

log = logging.getLogger(__name__)
DEQUANT_ROWS = 16  # inputs with more rows than this dequantize the layer for the call (measured: prefill)
COMPUTE = torch.bfloat16
EXACT_TOP = 64  # an output head's largest logits per row recomputed in fp32 (greedy and log-probs follow them)
DENSE_ROWS = 4096  # output rows dequantized at a time for a large input's dense matmul


# -- kernels ------------------------------------------------------------------------------------------------

_AVAILABLE: dict[tuple[str, str], str | None] = {}


def _probe(kind: str, device: torch.device) -> str | None:
    """None when PyTorch's packed kernel `kind` ("int8" or "int4") runs on `device`, else why not (cached)."""
    key = (kind, device.type)
    if key not in _AVAILABLE:
        try:
            x = torch.randn(1, 64, dtype=COMPUTE, device=device)
            if kind == "int8":
                q = torch.ones(16, 64, dtype=torch.int8, device=device)
                torch.ops.aten._weight_int8pack_mm(x, q, torch.ones(16, dtype=COMPUTE, device=device))
            else:
                _int4_mm(x, _pack_int4(torch.zeros(16, 32, dtype=torch.uint8, device=device)), 32,
                         torch.ones(2, 16, 2, dtype=COMPUTE, device=device))  # fmt: skip
            _AVAILABLE[key] = None
        except (RuntimeError, NotImplementedError, AttributeError) as e:
            _AVAILABLE[key] = str(e).splitlines()[0][:120]
    return _AVAILABLE[key]


_WARNED: set = set()


def _kernel_available(kind: str, device: torch.device) -> bool:
    """Whether PyTorch's packed kernel `kind` runs on `device`; said once (one line) when it does not."""
    why = _probe(kind, device)
    if why is not None and (kind, device.type) not in _WARNED:
        _WARNED.add((kind, device.type))
        log.warning("PyTorch's %s kernel does not run on %s here (%s); those layers dequantize their weight at "
                    "every call", kind, device.type, why)  # fmt: skip
    return why is None


def require_kernel(quant: str, group_size: int | None, device: torch.device | str) -> None:
    """Refuse, in one line, a quantization whose kernel does not run on `device` (int8 per channel needs the int8
    kernel; int4 and int8 in groups of 32 the int4 one)."""
    bits = 8 if quant == "int8" else 4
    kind = "int8" if bits == 8 and not default_group_size(bits, group_size) else "int4"
    device = torch.device(device)
    if _probe(kind, device) is not None:
        works = (["int8 --group-size 0"] if _probe("int8", device) is None else []) + (
            ["int8", "int4"] if _probe("int4", device) is None else []
        )
        raise ConfigError(
            f"--quant {quant} needs PyTorch's {kind} kernel, which does not run on {device.type} here; "
            f"choose one of {', '.join(works + ['none'])}"
        )


def _pack_int4(q: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """camelid's [N, K/2] nibbles -> the int4 kernel's own layout for the device (on the CPU in blocks of rows,
    which that layout stores one after another, so the transient int32 copy stays small). With `inplace`, each
    block of rows is written over its own nibbles (same bytes, same place): no second copy of the matrix."""
    if q.device.type == "cuda":
        return torch.ops.aten._convert_weight_to_int4pack(q.contiguous(), 8)
    n = q.shape[0]
    step = PACK_ROWS if n % 64 == 0 else n
    out = q if inplace and step < n and q.is_contiguous() else None
    for r in range(0, n, step):
        block = q[r : r + step]
        u = torch.stack([block & 15, block >> 4], dim=-1).reshape(block.shape[0], -1).to(torch.int32)
        part = torch.ops.aten._convert_weight_to_int4pack_for_cpu(u, 1)
        if step == n:
            return part
        if out is None:  # filled in place: no list of parts, no concatenated copy
            out = torch.empty((n, *part.shape[1:]), dtype=part.dtype)
        out[r : r + block.shape[0]] = part
        del u, part
    return out


def _pack_int8_as_int4(q: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """int8 [N, K] -> the int4 kernel's layout of [N, 2K] values 0..15: each row's high nibbles of q + 128, then its
    low ones (the same bytes per row, so with `inplace` each block of rows is written over itself)."""
    n, k = q.shape
    step = PACK_ROWS if n % 64 == 0 and q.device.type == "cpu" else n  # CUDA's layout tiles rows: all at once
    out = q.view(torch.uint8) if inplace and step < n and q.is_contiguous() else None
    for r in range(0, n, step):
        u = (q[r : r + step].to(torch.int16) + 128).to(torch.uint8)
        part = _pack_int4(pack_nibbles(torch.cat([u >> 4, u & 15], dim=1)))
        if step == n:
            return part
        if out is None:
            out = torch.empty((n, *part.shape[1:]), dtype=part.dtype)
        out[r : r + u.shape[0]] = part
        del u, part
    return out


def _int4_mm(x: torch.Tensor, packed: torch.Tensor, group: int, scales_and_zeros: torch.Tensor) -> torch.Tensor:
    if x.device.type == "cuda":
        return torch.ops.aten._weight_int4pack_mm(x, packed, group, scales_and_zeros)
    return torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, group, scales_and_zeros)


def _scales_and_zeros(
    qw: QuantizedWeight, scale: torch.Tensor | None = None, dtype: torch.dtype = COMPUTE
) -> torch.Tensor:
    """[K/g, N, 2] in the compute dtype, as the int4 kernels take them: made in place, the offsets a block of rows
    at a time (no whole-matrix fp32 temporary)."""
    scale = qw.scale if scale is None else scale
    n = scale.shape[0]
    out = torch.empty((scale.shape[1], n, 2), dtype=dtype, device=scale.device)
    out[..., 0].copy_(scale.t())
    for r in range(0, n, DENSE_ROWS):
        out[:, r : r + DENSE_ROWS, 1].copy_(qw.zeros(slice(r, r + DENSE_ROWS)).t())
    return out


_CPU_BLOCK: dict[str, int] = {}


def _cpu_block() -> int:
    """Output rows per block of the int4 CPU kernel's layout, found by packing known values: 64 where PyTorch
    runs its AVX-512 kernels, 32 with AVX2; 0 when the layout is neither (then camelid keeps a portable copy)."""
    if "cpu" not in _CPU_BLOCK:
        u = torch.randint(0, 16, (128, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        _CPU_BLOCK["cpu"] = 0
        try:
            packed = _pack_int4(pack_nibbles(u))
            for block in (64, 32):
                if torch.equal(_unpack_int4_cpu(packed, 128, 64, block), u):
                    _CPU_BLOCK["cpu"] = block
                    break
        except RuntimeError:
            pass
    return _CPU_BLOCK["cpu"]


def _dense_dtype(device: torch.device, compute: torch.dtype) -> torch.dtype:
    """The dtype of a dequantized layer's matmul (prefill): `compute`, except fp32 on a CPU without native bf16
    (AVX2: oneDNN emulates bf16, measured 2x slower than MKL's fp32 for a 70 x 576 x 1536 matmul)."""
    if device.type == "cpu" and compute == torch.bfloat16 and not _cpu_has_bf16():
        return torch.float32
    return compute


@functools.cache
def _cpu_has_bf16() -> bool:
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _unpack_int4_cpu(packed: torch.Tensor, n: int, k: int, block: int | None = None) -> torch.Tensor:
    """The int4 CPU kernel's layout back to values 0..15, uint8 [N, K]: blocks of `block` output rows (64 with
    AVX-512, 32 with AVX2), each byte holding rows r (low nibble) and r + block/2 (high) of one column pair."""
    block = block or _cpu_block()
    v = packed.view(n // block, k // 2, 2, block // 2)
    return torch.stack([v & 15, v >> 4], dim=3).permute(0, 3, 4, 1, 2).reshape(n, k)


def _cpu_layout_known() -> bool:
    return _cpu_block() > 0


class QuantizedLinear(nn.Module):
    """`y = x W^T` with W packed (int8 per channel, int8 in groups of 32, or int4 in groups), held only in the
    kernels' own layout (a second, portable copy only where camelid cannot read that layout back)."""

    def __init__(
        self,
        qw: QuantizedWeight,
        device: torch.device | str = "cpu",
        consume: bool = False,
        compute: torch.dtype = COMPUTE,
    ) -> None:
        """With `consume`, `qw` is this module's to use up (its int4 bytes become the kernel's, in place).
        `compute`: the activations' dtype inside: bf16 (PyTorch's CPU kernels run fp32 activations unvectorized,
        measured 30x slower)."""
        super().__init__()
        device = torch.device(device)
        self.compute = compute
        self.dense_dtype = _dense_dtype(device, compute)  # a dequantized (prefill) matmul's
        self.out_features, self.in_features = qw.shape
        self.bits, self.group_size = qw.bits, qw.group_size
        q, scale = qw.q.to(device), qw.scale.to(device)
        self.plain: QuantizedWeight | None = None
        self.exact_top = 0  # an output head: its `exact_top` largest outputs per row recomputed in fp32
        if qw.bits == 8 and qw.group_size == 0:
            self.register_buffer("q", q.contiguous())
            self.register_buffer("scale", scale.to(compute))
            self.kernel = "int8" if _kernel_available("int8", device) else None
            return
        if not _kernel_available("int4", device):
            self.kernel, self.plain = None, qw.to(device)
            return
        readable = device.type == "cpu" and self.out_features % 64 == 0 and _cpu_layout_known()
        # where camelid cannot read the kernel's layout back, `plain` keeps qw: its bytes must survive the packing
        consume = consume and readable
        if qw.bits == 8:  # q + 128 = 16 hi + lo: one int4 matmul of [x, x] with [hi | lo] (2K columns, scales 16s, s)
            self.register_buffer("packed", _pack_int8_as_int4(q, inplace=consume and q is qw.q))
            groups = self.in_features // qw.group_size  # hi: (v - 8) 16 s; lo: (v - 8) s + 8 s; summed: s q
            sz = torch.zeros((2 * groups, self.out_features, 2), dtype=compute, device=device)
            st = scale.t()
            sz[:groups, :, 0], sz[groups:, :, 0], sz[groups:, :, 1] = 16 * st, st, 8 * st  # no fp32 temporaries
            self.register_buffer("sz", sz)
            self.kernel = "int8g"
        else:
            self.register_buffer("packed", _pack_int4(q, inplace=consume and q is qw.q))
            self.register_buffer("sz", _scales_and_zeros(qw.to(device), dtype=compute))
            self.kernel = "int4"
        if not readable:  # kept for dequantizing large inputs
            self.plain = qw.to(device)

    def extra_repr(self) -> str:
        scheme = f"int{self.bits}" + (f", group {self.group_size}" if self.group_size else ", per channel")
        return f"in={self.in_features}, out={self.out_features}, {scheme}, kernel={self.kernel or 'none'}"

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The dense weight [N, K] (for one large matmul; never kept), in `dtype` (default: the compute dtype)."""
        dtype = dtype or self.compute
        if self.plain is not None:
            return self.plain.dequantize(dtype)
        return self._dequantize_rows(0, self.out_features, dtype)

    def _dense_matmul(self, x2: torch.Tensor) -> torch.Tensor:
        """x W^T through a dense copy of W (in x2's dtype) made DENSE_ROWS output rows at a time (a large output
        head never has a whole dense copy)."""
        n, dtype = self.out_features, x2.dtype
        if n <= DENSE_ROWS or self.plain is not None:
            return F.linear(x2, self.dequantize(dtype))
        parts = [F.linear(x2, self._dequantize_rows(r, min(n, r + DENSE_ROWS), dtype)) for r in range(0, n, DENSE_ROWS)]
        return torch.cat(parts, -1)

    def _dequantize_rows(self, start: int, end: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        k, g = self.in_features, self.group_size
        rows, dtype = end - start, dtype or self.compute
        if self.kernel == "int8":
            return (self.q[start:end].float() * self.scale[start:end].float()[:, None]).to(dtype)
        if self.kernel == "int8g":
            v = _unpack_int4_cpu(self.packed[start:end], rows, 2 * k).to(torch.int16)
            u = v[:, :k] * 16 + v[:, k:]
            scale = self.sz[k // g :, start:end, 0].t().float()
            return ((u - 128).float().view(rows, k // g, g) * scale[..., None]).view(rows, k).to(dtype)
        u = _unpack_int4_cpu(self.packed[start:end], rows, k).float() - 8
        scale, zero = self.sz[:, start:end, 0].t().float(), self.sz[:, start:end, 1].t().float()
        return (u.view(rows, k // g, g) * scale[..., None] + zero[..., None]).view(rows, k).to(dtype)

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows `ids` of the dense weight, fp32 (a tied embedding's lookup), gathered straight from the packed
        layout (no loop, no dense copy: compiles into the decode step)."""
        if self.plain is not None:
            return self.plain.dequantize(torch.float32, rows=ids)
        if self.kernel == "int8":
            return self.q[ids].float() * self.scale[ids].float()[:, None]
        k, g = self.in_features, self.group_size

        block = _cpu_block()
        half = block // 2

        def values(packed: torch.Tensor, k: int) -> torch.Tensor:
            v = packed.view(self.out_features // block, k // 2, 2, half)
            r = ids % block
            sel = v[ids // block, :, :, r % half]  # (B, K/2, 2): the row's column pairs
            return ((sel >> (4 * (r // half)).to(torch.uint8)[:, None, None]) & 15).reshape(-1, k)

        if self.kernel == "int8g":
            v = values(self.packed, 2 * k).to(torch.int16)
            u = v[:, :k] * 16 + v[:, k:] - 128
            scale = self.sz[k // g :, ids, 0].t().float()
            return (u.float().view(-1, k // g, g) * scale[..., None]).view(-1, k)
        u = values(self.packed, k).float() - 8
        scale, zero = self.sz[:, ids, 0].t().float(), self.sz[:, ids, 1].t().float()
        return (u.view(-1, k // g, g) * scale[..., None] + zero[..., None]).view(-1, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features)
        if self.kernel is None or x2.shape[0] > DEQUANT_ROWS:
            y = self._dense_matmul(x2.to(self.dense_dtype))
        elif self.kernel == "int8":
            y = torch.ops.aten._weight_int8pack_mm(x2.to(self.compute), self.q, self.scale)
        elif self.kernel == "int8g":
            x2 = x2.to(self.compute)
            y = _int4_mm(torch.cat([x2, x2], -1), self.packed, self.group_size, self.sz)
        else:
            y = _int4_mm(x2.to(self.compute), self.packed, self.group_size, self.sz)
        if self.exact_top:
            y = self._exact_top(x.reshape(-1, self.in_features), y)
        return y.to(x.dtype).reshape(*shape[:-1], self.out_features)

    def _exact_top(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """`y` (rows, N) in fp32 with each row's `exact_top` largest entries recomputed exactly (fp32 activations
        against the packed rows): the kernels' bf16 output holds a logit of 25 only to 0.125, coarser than the
        gap between a small model's top two tokens, so greedy choices and log-probs would follow the rounding."""
        y = y.float()
        top = y.topk(min(self.exact_top, self.out_features), dim=-1).indices  # (rows, k)
        w = self.rows(top.flatten()).view(*top.shape, self.in_features)  # (rows, k, K) fp32
        exact = (w @ x.float()[:, :, None]).squeeze(-1)
        return y.scatter(-1, top, exact)


class QuantizedEmbedding(nn.Module):
    """Rows of a quantized [vocab, dim] table, dequantized as they are looked up; a tied model's embedding reads
    them from its output head's packed weight (one copy for both)."""

    def __init__(self, qw: QuantizedWeight | None, device: torch.device | str = "cpu", source=None) -> None:
        super().__init__()
        self._source = source  # not a submodule: the output head owns (and saves, and moves) those buffers
        if source is not None:
            self.num_embeddings, self.embedding_dim = source.out_features, source.in_features
            self.qw = None
        else:
            self.num_embeddings, self.embedding_dim = qw.shape
            self.qw = qw.to(device)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        rows = self._source.rows(flat) if self._source is not None else self.qw.dequantize(torch.float32, flat)
        return rows.view(*ids.shape, self.embedding_dim)


# -- the module swap ----------------------------------------------------------------------------------------


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def install(
    model: nn.Module,
    quantized: dict[str, QuantizedWeight],
    device: torch.device | str = "cpu",
    tied: bool = False,
    consume: bool = False,
) -> None:
    """Swap the modules whose weights are quantized: `<name>.weight` -> QuantizedLinear / QuantizedEmbedding.
    Entries are taken out of `quantized` as their modules are built, so the portable copies are freed one by one
    (peak memory: the packed model plus one tensor); with `consume` their int4 bytes are converted in place.
    With `tied`, the embedding's entry makes the output head too."""
    from camelid.memory import trim

    # smallest first: a module holds less than its portable copy, so the largest conversion comes when least is held
    freed = 0
    for name in sorted(quantized, key=lambda n: quantized[n].nbytes()):
        trim(freed)  # the portable copies freed so far go back to the system, not into the heap's free lists
        qw = quantized.pop(name)
        freed = qw.nbytes()
        module_name = name.removesuffix(".weight")
        if module_name == "tok_embeddings" and tied:
            head = QuantizedLinear(qw, device, consume)
            head.exact_top = EXACT_TOP
            _set(model, "output", head)
            _set(model, module_name, QuantizedEmbedding(None, device, source=head))
        elif module_name == "tok_embeddings":
            _set(model, module_name, QuantizedEmbedding(qw, device))
        else:
            layer = QuantizedLinear(qw, device, consume)
            layer.exact_top = EXACT_TOP if module_name == "output" else 0
            _set(model, module_name, layer)
        del qw
    trim()


def quantize_model(model: nn.Module, bits: int, group_size: int) -> nn.Module:
    """Quantize a dense model in place (each linear and the embedding), one layer at a time."""
    tied = getattr(model.args, "tie_embeddings", False)
    state = {k: v for k, v in model.state_dict().items() if k != "output.weight" or not tied}
    device = next(model.parameters()).device
    _, quantized = quantize_state(state, bits, group_size)
    install(model, quantized, device, tied=tied)
    return model


def quantized_bytes(model: nn.Module) -> int:
    """Bytes of weights the model holds in memory: parameters, buffers and quantized tables (a KV cache set up
    for generation is not counted)."""
    from camelid.model.kv_cache import KVCache

    cache = {id(b) for m in model.modules() if isinstance(m, KVCache) for b in m.buffers()}
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    total += sum(b.numel() * b.element_size() for b in model.buffers() if id(b) not in cache)
    for m in model.modules():
        if isinstance(m, QuantizedEmbedding) and m.qw is not None:
            total += m.qw.nbytes()
    return total


def linear_bytes(n: int, k: int, bits: int, group_size: int, scale_bytes: int = 2) -> int:
    """Bytes a QuantizedLinear [n, k] holds: the packed values and its scales (and offsets), `scale_bytes` each
    (2 in bf16; an output head computes, and keeps them, in fp32)."""
    groups = k // group_size if group_size else 1
    if bits == 8 and not group_size:
        return n * k + scale_bytes * n
    if bits == 8:  # [hi | lo]: 2K int4 columns, each group with a scale and an offset
        return n * k + 2 * (groups * n * 2 * scale_bytes)
    return n * k // 2 + groups * n * 2 * scale_bytes


def table_bytes(n: int, k: int, bits: int, group_size: int) -> int:
    """Bytes an untied QuantizedEmbedding [n, k] holds: camelid's portable layout (fp16 scales and minimums)."""
    groups = k // group_size if group_size else 1
    return n * k * bits // 8 + groups * n * (2 if bits == 8 else 4)


def model_bytes(args, quant: str = "none", group_size: int | None = None, dtype_bytes: int = 2) -> int:
    """In-memory bytes of a model of shape `args` (ModelArgs) with its matrices as `quant` ("none", "int8",
    "int4"): norms stay dense in `dtype_bytes`; a quantized embedding takes its table's packed size."""
    d, hd = args.dim, args.head_size
    mats = [(args.n_heads * hd, d), (args.kv_heads * hd, d), (args.kv_heads * hd, d), (d, args.n_heads * hd),
            (args.ffn_hidden, d), (d, args.ffn_hidden), (args.ffn_hidden, d)]  # fmt: skip
    norms = (2 * args.n_layers + 1) * d * dtype_bytes
    if quant == "none":
        per_layer = sum(n * k for n, k in mats) * dtype_bytes
        tables = 1 if args.tie_embeddings else 2
        return args.n_layers * per_layer + tables * args.vocab_size * d * dtype_bytes + norms
    bits = {"int8": 8, "int4": 4}[quant]
    g = default_group_size(bits, group_size)
    per_layer = sum(linear_bytes(n, k, bits, g) for n, k in mats)
    tb, tg = layout_for("output.weight", bits, g, d)
    head = linear_bytes(args.vocab_size, d, tb, tg)  # the output head; a tied embedding reads its rows
    table = 0 if args.tie_embeddings else table_bytes(args.vocab_size, d, tb, tg)
    return args.n_layers * per_layer + head + table + norms


def kv_cache_bytes(args, tokens: int, dtype_bytes: int = 2) -> int:
    """A KV cache for `tokens` positions of one sequence."""
    return 2 * args.n_layers * tokens * args.kv_heads * args.head_size * dtype_bytes
