"""Batch-1 decode and prefill on the CPU: camelid's packed int8 / int4 and bf16 against llama.cpp on the same files.

SmolLM2-135M: camelid writes an F32 GGUF of the embedded model, llama.cpp's own quantizer makes F16, Q8_0 and
Q4_0 files from it, and each pair runs the same file: camelid bf16 vs llama.cpp F16, camelid int8 (the Q8_0
blocks as int8 in groups of 32) vs Q8_0, camelid int4 (the Q4_0 blocks as int4 g32) vs Q4_0; also camelid int8
with one scale per channel (PyTorch's int8 kernel). camelid's decode step is compiled (compile time excluded).

Each system is one worker process pinned with `taskset` to the same cores (core 0 for 1 thread, cores 0-1 for
2), loaded and warmed up once; the runs are interleaved (run 1 of every system, then run 2, ...) and the
median of --runs is reported, with each camelid/llama.cpp ratio. Decode: 128 new tokens, greedy, after a short
prompt; prefill: a 512-token prompt. The roofline is the copy bandwidth measured by the same pinned worker,
divided by the bytes of weights a token reads; each system's fraction of it is printed. Then, for camelid
int4, where a decode step's time goes: the packed matmuls alone, and a profile of the eager step.

    PYTHONPATH=. python benchmarks/decode_cpu.py [--runs 3] [--threads 1,2]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "The history of the Roman Empire spans more than a thousand years, from"
NEW = 128
PREFILL = 512
PAIRS = (("bf16", "F16"), ("int8", "Q8_0"), ("int8pc", "Q8_0"), ("int4", "Q4_0"))


# -- workers (one system each, pinned) --------------------------------------------------------------------------


def bandwidth() -> float:
    """Copy bandwidth in GB/s (read + write) of this process's cores, on 256 MiB buffers (past any cache)."""
    import torch

    x = torch.ones(64 * 1024**2, dtype=torch.float32)
    y = torch.empty_like(x)
    y.copy_(x)
    best = 0.0
    for _ in range(5):
        t0 = time.perf_counter()
        y.copy_(x)
        best = max(best, 2 * x.numel() * 4 / (time.perf_counter() - t0))
    return best / 1e9


def long_prompt(tokenizer) -> list[int]:
    ids = tokenizer.encode((ROOT / "README.md").read_text())
    while len(ids) < PREFILL:
        ids = ids + ids
    return ids[:PREFILL]


class CamelidWorker:
    def __init__(self, path: str, kind: str) -> None:
        import torch

        from camelid.formats import load

        self.kind = kind
        quant, dtype, group = {
            "bf16": ("none", torch.bfloat16, None),
            "int8": (None, None, None),  # the Q8_0 blocks as they are: int8 in groups of 32
            "int8pc": ("int8", None, 0),  # one scale per output channel
            "int4": (None, None, None),  # the Q4_0 blocks: int4 in groups of 32
        }[kind]
        self.loaded = load(path, dtype=dtype, quant=quant, group_size=group)
        self.prompt = self.loaded.tokenizer.encode(PROMPT)
        self.long = long_prompt(self.loaded.tokenizer)
        self.prefill()  # first: its 512 positions size the cache the decode step is compiled for
        self.decode(warm=True)

    def weight_bytes(self) -> int:
        from camelid.transforms.quantize import quantized_bytes

        return quantized_bytes(self.loaded.model)

    def decode(self, warm: bool = False) -> dict:
        del warm  # the warm-up is a full run: the same cache, the same compiled step
        from camelid.generate import GREEDY, generate_ids

        rows, stats = generate_ids(self.loaded.model, [self.prompt], NEW + 1, GREEDY, compile=True)
        return {"tok_s": stats.tokens_per_s, "ids": rows[0].ids}

    def prefill(self) -> dict:
        from camelid.generate import GREEDY, generate_ids

        _, stats = generate_ids(self.loaded.model, [self.long], 1, GREEDY)
        return {"tok_s": PREFILL / stats.prefill_s}

    def kernels(self) -> dict:
        """ms per token spent in the packed matmuls alone (every linear and the output head, batch 1)."""
        import torch

        from camelid.transforms.quantize import QuantizedLinear

        linears = [m for m in self.loaded.model.modules() if isinstance(m, (QuantizedLinear, torch.nn.Linear))]
        xs = [torch.randn(1, m.in_features, dtype=torch.bfloat16) for m in linears]
        with torch.inference_mode():
            for m, x in zip(linears, xs):
                m(x)
            t0 = time.perf_counter()
            for _ in range(20):
                for m, x in zip(linears, xs):
                    m(x)
        return {"ms": (time.perf_counter() - t0) / 20 * 1e3}

    def profile(self) -> dict:
        from torch.profiler import ProfilerActivity, profile

        from camelid.generate import GREEDY, generate_ids

        generate_ids(self.loaded.model, [self.prompt], 8, GREEDY)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            generate_ids(self.loaded.model, [self.prompt], 33, GREEDY)
        return {"table": prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)}


class LlamaCppWorker:
    def __init__(self, path: str, threads: int) -> None:
        from tests.peers import llama_cpp_tools as lc

        self.lc, self.path = lc, Path(path)
        self.llm = lc.runner(self.path, threads=threads, n_ctx=1024)
        tokenizer = _tokenizer_of(path)
        self.prompt = tokenizer.encode(PROMPT)
        self.long = long_prompt(tokenizer)
        lc.greedy(self.llm, self.prompt, 16)
        self.prefill()

    def weight_bytes(self) -> int:
        from camelid.formats.gguf_file import GGUFFile

        return sum(t.nbytes for t in GGUFFile(self.path).tensors)

    def decode(self) -> dict:
        """As camelid's figure: the first token comes from the prompt, then NEW timed decode steps."""
        import numpy as np

        self.llm.reset()
        self.llm.eval(self.prompt)
        ids = [int(np.argmax(self.lc.last_logits(self.llm)))]
        t0 = time.perf_counter()
        for _ in range(NEW):
            self.llm.eval([ids[-1]])
            ids.append(int(np.argmax(self.lc.last_logits(self.llm))))
        return {"tok_s": NEW / (time.perf_counter() - t0), "ids": ids[:NEW]}

    def prefill(self) -> dict:
        self.llm.reset()
        t0 = time.perf_counter()
        self.llm.eval(self.long)
        return {"tok_s": PREFILL / (time.perf_counter() - t0)}


def _tokenizer_of(path: str):
    from camelid.formats import read

    return read(path, quant="none").tokenizer


def worker(system: str, path: str, threads: int) -> None:
    """A worker: build the system, then answer one JSON line per command read from stdin."""
    import torch

    torch.set_num_threads(threads)
    kind = system.split(":", 1)[1]
    w = CamelidWorker(path, kind) if system.startswith("camelid") else LlamaCppWorker(path, threads)
    print(json.dumps({"ready": True, "weight_bytes": w.weight_bytes()}), flush=True)
    for line in sys.stdin:
        op = line.strip()
        if op == "bandwidth":
            out = {"gb_s": bandwidth()}
        else:
            out = getattr(w, op)()
        print(json.dumps(out), flush=True)


class Pinned:
    """A worker subprocess on `cores`."""

    def __init__(self, system: str, path: Path, threads: int, cores: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
        cmd = ["taskset", "-c", cores, sys.executable, __file__, "--worker", system, str(path), str(threads)]
        self.system = system
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.info = self._read()

    def _read(self) -> dict:
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.system} died (exit {self.p.wait()})")
        return json.loads(line)

    def ask(self, op: str) -> dict:
        self.p.stdin.write(op + "\n")
        self.p.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.p.stdin.close()
        self.p.wait()


# -- the driver ---------------------------------------------------------------------------------------------------


def make_files(tmp: Path) -> dict[str, Path]:
    from camelid.formats import resolve
    from camelid.formats.convert import convert
    from tests.peers import llama_cpp_tools as lc

    f32 = convert(resolve("smollm2-135m"), tmp / "f32.gguf", to="gguf", quant="F32")
    return {t: lc.quantize(f32, tmp / f"{t}.gguf", t) for t in ("F16", "Q8_0", "Q4_0")}


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def run(threads: int, files: dict[str, Path], runs: int) -> dict:
    cores = "0" if threads == 1 else f"0-{threads - 1}"
    systems = {f"llama.cpp:{t}": files[t] for t in ("F16", "Q8_0", "Q4_0")}
    systems.update({f"camelid:{k}": files[t] for k, t in PAIRS})
    t0 = time.perf_counter()
    workers = {name: Pinned(name, path, threads, cores) for name, path in systems.items()}
    print(f"[{threads} thread(s), cores {cores}] {len(workers)} workers ready in {time.perf_counter() - t0:.0f} s",
          flush=True)  # fmt: skip
    results: dict = {name: {"decode": [], "prefill": [], "bandwidth": []} for name in workers}
    ids: dict = {}
    for _ in range(runs):  # interleaved: one run of every system, then the next
        for name, w in workers.items():
            results[name]["bandwidth"].append(w.ask("bandwidth")["gb_s"])
            d = w.ask("decode")
            results[name]["decode"].append(d["tok_s"])
            ids[name] = d["ids"]
            results[name]["prefill"].append(w.ask("prefill")["tok_s"])
    out: dict = {"cores": cores, "systems": {}}
    for name, r in results.items():
        bw = statistics.median(r["bandwidth"])
        wb = workers[name].info["weight_bytes"]
        dec = statistics.median(r["decode"])
        out["systems"][name] = {
            "decode_tok_s": dec, "decode_runs": r["decode"], "prefill_tok_s": statistics.median(r["prefill"]),
            "prefill_runs": r["prefill"], "weight_bytes": wb, "bandwidth_gb_s": bw,
            "roofline_tok_s": bw * 1e9 / wb, "roofline_fraction": dec / (bw * 1e9 / wb),
        }  # fmt: skip
    out["ratios"] = {}
    for kind, gguf_type in PAIRS:
        ours, theirs = out["systems"][f"camelid:{kind}"], out["systems"][f"llama.cpp:{gguf_type}"]
        out["ratios"][f"camelid {kind} / llama.cpp {gguf_type}"] = {
            "decode": ours["decode_tok_s"] / theirs["decode_tok_s"],
            "prefill": ours["prefill_tok_s"] / theirs["prefill_tok_s"],
            "greedy_tokens_equal": common_prefix(ids[f"camelid:{kind}"], ids[f"llama.cpp:{gguf_type}"]),
        }
    w4 = workers["camelid:int4"]
    out["camelid_int4_kernels_ms_per_token"] = w4.ask("kernels")["ms"]
    out["camelid_int4_ms_per_token"] = 1e3 / out["systems"]["camelid:int4"]["decode_tok_s"]
    if threads == 1:
        out["camelid_int4_eager_profile"] = w4.ask("profile")["table"]
    for w in workers.values():
        w.close()
    return out


def table(threads: int, r: dict) -> str:
    lines = [f"\n{threads} thread(s), cores {r['cores']} (median of runs; roofline = copy bandwidth / weight bytes)",
             f"{'system':<18}{'decode tok/s':>14}{'prefill tok/s':>15}{'weights MB':>12}{'GB/s':>7}"
             f"{'of roofline':>13}"]  # fmt: skip
    for name, s in r["systems"].items():
        lines.append(f"{name:<18}{s['decode_tok_s']:>14.1f}{s['prefill_tok_s']:>15.0f}{s['weight_bytes'] / 1e6:>12.1f}"
                     f"{s['bandwidth_gb_s']:>7.1f}{100 * s['roofline_fraction']:>12.0f}%")  # fmt: skip
    for pair, v in r["ratios"].items():
        lines.append(f"{pair:<34} decode {v['decode']:.2f}x  prefill {v['prefill']:.2f}x  "
                     f"greedy tokens equal {v['greedy_tokens_equal']}/{NEW}")  # fmt: skip
    lines.append(f"camelid int4: {r['camelid_int4_ms_per_token']:.2f} ms per token, of which the packed matmuls alone "
                 f"{r['camelid_int4_kernels_ms_per_token']:.2f} ms")  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--worker", nargs=3, metavar=("SYSTEM", "PATH", "THREADS"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.worker[0], a.worker[1], int(a.worker[2]))
        return 0
    if not shutil.which("taskset"):
        print("error: taskset (util-linux) is needed to pin each system to the same cores", file=sys.stderr)
        return 2
    import llama_cpp
    import torch

    res: dict = {
        "date": datetime.date.today().isoformat(), "torch": torch.__version__,
        "llama_cpp_python": llama_cpp.__version__, "cpu": _cpu_name(), "cores": os.cpu_count(),
        "machine": platform.machine(), "new_tokens": NEW, "prefill_tokens": PREFILL, "runs": a.runs,
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        files = make_files(Path(tmp))
        for threads in (int(t) for t in a.threads.split(",")):
            r = run(threads, files, a.runs)
            res[f"threads_{threads}"] = r
            print(table(threads, r), flush=True)
    if "threads_1" in res:
        print("\ncamelid int4, eager decode step, 1 thread (torch.profiler, by self time):")
        print(res["threads_1"]["camelid_int4_eager_profile"])
    out = Path(os.environ.get("OUT", ROOT / "benchmarks" / "results"))
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"decode_cpu_{res['date']}.json"
    path.write_text(json.dumps(res, indent=1))
    print(f"wrote {path}")
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    raise SystemExit(main())
