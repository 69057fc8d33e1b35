"""Start-up on the CPU: how long until the embedded model is ready, camelid against llama.cpp on the same file.

Each run is a fresh process pinned with `taskset` to the same cores; the systems are interleaved (run 1 of each,
then run 2, ...) and the medians of --runs are reported with camelid/llama.cpp ratios.

- load: the load call alone (camelid.load vs llama_cpp.Llama(model_path)), after the imports (torch's, ~1.4 s
  here, included in "ready");
- ready: process start to a model ready to run, imports included (what a user waits for);
- info: the whole `camelid info smollm2-135m` command (header only, no torch), against llama.cpp's load.

    PYTHONPATH=. python benchmarks/startup_cpu.py [--runs 5] [--cores 0,1]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CAMELID = """
import time; t0 = time.perf_counter()
import camelid, torch; t1 = time.perf_counter()  # torch first, so that the load is the load alone
m = camelid.load("smollm2-135m"); t2 = time.perf_counter()
print(t2 - t1, t2 - t0)
"""
LLAMA_CPP = """
import sys, time; t0 = time.perf_counter()
from llama_cpp import Llama; t1 = time.perf_counter()
m = Llama(model_path=sys.argv[1], verbose=False); t2 = time.perf_counter()
print(t2 - t1, t2 - t0)
"""


def timed(cmd: list[str], cores: str) -> tuple[float, float]:
    """(load s, ready s) printed by a worker, or (wall s, wall s) of a command that prints something else."""
    t0 = time.perf_counter()
    out = subprocess.run(["taskset", "-c", cores, *cmd], capture_output=True, text=True, cwd=ROOT, check=True)
    wall = time.perf_counter() - t0
    try:
        load, ready = map(float, out.stdout.split())
        return load, ready
    except ValueError:
        return wall, wall


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--cores", default="0,1")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / f"startup_cpu_{datetime.date.today()}.json"))
    a = p.parse_args()
    if not shutil.which("taskset"):
        print("error: taskset (util-linux) is needed to pin each system to the same cores", file=sys.stderr)
        return 2
    import llama_cpp

    from camelid.formats import resolve

    gguf = str(resolve("smollm2-135m"))
    systems = {
        "camelid": [sys.executable, "-c", CAMELID],
        "llama.cpp": [sys.executable, "-c", LLAMA_CPP, gguf],
        "camelid info": [sys.executable, "-m", "camelid", "info", "smollm2-135m"],
    }
    for cmd in systems.values():  # the page cache holds the file and the libraries for every run
        timed(cmd, a.cores)
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in systems}
    for _ in range(a.runs):
        for name, cmd in systems.items():
            runs[name].append(timed(cmd, a.cores))
    med = {
        name: {"load_s": statistics.median(r[0] for r in rs), "ready_s": statistics.median(r[1] for r in rs)}
        for name, rs in runs.items()
    }
    ref = med["llama.cpp"]["load_s"]
    print(f"SmolLM2-135M Q4_1 GGUF ({Path(gguf).stat().st_size / 1e6:.0f} MB), cores {a.cores}, median of {a.runs}")
    print(f"{'system':<14} {'load s':>8} {'ready s':>8} {'load / llama.cpp load':>22}")
    for name, m in med.items():
        print(f"{name:<14} {m['load_s']:>8.2f} {m['ready_s']:>8.2f} {m['load_s'] / ref:>22.2f}x")
    result = {
        "date": str(datetime.date.today()),
        "cpu": platform.processor() or platform.machine(),
        "cores": a.cores,
        "python": platform.python_version(),
        "llama_cpp_python": llama_cpp.__version__,
        "file": Path(gguf).name,
        "runs": a.runs,
        "median": med,
        "all": runs,
        "note": "camelid info: the whole command's wall time (load_s = ready_s); the others: printed by the worker",
    }
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
