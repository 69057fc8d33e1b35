"""`camelid eval`: run tasks, print a table, write JSON and Markdown laid out like the paper's tables."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from camelid.errors import InputError
from camelid.eval.lm import Evaluator
from camelid.eval.registry import SECTIONS, TASKS, Options
from camelid.eval.tasks import run_perplexity

TASK_NAMES = (*TASKS, "ppl:FILE")


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
            raise InputError(f"unknown task {task!r}; camelid runs {', '.join(TASK_NAMES)}")
    needs_dir = [t for t in tasks if t in TASKS and TASKS[t].needs_data_dir]
    if needs_dir and data_dir is None:
        raise InputError(f"{needs_dir[0]} reads its original files from --data-dir DIR (layout: camelid eval --help)")
    out = []
    for task in tasks:
        if task.startswith("ppl:"):
            out.append(run_perplexity(ev, Path(task[4:])))
            continue
        opts = Options(shots, limit, data_dir, samples, temperature, _progress(task))
        out.append(TASKS[task].run(ev, opts))
    return out


def markdown(model: str, results: list[dict]) -> str:
    lines = [f"# Evaluation of {model}", ""]
    by_task = {r["task"]: r for r in results}
    for title in SECTIONS:
        rows = [by_task[t.name] for t in TASKS.values() if t.section == title and t.name in by_task]
        if not rows:
            continue
        lines += [f"## {title}", "", "| task | setting | items | camelid | paper (same model) | wall time |"]
        lines.append("|---|---|---|---|---|---|")
        for r in rows:
            record = TASKS[r["task"]]
            setting, items, value = record.headline(r)
            paper = record.paper.get(model)
            paper_s = f"{paper:.1f}" if paper is not None else "-"
            value_s = f"{value:.{record.digits}f}"
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
