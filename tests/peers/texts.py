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


UNSEEN = [
    # Written for these tests (December 2026), after every model camelid compares was trained: held-out text.
    "On the second morning the surveyors found that the river had moved again. The stakes they had driven along "
    "the eastern bank stood in open water, and a new channel, narrow and fast, cut through the reeds where the "
    "camp kitchen had been. Nobody was hurt, but the maps were three days out of date before they were drawn.",
    "def rolling_median(values, width):\n    window = sorted(values[:width])\n    out = [window[width // 2]]\n"
    "    for old, new in zip(values, values[width:]):\n        window.remove(old)\n        bisect.insort(window, new)\n"
    "        out.append(window[width // 2])\n    return out\n",
    "The co-operative's accounts for the year show 1,284 members, 312 of them new, and a surplus of 18,450 euros "
    "after the repair of the cold store (6,900 euros) and the second loan instalment (4,125 euros). The board "
    "proposes to keep 40% of the surplus as a reserve and to return the rest as a discount on next year's fees.",
    "Q: Why does the kettle click off before the water stops moving?\nA: The switch reads the steam, not the water. "
    "When enough steam reaches the bimetal strip near the handle, the strip bends and opens the circuit; the water "
    "keeps churning for a few seconds on the heat still stored in the element.",
    "Il pleuvait depuis le matin sur la petite gare, et le train de 17 h 42 n'arrivait toujours pas. Le chef de "
    "gare, qui connaissait chaque voyageur par son prénom, distribuait du café tiède et des nouvelles inventées.",
    "To reproduce the failure, start the worker with an empty queue, send it a job whose payload is exactly the "
    "buffer size, and then close the connection before the acknowledgement arrives. The worker logs the job as "
    "finished, but the result file is empty, because the flush happens after the socket error is raised.",
    "She counted the lanterns on the bridge: eleven lit, four dark, one swinging loose from its hook. Below, the "
    "ferryman was arguing with a man who wanted to take a goat across without paying for it.",
    "SELECT region, COUNT(*) AS orders, ROUND(AVG(total), 2) AS mean_total\nFROM orders\nWHERE placed_at >= "
    "DATE '2026-01-01' AND status <> 'cancelled'\nGROUP BY region\nHAVING COUNT(*) > 50\nORDER BY mean_total DESC;",
]
