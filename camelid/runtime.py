"""Where and how a model runs, shared by the CLI and the Python API: the device, the dtype by name, and a load
that says what it is loading (one line on stderr, then a progress bar when the load is slow)."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from camelid.errors import InputError

DTYPES = ("float32", "bfloat16", "float16")


def torch_dtype(name: str | None):
    """torch's dtype for one of DTYPES; None stays None (as stored)."""
    if name is None:
        return None
    if name not in DTYPES:
        raise InputError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPES)}")
    import torch

    return getattr(torch, name)


def pick_device(name: str | None) -> str:
    """`name` when it can run here; by default cuda when there is one, else cpu."""
    import torch

    if name:
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise InputError(f"device {name}: no CUDA device is available here; use cpu")
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


def describe(name_or_path: str | Path) -> str:
    """NAME (FORMAT, SIZE) from the file's header only: what a load is about to read."""
    from camelid.formats import detect_format, resolve

    path = resolve(name_or_path)
    try:
        size = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        fmt = detect_format(name_or_path)
    except OSError:
        return str(name_or_path)
    return (
        f"{name_or_path} ({fmt}, {size / 1e6:,.0f} MB)"
        if size < 1e9
        else f"{name_or_path} ({fmt}, {size / 1e9:.1f} GB)"
    )


def load_model(name_or_path, dtype=None, device=None, quant=None, group_size=None, announce: bool = True):
    """`camelid.formats.load` with "loading NAME (FORMAT, SIZE)..." on stderr first, the seconds it took after,
    and, for a load past 2 s, the elapsed seconds ticking on that line meanwhile."""
    from camelid.formats import load

    if not announce:
        return load(name_or_path, torch_dtype(dtype), pick_device(device), quant, group_size)
    line = f"loading {describe(name_or_path)}..."
    print(line, end="", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    done = threading.Event()

    def tick() -> None:
        while not done.wait(1.0):
            elapsed = time.perf_counter() - t0
            if elapsed >= 2:
                print(f"\r{line} {elapsed:.0f} s", end="", file=sys.stderr, flush=True)

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        loaded = load(name_or_path, torch_dtype(dtype), pick_device(device), quant, group_size)
    except BaseException:
        done.set()
        ticker.join()
        print(file=sys.stderr, flush=True)  # the error goes on its own line
        raise
    done.set()
    ticker.join()
    print(f"\r{line} {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return loaded
