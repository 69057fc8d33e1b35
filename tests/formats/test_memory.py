"""Loading needs little more than the model's final size: mmap, meta device, one tensor converted at a time, and
quantized weights packed straight from the file's blocks (a dense copy of the model never exists)."""

import json
import os
import subprocess
import sys

import pytest

# Peak RSS is the process's VmHWM: unlike getrusage's ru_maxrss, which execve carries over from the forking
# process (pytest, holding other tests' models), it starts afresh in the probe.
PROBE = """
import json, sys, torch
from camelid.formats import load
from camelid.formats.gguf_file import GGUFFile
from camelid.transforms.quantize import _cpu_layout_known, _probe, quantized_bytes
import camelid.formats.gguf_blocks, camelid.formats.gguf_format, camelid.tokenizer.bpe  # code, not the load's data
for kind in ("int8", "int4"):
    _probe(kind, torch.device("cpu"))  # the kernels' first call maps their libraries' pages
_cpu_layout_known()
def hwm_kb():
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
before = hwm_kb()
quant = None if sys.argv[3] == "keep" else sys.argv[3]
m = load(sys.argv[1], dtype=getattr(torch, sys.argv[2]), quant=quant)
final = quantized_bytes(m.model)
with torch.inference_mode():  # touch every page, as inference would
    for t in list(m.model.parameters()) + list(m.model.buffers()):
        float(t.float().sum()) if t.numel() < 1e6 else float(t[0].float().sum() + t[-1].float().sum())
peak = hwm_kb()
dense = [n for n, p in m.model.named_parameters() if p.dim() == 2]
print(json.dumps({"final_mb": final / 1e6, "growth_mb": (peak - before) / 1e3, "file_mb": m.source.stat().st_size / 1e6,
                  "weights_mb": sum(t.nbytes for t in GGUFFile(m.source).tensors) / 1e6, "dense_matrices": dense}))
"""


def measure(model: str, dtype: str, quant: str = "none") -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", PROBE, model, dtype, quant], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_gguf_load_peak_memory(dtype):
    r = measure("smollm2-135m", dtype)
    print(
        f"smollm2-135m as {dtype}: final {r['final_mb']:.0f} MB, peak RSS growth {r['growth_mb']:.0f} MB, "
        f"file {r['file_mb']:.0f} MB"
    )
    # Peak RSS also counts the GGUF file's mapped pages as they are read. What must never happen is a second
    # full copy of the model: for a 16-bit target, a transient fp32 model; for fp32, a second fp32 model.
    full_fp32 = r["final_mb"] * (2 if dtype == "bfloat16" else 1)
    assert r["growth_mb"] < r["final_mb"] + full_fp32


@pytest.mark.parametrize("quant", ["int4", "keep"])
def test_quantized_load_stays_packed(quant):
    r = measure("smollm2-135m", "float32", quant)
    print(
        f"smollm2-135m (Q4_1 file, {r['weights_mb']:.1f} MB of weights) loaded as {quant}: "
        f"final {r['final_mb']:.1f} MB, "
        f"peak RSS growth {r['growth_mb']:.1f} MB = {r['growth_mb'] / r['weights_mb']:.2f}x the file's weights"
    )
    assert r["dense_matrices"] == []  # every matrix packed: none became a dense parameter
    assert r["final_mb"] < r["weights_mb"] * 1.25  # int4 layers + the int8 embedding, bf16 scales
    assert r["growth_mb"] <= 1.5 * r["weights_mb"]  # the bound; a dense bf16 copy alone is 2.8x
