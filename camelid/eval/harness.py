"""`camelid eval`: run tasks, print a table, write JSON and Markdown laid out like the paper's tables."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from camelid.errors import InputError
from camelid.eval import benchmarks as B
from camelid.eval.benchmarks import ALL_TASKS
from camelid.eval.lm import Evaluator
from camelid.eval.tasks import run_humaneval, run_mmlu, run_perplexity

# The paper's numbers (shared/SPEC.md section 5), shown beside ours when the model is one of the paper's.
_SIZES = ("llama-7b", "llama-13b", "llama-33b", "llama-65b")


def _row(*values: float) -> dict[str, float]:
    return dict(zip(_SIZES, values))


PAPER = {
    "boolq": _row(76.5, 78.1, 83.1, 85.3),
    "piqa": _row(79.8, 80.1, 82.3, 82.8),
    "siqa": _row(48.9, 50.4, 50.4, 52.3),
    "hellaswag": _row(76.1, 79.2, 82.8, 84.2),
    "winogrande": _row(70.1, 73.0, 76.0, 77.0),
    "arc_easy": _row(72.8, 74.8, 80.0, 78.9),
    "arc_challenge": _row(47.6, 52.7, 57.8, 56.0),
    "openbookqa": _row(57.2, 56.4, 58.6, 60.2),
    "nq": _row(16.8, 20.1, 24.9, 23.8),
    "triviaqa": _row(50.0, 56.6, 65.1, 68.2),
    "race_middle": _row(61.1, 61.6, 64.1, 67.9),
    "race_high": _row(46.9, 47.2, 48.3, 51.6),
    "gsm8k": _row(11.0, 17.8, 35.6, 50.9),
    "math": _row(2.9, 3.9, 7.1, 10.6),
    "humaneval": _row(10.5, 15.8, 21.7, 23.7),
    "mbpp": _row(17.7, 22.0, 30.2, 37.7),
    "mmlu": _row(35.1, 46.9, 57.8, 63.4),
}
SECTIONS = {
    "Common sense reasoning (zero-shot, accuracy)": (
        "boolq", "piqa", "siqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa",
    ),
    "Closed-book question answering (exact match)": ("nq", "triviaqa"),
    "Reading comprehension (zero-shot, accuracy)": ("race_middle", "race_high"),
    "Mathematical reasoning (maj1@k)": ("gsm8k", "math"),
    "Code generation (pass@1)": ("humaneval", "mbpp"),
    "Massive multitask language understanding": ("mmlu",),
    "Bias, toxicity and truthfulness": ("crows_pairs", "winogender", "truthfulqa_mc", "realtoxicityprompts"),
}  # fmt: skip
TASKS = ("mmlu", "humaneval", *ALL_TASKS, "ppl:FILE")


def _progress(name: str):
    """A progress callback (items done, total) that draws a bar with ETA on stderr from its first call."""
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(desc=name, total=total, unit="item", file=sys.stderr, dynamic_ncols=True)
        bar.n = done
        bar.refresh()
        if done == total:
            bar.close()

    return update


def run_tasks(
    ev: Evaluator,
    tasks: list[str],
    shots: int = 5,
    limit: int | None = None,
    data_dir: Path | None = None,
    samples: int = 1,
    temperature: float = 0.0,
) -> list[dict]:
    """Run each task; `limit` is items per subject for MMLU and the first `limit` items elsewhere."""
    for task in tasks:  # fail on a typo before hours of work on the tasks before it
        if task not in TASKS and not task.startswith("ppl:"):
            raise InputError(f"unknown task {task!r}; camelid runs {', '.join(TASKS)}")
    needs_dir = [t for t in tasks if t in ALL_TASKS]
    if needs_dir and data_dir is None:
        raise InputError(f"{needs_dir[0]} reads its original files from --data-dir DIR (layout: camelid eval --help)")
    d = data_dir or Path(".")
    out = []
    for task in tasks:
        bar = _progress(task)
        if task == "mmlu":
            out.append(run_mmlu(ev, shots=shots, per_subject=limit, data_dir=data_dir, progress=bar))
        elif task == "humaneval":
            out.append(run_humaneval(ev, limit=limit, data_dir=data_dir, progress=bar))
        elif task.startswith("ppl:"):
            out.append(run_perplexity(ev, Path(task[4:])))
        elif task in B.MC_LOADERS:
            out.append(B.run_multiple_choice(ev, task, B.MC_LOADERS[task](d)[:limit], bar))
        elif task == "truthfulqa_mc":
            out.append(B.run_truthfulqa(ev, d, limit, bar))
        elif task == "crows_pairs":
            out.append(B.run_crows_pairs(ev, d, limit, bar))
        elif task in ("nq", "triviaqa"):
            out.append(B.run_closed_book(ev, task, d, shots=0, limit=limit, progress=bar))
        elif task in ("gsm8k", "math"):
            out.append(B.run_math_task(ev, task, d, samples, temperature, limit=limit, progress=bar))
        elif task == "mbpp":
            out.append(B.run_mbpp(ev, d, samples, temperature, limit, bar))
        elif task == "realtoxicityprompts":
            out.append(B.run_realtoxicity(ev, d, limit, bar))
    return out


def _headline(r: dict) -> tuple[str, str, float | None]:
    """(setting, items, value in percent or the task's own unit) of one result."""
    t = r["task"]
    if t == "mmlu":
        return f"{r['shots']}-shot", f"{r['items']} of {r['of_items']}", 100 * r["accuracy"]
    if t == "humaneval":
        return f"pass@1, {r['estimator']}", str(r["problems"]), 100 * r["pass@1"]
    if t == "mbpp":
        return f"pass@1, {r['samples']} sample(s), T={r['temperature']}", str(r["items"]), 100 * r["pass@1"]
    if t in ("gsm8k", "math"):
        return f"maj1@{r['samples']}", str(r["items"]), 100 * r["maj1@k"]
    if t in ("nq", "triviaqa"):
        return f"{r['shots']}-shot", str(r["items"]), 100 * r["exact_match"]
    if t == "crows_pairs":
        return "% preferring the stereotype (50 = unbiased)", str(r["items"]), r["stereotype_pct"]
    if t == "truthfulqa_mc":
        return f"MC1 (MC2 {100 * r['mc2']:.1f})", str(r["items"]), 100 * r["mc1"]
    if t == "realtoxicityprompts":
        return (
            f"mean toxicity, basic (respectful {r['respectful_toxicity']:.3f}), {r['classifier']}",
            str(r["items"]),
            r["basic_toxicity"],
        )
    return "zero-shot", str(r["items"]), 100 * r["accuracy"]


def markdown(model: str, results: list[dict]) -> str:
    lines = [f"# Evaluation of {model}", ""]
    by_task = {r["task"]: r for r in results}
    for title, names in SECTIONS.items():
        rows = [by_task[n] for n in names if n in by_task]
        if not rows:
            continue
        lines += [f"## {title}", "", "| task | setting | items | camelid | paper (same model) | wall time |"]
        lines.append("|---|---|---|---|---|---|")
        for r in rows:
            setting, items, value = _headline(r)
            paper = PAPER.get(r["task"], {}).get(model)
            paper_s = f"{paper:.1f}" if paper is not None else "-"
            value_s = f"{value:.3f}" if r["task"] == "realtoxicityprompts" else f"{value:.1f}"
            lines.append(f"| {r['task']} | {setting} | {items} | {value_s} | {paper_s} | {r['wall_s']:.0f} s |")
            for g, v in (r.get("by_group") or r.get("by_bias_type") or {}).items():
                scale = 1 if "by_bias_type" in r else 100
                lines.append(f"| &nbsp;&nbsp;{g} | | | {scale * v:.1f} | | |")
        lines.append("")
    ppl = [r for r in results if r["task"].startswith("ppl:")]
    if ppl:
        lines += ["## Language modeling", "", "| file | tokens | perplexity | bits per byte | wall time |"]
        lines.append("|---|---|---|---|---|")
        for r in ppl:
            lines.append(
                f"| {r['task'][4:]} | {r['tokens']} | {r['perplexity']:.2f} | {r['bits_per_byte']:.4f} "
                f"| {r['wall_s']:.1f} s |"
            )
        lines.append("")
    return "\n".join(lines)


def write_report(path: Path, model: str, results: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"model": model, "results": results}, indent=1))
    path.with_suffix(".md").write_text(markdown(model, results))
