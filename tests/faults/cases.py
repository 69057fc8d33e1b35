"""The fault-injection suite's bookkeeping: every case records what happened; conftest.py prints the totals.

Outcomes: `clean` (a one-line CamelidError, or the input handled correctly), `crash` (any other exception),
`hang` (past its time limit), `code` (a payload ran), `lost` (documents missing from the accounting),
`escape` (the sandbox let something through), `5xx` (the server answered 5xx). Each case asserts `clean`;
the table shows how many cases each area tried.
"""

from __future__ import annotations

import contextlib
import signal
from collections import Counter, defaultdict

import pytest

from camelid.errors import CamelidError

OUTCOMES = ("clean", "crash", "hang", "code", "lost", "escape", "5xx")
TOTALS: dict[str, Counter] = defaultdict(Counter)


class HangError(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    def handler(signum, frame):
        raise HangError(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def record(area: str, outcome: str, detail: str = "") -> str:
    assert outcome in OUTCOMES, outcome
    TOTALS[area][outcome] += 1
    return outcome


def expect_clean(area: str, fn, seconds: float = 20.0, may_succeed: bool = False, what: str = ""):
    """Run `fn`; a CamelidError (or, with `may_succeed`, a normal return) is clean, anything else is counted and
    fails the case. Returns the CamelidError's message or fn's result."""
    try:
        with time_limit(seconds):
            result = fn()
    except CamelidError as e:
        record(area, "clean")
        assert "\n" not in str(e), f"a multi-line error: {e}"
        return str(e)
    except HangError:
        record(area, "hang")
        pytest.fail(f"{area} {what}: hung")
    except Exception as e:  # noqa: BLE001 - this is what the suite counts
        record(area, "crash")
        pytest.fail(f"{area} {what}: {type(e).__name__}: {e}")
    if may_succeed:
        record(area, "clean")
        return result
    record(area, "crash")
    pytest.fail(f"{area} {what}: accepted a broken input")
