"""llama.cpp's own tools, through llama-cpp-python: its quantizer and a plain greedy / teacher-forced runner.
Shared by the peer tests and benchmarks/decode_cpu.py."""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

FTYPES = {"F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18}
GGML_TYPE_F32 = 0


def quantize(src: Path, dst: Path, ftype: str, threads: int = 2) -> Path:
    """llama.cpp's quantizer (`llama-quantize`): `src` GGUF -> `dst` with llama_ftype `ftype` (its own mix of
    types: Q4_K_M, for instance, puts some tensors in Q6_K; a tied embedding takes the output's type)."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[ftype]
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({src} -> {ftype}) returned {rc}")
    return dst


def runner(path: Path, threads: int = 2, n_ctx: int = 1024, logits_all: bool = False, f32_cache: bool = False):
    import llama_cpp

    kw = dict(type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32) if f32_cache else {}
    return llama_cpp.Llama(
        model_path=str(path), n_ctx=n_ctx, n_batch=512, n_ubatch=512, n_threads=threads, n_threads_batch=threads,
        logits_all=logits_all, verbose=False, seed=0, **kw,
    )  # fmt: skip


def last_logits(llm) -> np.ndarray:
    """The logits of the last evaluated token (llama.cpp's output buffer, no copy)."""
    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))


def greedy(llm, ids: list[int], n: int) -> list[int]:
    llm.reset()
    llm.eval(ids)
    out = []
    for _ in range(n):
        out.append(int(np.argmax(last_logits(llm))))
        llm.eval([out[-1]])
    return out


def teacher_forced(llm, ids: list[int]) -> np.ndarray:
    """Logits at every position (the runner needs logits_all=True)."""
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)
