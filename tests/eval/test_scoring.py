import math

import pytest

from camelid.eval.scoring import choose, exact_match, majority, normalize_answer, pass_at_k


def test_character_normalization_changes_the_choice():
    # a short answer with a higher total log-likelihood, a long one that is likelier per character
    choices = [" yes", " absolutely, without any doubt"]
    logprobs = [-3.0, -6.0]
    assert choose(logprobs, choices, norm="none") == 0
    assert choose(logprobs, choices, norm="char") == 1  # -3/3 = -1.0 vs -6/29 = -0.21 (the space not counted)


def test_answer_normalization_changes_the_choice():
    # P(completion | context) / P(completion | "Answer:"): a completion likely anywhere loses its edge
    choices = [" the", " photosynthesis"]
    conditional = [-2.0, -12.0]  # per character: -2/3 = -0.67 vs -12/14 = -0.86
    unconditional = [-1.0, -14.0]  # answer-normalized: -1.0 vs +2.0
    assert choose(conditional, choices, norm="none") == 0
    assert choose(conditional, choices, norm="char") == 0
    assert choose(conditional, choices, norm="answer", unconditional=unconditional) == 1


def test_pass_at_k_is_the_unbiased_estimator():
    assert pass_at_k(10, 0, 1) == 0.0 and pass_at_k(10, 10, 5) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(200, 20, 100) == pytest.approx(1 - math.comb(180, 100) / math.comb(200, 100))
    assert pass_at_k(5, 3, 3) == 1.0  # fewer than k wrong samples: some k-subset always holds a right one


def test_exact_match_and_majority():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert exact_match(" the Eiffel tower.\nIt is in Paris", ["Eiffel Tower"])
    assert not exact_match("Louvre", ["Eiffel Tower"])
    assert majority(["12", "7", "12", None, "7", "12"]) == "12"
    assert majority(["3", "4"]) == "3" and majority([]) is None
