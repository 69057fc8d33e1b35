"""Loading needs little more than the model's final size: mmap, meta device, one tensor converted at a time."""

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json, resource, sys, torch
from camelid.formats import load
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
m = load(sys.argv[1], dtype=getattr(torch, sys.argv[2]))
final = sum(p.numel() * p.element_size() for p in m.model.parameters())
for p in m.model.parameters():  # touch every page, as inference would
    float(p.float().sum()) if p.numel() < 1e6 else float(p[0].float().sum() + p[-1].float().sum())
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
file_mb = m.source.stat().st_size / 1e6
print(json.dumps({"final_mb": final / 1e6, "growth_mb": (peak - before) / 1e3, "file_mb": file_mb}))
"""


def measure(model: str, dtype: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", PROBE, model, dtype], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_gguf_load_peak_memory(dtype):
    r = measure("smollm2-135m", dtype)
    print(
        f"smollm2-135m as {dtype}: final {r['final_mb']:.0f} MB, peak RSS growth {r['growth_mb']:.0f} MB, "
        f"file {r['file_mb']:.0f} MB"
    )
    # Peak RSS also counts the GGUF file's mapped pages and the gguf reader's parsed metadata (~170 MB for the
    # 49K-token vocabulary and merges). What must never happen is a second full copy of the model: for a
    # 16-bit target, a transient fp32 model; for fp32, a second fp32 model.
    full_fp32 = r["final_mb"] * (2 if dtype == "bfloat16" else 1)
    assert r["growth_mb"] < r["final_mb"] + full_fp32
