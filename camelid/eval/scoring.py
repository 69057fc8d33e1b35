"""The paper's scoring rules (shared/SPEC.md section 5), as small pure functions."""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence


def normalized(
    logprobs: Sequence[float],
    choices: Sequence[str],
    norm: str = "char",
    unconditional: Sequence[float] | None = None,
    token_counts: Sequence[int] | None = None,
) -> list[float]:
    """Each completion's score under the paper's rules: log-likelihood per character of the completion (`char`;
    the space that separates it from the context is not counted, as in lm-eval), log P(completion | context) -
    log P(completion | "Answer:") (`answer`, for OpenBookQA and BoolQ), per token (`token`, i.e. perplexity,
    for WinoGender), or raw (`none`)."""
    if norm == "char":
        return [lp / max(1, len(c.removeprefix(" "))) for lp, c in zip(logprobs, choices)]
    if norm == "answer":
        if unconditional is None:
            raise ValueError("answer normalization needs the unconditional log-likelihoods")
        return [lp - u for lp, u in zip(logprobs, unconditional)]
    if norm == "token":
        if token_counts is None:
            raise ValueError("token normalization needs the completions' token counts")
        return [lp / max(1, n) for lp, n in zip(logprobs, token_counts)]
    if norm == "none":
        return list(logprobs)
    raise ValueError(f"unknown normalization {norm!r}")


def argmax(scores: Sequence[float]) -> int:
    return max(range(len(scores)), key=lambda i: scores[i])


def choose(
    logprobs: Sequence[float],
    choices: Sequence[str],
    norm: str = "char",
    unconditional: Sequence[float] | None = None,
) -> int:
    """The chosen completion: the highest score under `normalized`."""
    return argmax(normalized(logprobs, choices, norm, unconditional))


def normalize_answer(text: str) -> str:
    """SQuAD-style: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answers: Sequence[str]) -> bool:
    """NaturalQuestions / TriviaQA: the first line of the prediction, normalized, equals a normalized answer."""
    first = prediction.strip().split("\n")[0]
    return normalize_answer(first) in {normalize_answer(a) for a in answers}


def pass_at_k(n: int, correct: int, k: int) -> float:
    """The unbiased pass@k estimator of Chen et al. (2021): 1 - C(n - c, k) / C(n, k), computed stably."""
    if n - correct < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - correct + 1, n + 1))


def majority(answers: Sequence[str]) -> str | None:
    """maj1@k: the most frequent answer among k samples (ties: the first to reach the top count)."""
    answers = [a for a in answers if a is not None]
    if not answers:
        return None
    counts = Counter(answers)
    top = max(counts.values())
    return next(a for a in answers if counts[a] == top)
