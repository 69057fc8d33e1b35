"""Run one benchmark row in a child process with a time limit, so a crash or a hang costs that row only.

A script calls `run_row(__file__, spec, limit)`; the child is the same script started with `--child SPEC_JSON
--child-out FILE`, and writes its row (a JSON object) to FILE. What comes back is the row, or a string
starting `error:`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path


def run_row(script: str, spec: dict, limit: float) -> dict | str:
    with tempfile.NamedTemporaryFile("r", suffix=".json") as f:
        cmd = [sys.executable, script, "--child", json.dumps(spec), "--child-out", f.name]
        try:
            proc = subprocess.run(cmd, timeout=limit, capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            return f"error: timed out after {limit:.0f} s"
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return f"error: exit {proc.returncode}: {' | '.join(tail)}"[:400]
        return json.loads(Path(f.name).read_text())
