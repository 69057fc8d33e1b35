"""`camelid serve` as a subprocess on a free port, for tests that talk to it over HTTP."""

import contextlib
import os
import subprocess
import sys

import pytest


@contextlib.contextmanager
def served(model: str, *options: str, env: dict[str, str] | None = None):
    """Yield the base URL (http://HOST:PORT/v1) of `camelid serve --model MODEL OPTIONS` on the CPU (with `env`
    added to this process's environment)."""
    cmd = [sys.executable, "-m", "camelid", "serve", "--model", model, "--port", "0", "--device", "cpu", *options]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}
    )
    try:
        line = proc.stdout.readline()  # "serving 'NAME' (...) on http://HOST:PORT/v1"
        if not line.startswith("serving"):
            proc.kill()
            pytest.fail(f"server did not start: {line!r} {proc.stderr.read()[-2000:]}")
        yield line.split(" on ")[-1].strip()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
