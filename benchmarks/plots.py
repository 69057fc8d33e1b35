"""What the benchmark plots share: matplotlib without a display, and writing a figure."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def arguments(doc: str) -> tuple[dict, Path]:
    """The command line every plot takes: RESULT.json OUT.png; the result read."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("result", type=Path)
    ap.add_argument("png", type=Path)
    a = ap.parse_args()
    return json.loads(a.result.read_text()), a.png


def save(fig, png: Path) -> int:
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")
    return 0


__all__ = ["arguments", "plt", "save"]
