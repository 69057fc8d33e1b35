"""Evaluation builds logits only for the rows it scores, and reports progress after every batch.

Before: `camelid eval --tasks mmlu --limit 1` peaked at 9.1 GB for a 135M model, building the whole
(batch, tokens, 49152) logits; on this probe's 16 items that was 5.75 GB of peak growth (now about 0.3 GB)."""

import json
import os
import subprocess
import sys

# Peak RSS as VmHWM in a fresh process (see tests/formats/test_memory.py).
PROBE = """
import json, sys
from camelid.formats import load
from camelid.eval.lm import Evaluator
from camelid.eval import tasks as T
def hwm_kb():
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
m = load("smollm2-135m")
ev = Evaluator(m.model, m.tokenizer, batch_size=8)
ev.loglikelihood([("The capital of France is", " Paris")])  # the kernels' first call, before the baseline
pairs = T.mmlu_prompts(T.load_mmlu(), 5)[:16]
T.load_mmlu = lambda data_dir=None: [item for item, _ in pairs]  # the first 16 items, 5-shot as in the paper
before = hwm_kb()
calls = []
T.run_mmlu(ev, 5, None, progress=lambda done, total: calls.append([done, total]))
longest = max(len(m.tokenizer.encode(p)) for _, p in pairs)
print(json.dumps({"growth_mb": (hwm_kb() - before) / 1e3, "calls": calls, "longest": longest,
                  "vocab": m.args.vocab_size}))
"""


def test_mmlu_memory_and_progress():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    full_logits_mb = 8 * r["longest"] * r["vocab"] * 4 / 1e6  # one batch's (B, T, V) fp32 logits
    print(f"16 MMLU items, batch 8: peak growth {r['growth_mb']:.0f} MB; full logits would be {full_logits_mb:.0f} MB")
    assert r["growth_mb"] < full_logits_mb / 2
    assert r["calls"] == [[0, 16], [8, 16], [16, 16]]  # shown at once, then one update per batch
