"""The Python API a newcomer types (`camelid.load(...).generate(...)`) and the defaults it shares with the CLI
and the server."""

import math
import os
import subprocess
import sys

import pytest

import camelid
from camelid.errors import InputError


def run_python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)


def test_the_three_lines_of_the_readme():
    out = run_python(
        'import camelid; m = camelid.load("smollm2-135m"); '
        'print(m.generate("The capital of France is", max_new_tokens=8, temperature=0))'
    )
    assert out.returncode == 0, out.stderr
    assert "Paris" in out.stdout


def test_import_camelid_does_not_import_torch():
    out = run_python("import sys, camelid; print('torch' in sys.modules, camelid.__version__)")
    assert out.stdout.split() == ["False", camelid.__version__]


@pytest.fixture(scope="module")
def m():
    return camelid.load("smollm2-135m")


def test_results_are_plain_values(m):
    one = m.generate("The capital of France is", max_new_tokens=6, temperature=0)
    assert isinstance(one, str) and "Paris" in one
    many = m.generate(["The capital of France is", "The capital of Italy is"], max_new_tokens=6, temperature=0)
    assert many[0] == one and "Rome" in many[1]  # a batch gives each prompt's own greedy text
    assert "Paris" in m.chat("What is the capital of France?", temperature=0, max_new_tokens=20)
    pairs = m.token_logprobs("The capital of France is Paris")
    assert all(isinstance(t, str) and lp <= 0 for t, lp in pairs)
    assert math.isclose(m.score("The capital of France is Paris"), sum(lp for _, lp in pairs))
    assert m.score("The capital of France is Paris") > m.score("The capital of France is Banana")
    with pytest.raises(InputError, match="prompt string"):
        m.generate([1, 2, 3])


def test_a_str_is_one_prompt(m):
    from camelid.generate import GREEDY, generate

    results, _ = generate(m.loaded.model, m.tokenizer, "The capital of France is", max_new_tokens=4, params=GREEDY)
    assert len(results) == 1  # before: one prompt per character


def test_seeded_sampling_repeats_and_unseeded_leaves_the_rng_alone(m):
    import torch

    a = m.generate("Once upon a time", max_new_tokens=12, seed=3)
    assert a == m.generate("Once upon a time", max_new_tokens=12, seed=3)
    torch.manual_seed(123)
    want = torch.rand(5)
    torch.manual_seed(123)
    m.generate("Once upon a time", max_new_tokens=4)
    assert torch.equal(torch.rand(5), want)


def test_one_default_temperature_everywhere():
    import inspect

    from camelid.api import Model
    from camelid.cli import build_parser
    from camelid.defaults import DEFAULT_TEMPERATURE, DEFAULT_TOP_P
    from camelid.generate import SamplingParams
    from camelid.serve.api import _sampling

    parser = build_parser()
    cli = {
        cmd: parser.parse_args([cmd] + (["--prompt", "x"] if cmd == "generate" else [])) for cmd in ("generate", "chat")
    }
    temps = {
        "python generate": inspect.signature(Model.generate).parameters["temperature"].default,
        "python chat": inspect.signature(Model.chat).parameters["temperature"].default,
        "SamplingParams": SamplingParams().temperature,
        "camelid generate": cli["generate"].temperature,
        "camelid chat": cli["chat"].temperature,
        "server": _sampling({}).temperature,
    }
    assert set(temps.values()) == {DEFAULT_TEMPERATURE}, temps
    assert {SamplingParams().top_p, _sampling({}).top_p, cli["chat"].top_p} == {DEFAULT_TOP_P}
