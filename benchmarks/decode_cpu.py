"""Batch-1 decode speed on the CPU: camelid, llama.cpp and transformers on the same SmolLM2-135M weights.

128 new tokens after a short prompt, greedy, with 1 and 2 threads, each measured in this one process.
camelid and transformers run the Q4_1 file's weights dequantized to fp32 (camelid also in bf16, and with
its decode step compiled; compile time is excluded); llama.cpp runs the Q4_1 file itself and an F32 GGUF
that camelid writes from it. Then a torch.profiler table of where camelid's decode
time goes. Results go to benchmarks/results/decode_cpu_DATE.json.

    PYTHONPATH=. python benchmarks/decode_cpu.py
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from camelid.formats import load, resolve
from camelid.formats.convert import convert
from camelid.generate import generate_ids

PROMPT = "The history of the Roman Empire spans more than a thousand years, from"
NEW = 128


def camelid_decode(loaded, ids, compile_: bool = False) -> float:
    generate_ids(loaded.model, [ids], 8, compile=compile_)  # warm-up
    rows, stats = generate_ids(loaded.model, [ids], NEW, compile=compile_)
    assert len(rows[0].ids) == NEW
    return stats.tokens_per_s


def llama_cpp_decode(path: Path, ids, threads: int) -> float:
    import numpy as np
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=512, n_threads=threads, n_threads_batch=threads, verbose=False)
    llm.eval(ids)
    t0 = time.perf_counter()
    for _ in range(NEW):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        llm.eval([nxt])
    return NEW / (time.perf_counter() - t0)


def hf_decode(hf_dir: Path, ids) -> float:
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32).eval()
    x = torch.tensor([ids])
    kw = dict(max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        model.generate(x, max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=0)
        t0 = time.perf_counter()
        model.generate(x, **kw)
        dt = time.perf_counter() - t0
    return NEW / dt


def profile_camelid(loaded, ids) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        generate_ids(loaded.model, [ids], 32)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)


def main() -> int:
    res: dict = {
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "new_tokens": NEW,
    }
    q4 = resolve("smollm2-135m")
    loaded = load(q4)
    loaded_bf16 = load(q4, dtype=torch.bfloat16)
    ids = loaded.tokenizer.encode(PROMPT)
    with tempfile.TemporaryDirectory() as tmp:
        f32 = convert(q4, Path(tmp) / "f32.gguf", to="gguf", quant="F32")
        hf = convert(q4, Path(tmp) / "hf", to="hf")
        for threads in (1, 2):
            torch.set_num_threads(threads)
            row = {
                "camelid_fp32": camelid_decode(loaded, ids),
                "camelid_fp32_compiled": camelid_decode(loaded, ids, compile_=True),
                "camelid_bf16": camelid_decode(loaded_bf16, ids),
            }
            try:
                row["llama_cpp_q4_1"] = llama_cpp_decode(q4, ids, threads)
                row["llama_cpp_f32"] = llama_cpp_decode(f32, ids, threads)
            except ImportError:
                row["llama_cpp"] = "not installed"
            row["transformers_fp32"] = hf_decode(hf, ids)
            res[f"threads_{threads}"] = row
            print(
                f"{threads} thread(s): "
                + ", ".join(f"{k} {v:.1f} tok/s" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()),
                flush=True,
            )
    torch.set_num_threads(2)
    table = profile_camelid(loaded, ids)
    res["camelid_profile_top15"] = table
    print(table)
    out = Path(os.environ.get("OUT", "benchmarks/results"))
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"decode_cpu_{res['date']}.json"
    path.write_text(json.dumps(res, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
