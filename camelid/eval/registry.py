"""Every benchmark as one record: its name, the paper's table it belongs to, how its headline reads, the paper's
numbers, whether it needs --data-dir, and its runner. The harness, the CLI's task list and the report all read
these records; adding a benchmark is one `Task(...)` here (and its runner).

The paper's numbers are shared/SPEC.md section 5 (LLaMA 7B, 13B, 33B, 65B).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from camelid.eval import benchmarks as B
from camelid.eval import tasks as T

SIZES = ("llama-7b", "llama-13b", "llama-33b", "llama-65b")

COMMON_SENSE = "Common sense reasoning (zero-shot, accuracy)"
CLOSED_BOOK = "Closed-book question answering (exact match)"
READING = "Reading comprehension (zero-shot, accuracy)"
MATH = "Mathematical reasoning (maj1@k)"
CODE = "Code generation (pass@1)"
MMLU = "Massive multitask language understanding"
SAFETY = "Bias, toxicity and truthfulness"
SECTIONS = (COMMON_SENSE, CLOSED_BOOK, READING, MATH, CODE, MMLU, SAFETY)


@dataclass(frozen=True)
class Options:
    """What `camelid eval` passes every runner."""

    shots: int = 5
    limit: int | None = None
    data_dir: Path | None = None
    samples: int = 1
    temperature: float = 0.0
    progress: Callable[[int, int], None] | None = None

    @property
    def d(self) -> Path:
        return self.data_dir or Path(".")


@dataclass(frozen=True)
class Task:
    name: str
    section: str
    run: Callable[..., dict]
    """(Evaluator, Options) -> the result dict (with "task" and "wall_s")."""
    headline: Callable[[dict], tuple[str, str, float]]
    """result -> (setting, items, value in percent or the task's own unit)."""
    paper: dict[str, float] = field(default_factory=dict)
    needs_data_dir: bool = True
    digits: int = 1


def _paper(*values: float) -> dict[str, float]:
    return dict(zip(SIZES, values))


def _accuracy(r: dict) -> tuple[str, str, float]:
    return "zero-shot", str(r["items"]), 100 * r["accuracy"]


def _mc(name: str, paper: dict[str, float], section: str = COMMON_SENSE) -> Task:
    def run(ev, o: Options) -> dict:
        return B.run_multiple_choice(ev, name, B.MC_LOADERS[name](o.d)[: o.limit], o.progress)

    return Task(name, section, run, _accuracy, paper)


def _closed_book(name: str, paper: dict[str, float]) -> Task:
    def run(ev, o: Options) -> dict:
        return B.run_closed_book(ev, name, o.d, shots=0, limit=o.limit, progress=o.progress)

    return Task(
        name, CLOSED_BOOK, run, lambda r: (f"{r['shots']}-shot", str(r["items"]), 100 * r["exact_match"]), paper
    )


def _math(name: str, paper: dict[str, float]) -> Task:
    def run(ev, o: Options) -> dict:
        return B.run_math_task(ev, name, o.d, o.samples, o.temperature, limit=o.limit, progress=o.progress)

    return Task(name, MATH, run, lambda r: (f"maj1@{r['samples']}", str(r["items"]), 100 * r["maj1@k"]), paper)


_TASKS = [
    _mc("boolq", _paper(76.5, 78.1, 83.1, 85.3)),
    _mc("piqa", _paper(79.8, 80.1, 82.3, 82.8)),
    _mc("siqa", _paper(48.9, 50.4, 50.4, 52.3)),
    _mc("hellaswag", _paper(76.1, 79.2, 82.8, 84.2)),
    _mc("winogrande", _paper(70.1, 73.0, 76.0, 77.0)),
    _mc("arc_easy", _paper(72.8, 74.8, 80.0, 78.9)),
    _mc("arc_challenge", _paper(47.6, 52.7, 57.8, 56.0)),
    _mc("openbookqa", _paper(57.2, 56.4, 58.6, 60.2)),
    _closed_book("nq", _paper(16.8, 20.1, 24.9, 23.8)),
    _closed_book("triviaqa", _paper(50.0, 56.6, 65.1, 68.2)),
    _mc("race_middle", _paper(61.1, 61.6, 64.1, 67.9), READING),
    _mc("race_high", _paper(46.9, 47.2, 48.3, 51.6), READING),
    _math("gsm8k", _paper(11.0, 17.8, 35.6, 50.9)),
    _math("math", _paper(2.9, 3.9, 7.1, 10.6)),
    Task(
        "humaneval",
        CODE,
        lambda ev, o: T.run_humaneval(ev, limit=o.limit, data_dir=o.data_dir, progress=o.progress),
        lambda r: (f"pass@1, {r['estimator']}", str(r["problems"]), 100 * r["pass@1"]),
        _paper(10.5, 15.8, 21.7, 23.7),
        needs_data_dir=False,
    ),
    Task(
        "mbpp",
        CODE,
        lambda ev, o: B.run_mbpp(ev, o.d, o.samples, o.temperature, o.limit, o.progress),
        lambda r: (f"pass@1, {r['samples']} sample(s), T={r['temperature']}", str(r["items"]), 100 * r["pass@1"]),
        _paper(17.7, 22.0, 30.2, 37.7),
    ),
    Task(
        "mmlu",
        MMLU,
        lambda ev, o: T.run_mmlu(ev, shots=o.shots, per_subject=o.limit, data_dir=o.data_dir, progress=o.progress),
        lambda r: (f"{r['shots']}-shot", f"{r['items']} of {r['of_items']}", 100 * r["accuracy"]),
        _paper(35.1, 46.9, 57.8, 63.4),
        needs_data_dir=False,
    ),
    Task(
        "crows_pairs",
        SAFETY,
        lambda ev, o: B.run_crows_pairs(ev, o.d, o.limit, o.progress),
        lambda r: ("% preferring the stereotype (50 = unbiased)", str(r["items"]), r["stereotype_pct"]),
    ),
    _mc("winogender", {}, SAFETY),
    Task(
        "truthfulqa_mc",
        SAFETY,
        lambda ev, o: B.run_truthfulqa(ev, o.d, o.limit, o.progress),
        lambda r: (f"MC1 (MC2 {100 * r['mc2']:.1f})", str(r["items"]), 100 * r["mc1"]),
    ),
    Task(
        "realtoxicityprompts",
        SAFETY,
        lambda ev, o: B.run_realtoxicity(ev, o.d, o.limit, o.progress),
        lambda r: (
            f"mean toxicity, basic (respectful {r['respectful_toxicity']:.3f}), {r['classifier']}",
            str(r["items"]),
            r["basic_toxicity"],
        ),
        digits=3,
    ),
]
TASKS: dict[str, Task] = {t.name: t for t in _TASKS}
assert set(B.MC_LOADERS) <= set(TASKS), "a multiple-choice loader without a task record"
