"""Every GGUF tensor type camelid reads comes out with the right values and orientation."""

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from camelid.formats.gguf_format import READ_TYPES, _reader, _tensor  # noqa: E402

ROWS, COLS = 8, 512
Q = gguf.GGMLQuantizationType


def raw_blocks(qtype, rng):
    """Random blocks of a K-quant with sane fp16 scales (random bytes there could be inf or nan)."""
    block, size = gguf.constants.GGML_QUANT_SIZES[qtype]
    data = rng.integers(0, 256, size=(ROWS, COLS // block * size), dtype=np.uint8)
    half = np.frombuffer(np.float16(0.01).tobytes(), dtype=np.uint8)
    for b in range(COLS // block):
        off = b * size
        if qtype == Q.Q6_K:
            data[:, off + size - 2 : off + size] = half  # d is the last field of a Q6_K block
        else:
            data[:, off : off + 2] = half
            if qtype in (Q.Q4_K, Q.Q5_K, Q.Q4_1):
                data[:, off + 2 : off + 4] = half  # dmin / m
    return data


@pytest.fixture(scope="module")
def typed_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("gguf") / "types.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    dense = rng.standard_normal((ROWS, COLS)).astype(np.float32)
    expected = {}
    for name in READ_TYPES:
        qtype = Q[name]
        if name == "F32":
            w.add_tensor(name, dense)
            expected[name] = dense
        elif name == "F16":
            w.add_tensor(name, dense.astype(np.float16))
            expected[name] = dense.astype(np.float16).astype(np.float32)
        else:
            raw = (
                gguf.quants.quantize(dense, qtype)
                if name in ("BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1")
                else raw_blocks(qtype, rng)
            )
            w.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=qtype)
            with np.errstate(all="ignore"):  # random bytes in the other fields may decode to inf or nan
                expected[name] = gguf.quants.dequantize(raw, qtype).reshape(ROWS, COLS)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path, expected, dense


@pytest.mark.parametrize("name", READ_TYPES)
def test_read_type(typed_file, name):
    path, expected, dense = typed_file
    reader = _reader(path)
    (t,) = [t for t in reader.tensors if t.name == name]
    assert t.tensor_type.name == name
    with np.errstate(all="ignore"):
        got = _tensor(t, path, torch.float32)
    assert got.shape == (ROWS, COLS)  # [out, in], as camelid's Linear weights
    np.testing.assert_array_equal(got.numpy(), expected[name].astype(np.float32))
    if name in ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"):  # quantized from `dense`: close to it
        tol = {"F32": 0, "F16": 1e-3, "BF16": 2e-2, "Q8_0": 3e-2, "Q4_0": 0.5, "Q4_1": 0.5, "Q5_0": 0.25, "Q5_1": 0.25}[
            name
        ]
        assert np.abs(got.numpy() - dense).max() <= tol * np.abs(dense).max() + 1e-7
