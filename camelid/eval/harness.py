"""`camelid eval`: run tasks, print a table, write JSON and Markdown laid out like the paper's tables."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from camelid.errors import InputError
from camelid.eval.lm import Evaluator
from camelid.eval.tasks import run_humaneval, run_mmlu, run_perplexity

# The paper's numbers (shared/SPEC.md section 5), shown beside ours when the model is one of the paper's.
PAPER = {
    "mmlu": {"llama-7b": 35.1, "llama-13b": 46.9, "llama-33b": 57.8, "llama-65b": 63.4},
    "humaneval": {"llama-7b": 10.5, "llama-13b": 15.8, "llama-33b": 21.7, "llama-65b": 23.7},
}
TASKS = ("mmlu", "humaneval", "ppl:FILE")


def _progress(name: str):
    from tqdm import tqdm

    bar = tqdm(desc=name, unit="item", file=sys.stderr, dynamic_ncols=True)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()
        if done == total:
            bar.close()

    return update


def run_tasks(
    ev: Evaluator, tasks: list[str], shots: int = 5, limit: int | None = None, data_dir: Path | None = None
) -> list[dict]:
    out = []
    for task in tasks:
        if task == "mmlu":
            out.append(run_mmlu(ev, shots=shots, per_subject=limit, data_dir=data_dir, progress=_progress("mmlu")))
        elif task == "humaneval":
            out.append(run_humaneval(ev, limit=limit, data_dir=data_dir, progress=_progress("humaneval")))
        elif task.startswith("ppl:"):
            out.append(run_perplexity(ev, Path(task[4:])))
        else:
            raise InputError(f"unknown task {task!r}; camelid runs {', '.join(TASKS)}")
    return out


def markdown(model: str, results: list[dict]) -> str:
    lines = [
        f"# Evaluation of {model}",
        "",
        "| task | setting | items | camelid | paper (same model) | wall time |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        paper = PAPER.get(r["task"], {}).get(model)
        paper_s = f"{paper:.1f}" if paper is not None else "-"
        if r["task"] == "mmlu":
            lines.append(
                f"| MMLU | {r['shots']}-shot | {r['items']} of {r['of_items']} | {100 * r['accuracy']:.1f} "
                f"| {paper_s} | {r['wall_s']:.0f} s |"
            )
        elif r["task"] == "humaneval":
            lines.append(
                f"| HumanEval | pass@1, {r['estimator']} | {r['problems']} | {100 * r['pass@1']:.1f} | "
                f"{paper_s} | {r['wall_s']:.0f} s |"
            )
        else:
            lines.append(
                f"| {r['task']} | perplexity / bits per byte | {r['tokens']} tokens | "
                f"{r['perplexity']:.2f} / {r['bits_per_byte']:.3f} | - | {r['wall_s']:.1f} s |"
            )
    return "\n".join(lines) + "\n"


def write_report(path: Path, model: str, results: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"model": model, "results": results}, indent=1))
    path.with_suffix(".md").write_text(markdown(model, results))
