"""How many sequences one GPU holds: KV-cache slots per model size, from camelid's own size formulas.

For each paper model (and Llama 2/3), the weights' bytes (`model_bytes`: bf16, or int4 in groups of 32) and one
sequence's KV cache (`kv_cache_bytes`, bf16 keys and values of every layer) at a given context; the slots are
what is left of the GPU's memory, after the weights and a reserve for activations and the allocator, divided by
one sequence's cache. On paper only: no GPU is used.

    PYTHONPATH=. python benchmarks/kv_slots.py [--gib 139] [--reserve 0.1] [--context 2048 4096]
"""

from __future__ import annotations

import argparse

from camelid.model import preset
from camelid.transforms.quantize import kv_cache_bytes, model_bytes

MODELS = ["llama-7b", "llama-13b", "llama-33b", "llama-65b", "llama2-7b", "llama2-70b", "llama3-8b", "llama3-70b"]
GIB = 2**30


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gib", type=float, default=139.0, help="GPU memory, GiB (an H200 shows about 139)")
    ap.add_argument("--reserve", type=float, default=0.1, help="fraction kept back for activations and allocator")
    ap.add_argument("--context", type=int, nargs="+", default=[2048, 4096])
    a = ap.parse_args()
    usable = a.gib * (1 - a.reserve) * GIB
    head = ["model", "weights bf16 GiB", "weights int4 GiB"]
    head += [f"KV/seq @{c} GiB" for c in a.context]
    head += [f"slots @{c} {w}" for w in ("bf16", "int4") for c in a.context]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name in MODELS:
        args = preset(name)
        w = {q: model_bytes(args, "none" if q == "bf16" else "int4") for q in ("bf16", "int4")}
        kv = {c: kv_cache_bytes(args, c) for c in a.context}
        row = [name, f"{w['bf16'] / GIB:.1f}", f"{w['int4'] / GIB:.1f}", *(f"{kv[c] / GIB:.2f}" for c in a.context)]
        row += [str(max(0, int((usable - w[q]) // kv[c]))) for q in ("bf16", "int4") for c in a.context]
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
