"""Texts the peer comparisons share: the standard library's sources and random Unicode strings."""

from __future__ import annotations

import random
import sysconfig
from pathlib import Path

RANGES = [
    (0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x3040, 0x30FF),
    (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0x1F300, 0x1FAFF), (0x0600, 0x06FF), (0x0900, 0x097F),
]  # fmt: skip
PIECES = [" ", "  ", "\n", "\t", "\r\n", "0", "42", "3.14", "'s", "'ll"]


def random_unicode(rng: random.Random) -> str:
    out = []
    for _ in range(rng.randint(1, 60)):
        if rng.random() < 0.15:
            out.append(rng.choice(PIECES))
        else:
            lo, hi = rng.choice(RANGES)
            out.append(chr(rng.randint(lo, hi)))
    return "".join(out)


def stdlib_sources(n: int | None = None, max_chars: int | None = None) -> list[str]:
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:n]
    return [p.read_text(encoding="utf-8", errors="replace")[:max_chars] for p in files]


def mixed_texts(n_random: int = 300, seed: int = 0) -> list[str]:
    """168 standard-library files (the first 4,000 characters of each) and `n_random` random Unicode strings."""
    rng = random.Random(seed)
    return stdlib_sources(max_chars=4000) + [random_unicode(rng) for _ in range(n_random)]
