"""The fault-injection suite (tests/faults/): the totals of every area's cases, printed at the end of the run
and written to .pytest_cache/fault_totals.json."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from pathlib import Path

from tests.faults.cases import OUTCOMES, TOTALS


def pytest_terminal_summary(terminalreporter):
    if not TOTALS:
        return
    tr = terminalreporter
    tr.section("fault-injection totals")
    header = f"{'area':<22}{'cases':>7}" + "".join(f"{o:>8}" for o in OUTCOMES)
    tr.write_line(header)
    total = Counter()
    for area in sorted(TOTALS):
        c = TOTALS[area]
        total.update(c)
        tr.write_line(f"{area:<22}{sum(c.values()):>7}" + "".join(f"{c[o]:>8}" for o in OUTCOMES))
    tr.write_line(f"{'all':<22}{sum(total.values()):>7}" + "".join(f"{total[o]:>8}" for o in OUTCOMES))
    out = Path(tr.config.rootpath) / ".pytest_cache" / "fault_totals.json"
    with contextlib.suppress(OSError):
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps({a: dict(c) for a, c in TOTALS.items()}, indent=1))
