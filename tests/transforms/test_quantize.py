"""Weight-only int8 / int4: packed layouts, the kernels against a dense matmul of the same values, the module swap,
the in-memory size estimate, and generation on a quantized model."""

import pytest
import torch

from camelid.errors import ConfigError
from camelid.generate import GREEDY, decoder_for, generate_ids
from camelid.model import build_model, preset
from camelid.model.args import ModelArgs
from camelid.transforms import quant_weight as W
from camelid.transforms import quantize as Q

LAYOUTS = [(8, 0), (8, 32), (4, 32), (4, 64), (4, 128)]


def weight(n=128, k=256, seed=0):
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) * 0.05


@pytest.mark.parametrize("bits,group", LAYOUTS)
def test_quantization_error_is_what_the_width_allows(bits, group):
    w = weight()
    qw = W.quantize_weight(w, bits, group)
    err = (qw.dequantize() - w).pow(2).mean().sqrt() / w.pow(2).mean().sqrt()
    assert err < {8: 0.01, 4: 0.12}[bits], float(err)
    assert qw.nbytes() < w.numel() * (1.2 if bits == 8 else 0.7)  # packed: about a byte / half a byte a weight


@pytest.mark.parametrize("rows", [1, 5, 40])  # decode (the packed kernel) and a prefill (dense, chunked)
@pytest.mark.parametrize("bits,group", LAYOUTS)
def test_quantized_linear_equals_a_dense_matmul_of_its_values(bits, group, rows):
    qw = W.quantize_weight(weight(), bits, group)
    lin = Q.QuantizedLinear(qw)
    assert lin.kernel == {(8, 0): "int8"}.get((bits, group), "int8g" if bits == 8 else "int4")
    x = torch.randn(rows, 256, generator=torch.Generator().manual_seed(1))
    ref = x @ qw.dequantize().t()
    got = lin(x)
    assert got.shape == ref.shape
    # bf16 activations and bf16 scales: agreement to bf16 precision, relative to the output's size
    assert (got - ref).abs().max() <= 0.02 * ref.abs().max()


@pytest.mark.parametrize("bits,group", LAYOUTS)
def test_rows_of_the_packed_weight_are_its_dequantized_rows(bits, group):
    qw = W.quantize_weight(weight(), bits, group)
    lin = Q.QuantizedLinear(qw)
    ids = torch.tensor([0, 5, 63, 64, 127, 5])
    ref = qw.dequantize(rows=ids)
    tol = 0.01 * float(ref.abs().max())  # the kernels hold scales and offsets (and a dense copy) in bf16
    assert (lin.rows(ids) - ref).abs().max() <= tol
    assert (lin.dequantize(torch.float32) - qw.dequantize()).abs().max() <= tol


def test_the_cpu_int4_layout_is_read_back_exactly():
    assert Q._cpu_layout_known()  # else every int4 layer keeps a second, portable copy
    u = torch.randint(0, 16, (256, 128), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    packed = Q._pack_int4(W.pack_nibbles(u))
    assert torch.equal(Q._unpack_int4_cpu(packed, 256, 128), u)
    same = W.pack_nibbles(u)
    assert torch.equal(Q._pack_int4(same, inplace=True), packed)  # converted in place, same result


@pytest.mark.parametrize("block", [64, 32, 0])  # AVX-512's layout, AVX2's, one camelid cannot read
@pytest.mark.parametrize("bits,group", [(8, 32), (4, 32)])
def test_a_consumed_weight_reads_back_whatever_the_cpu_layout(monkeypatch, bits, group, block):
    """Packing in place (a loaded model's weights become the kernel's bytes) must not destroy the copy kept
    where the layout cannot be read back: on an AVX2 machine the embedded model once answered "omuuu Iu"."""
    if block and block != Q._cpu_block():
        pytest.skip(f"this CPU's int4 layout has blocks of {Q._cpu_block()} rows")
    monkeypatch.setitem(Q._CPU_BLOCK, "cpu", block)
    qw = W.quantize_weight(weight(n=512), bits, group)  # more rows than are packed at a time: packed in place
    ref = qw.dequantize().clone()
    lin = Q.QuantizedLinear(qw, consume=True)
    ids = torch.tensor([0, 5, 31, 32, 63, 64, 127, 300, 511])
    tol = 0.01 * float(ref.abs().max())
    assert (lin.dequantize(torch.float32) - ref).abs().max() <= tol
    assert (lin.rows(ids) - ref[ids]).abs().max() <= tol
    x = torch.randn(3, 256, generator=torch.Generator().manual_seed(1))
    assert (lin(x) - x @ ref.t()).abs().max() <= 0.02 * (x @ ref.t()).abs().max()


def test_bad_layouts_are_one_clear_error():
    with pytest.raises(ConfigError, match="int4 group size 48 is not supported; choose one of 32, 64, 128, 256"):
        W.quantize_weight(weight(), 4, 48)
    with pytest.raises(ConfigError, match="int8 group size 64 is not supported"):
        W.quantize_weight(weight(), 8, 64)
    with pytest.raises(ConfigError, match="group size 128 does not divide layers.0.w's 192 input columns"):
        W.check_quantizable((64, 192), 4, 128, "layers.0.w")


def test_a_kernel_missing_on_the_device_is_refused_when_asked_for(monkeypatch):
    monkeypatch.setattr(Q, "_probe", lambda kind, device: "not built" if kind == "int4" else None)
    with pytest.raises(ConfigError, match="--quant int4 needs PyTorch's int4 kernel, which does not run on cpu here; "
                       "choose one of int8 --group-size 0, none"):  # fmt: skip
        Q.require_kernel("int4", None, "cpu")
    with pytest.raises(ConfigError, match="--quant int8 needs PyTorch's int4 kernel"):
        Q.require_kernel("int8", None, "cpu")  # int8 in groups of 32 (the default) runs on the int4 kernel
    Q.require_kernel("int8", 0, "cpu")  # per channel: the int8 kernel, present


def test_a_missing_kernel_falls_back_with_one_line(monkeypatch, caplog):
    monkeypatch.setattr(Q, "_probe", lambda kind, device: "not built")
    monkeypatch.setattr(Q, "_WARNED", set())
    qw = W.quantize_weight(weight(), 4, 32)
    lin = Q.QuantizedLinear(qw)
    Q.QuantizedLinear(qw)
    assert lin.kernel is None and lin.plain is not None
    warnings = [r.getMessage() for r in caplog.records if "kernel does not run" in r.getMessage()]
    assert len(warnings) == 1 and "dequantize their weight at every call" in warnings[0]
    x = torch.randn(1, 256)
    ref = x @ qw.dequantize().t()
    assert (lin(x) - ref).abs().max() <= 0.02 * ref.abs().max()


def spread_model(seed=5):
    m = build_model(preset("debug"), seed=seed).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.mul_(8)
    return m


@pytest.mark.parametrize("bits,group", [(8, 0), (8, 32), (4, 32)])
@pytest.mark.parametrize("length", [12, 40])  # 12 rows: the packed kernels; 40: a prefill's dense matmuls
def test_a_quantized_model_computes_like_its_dense_twin(bits, group, length):
    dense = build_model(preset("debug"), seed=5).eval()
    quant = Q.quantize_model(build_model(preset("debug"), seed=5).eval(), bits, group)
    assert not any(isinstance(m, torch.nn.Linear) for m in quant.modules())  # every matrix swapped
    assert Q.quantized_bytes(quant) < Q.quantized_bytes(dense) * (0.35 if bits == 8 else 0.25)
    tokens = torch.randint(0, 512, (1, length), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref, got = dense(tokens), quant(tokens)
    rel = float((got - ref).norm() / ref.norm())
    assert rel < {8: 0.03, 4: 0.2}[bits], rel


@pytest.mark.slow
@pytest.mark.parametrize("bits,group", [(8, 0), (8, 32), (4, 32)])
def test_quantized_decoder_compiled_equals_eager_and_reuses_its_cache(bits, group):
    model = Q.quantize_model(spread_model(), bits, group)
    prompts = [[5, 17, 99, 3, 250, 41], [7, 7, 300]]
    eager, _ = generate_ids(model, prompts, 20, GREEDY)
    compiled, _ = generate_ids(model, prompts, 20, GREEDY, compile=True)
    assert [r.ids for r in compiled] == [r.ids for r in eager]
    decoder = decoder_for(model, "default")
    before = decoder.allocations
    again, _ = generate_ids(model, prompts, 20, GREEDY, compile=True)
    assert decoder.allocations == before == 1 and [r.ids for r in again] == [r.ids for r in eager]


@pytest.mark.parametrize("quant,group", [("int8", None), ("int8", 32), ("int4", None), ("int4", 128), ("none", None)])
def test_the_size_estimate_is_what_a_quantized_model_holds(quant, group):
    args = ModelArgs(dim=256, n_layers=2, n_heads=4, vocab_size=1024, hidden_dim=512, max_seq_len=64)
    model = build_model(args, seed=0).to(torch.bfloat16)
    if quant != "none":
        bits = 8 if quant == "int8" else 4
        Q.quantize_model(model, bits, W.default_group_size(bits, group))
    held = Q.quantized_bytes(model)
    assert abs(Q.model_bytes(args, quant, group) - held) <= 0.02 * held


def test_the_paper_models_fit_where_the_paper_says():
    gb = 1e9
    assert Q.model_bytes(preset("llama-13b"), "int4") < 16 * gb * 0.9  # a 16 GB GPU, with room for a cache
    assert Q.model_bytes(preset("llama-65b"), "int4") < 141 * gb * 0.5  # one H200 (141 GB), half of it
    assert Q.model_bytes(preset("llama-13b"), "none") > 24 * gb  # bf16 does not fit 16 GB


@pytest.mark.slow
def test_a_compiled_decoder_notices_modules_swapped_after_compiling():
    model = spread_model()
    prompts = [[5, 17, 99, 3, 250, 41]]
    generate_ids(model, prompts, 8, GREEDY, compile=True)  # compiled for the dense weights
    Q.quantize_model(model, 4, 32)  # the model's linears replaced in place
    eager, _ = generate_ids(model, prompts, 16, GREEDY)
    compiled, _ = generate_ids(model, prompts, 16, GREEDY, compile=True)
    assert compiled[0].ids == eager[0].ids
