"""The `camelid` command as a user runs it: a subprocess, its stdout, stderr and exit code."""

import json
import os
import shutil
import subprocess
import sys

import pytest

SPEC_COUNTS = {
    "llama-7b": 6_738_415_616,
    "llama-13b": 13_015_864_320,
    "llama-33b": 32_528_943_616,
    "llama-65b": 65_285_660_672,
}


def camelid(*args, check=True):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-m", "camelid", *args], capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"camelid {args} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def assert_user_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.mark.parametrize("name", SPEC_COUNTS)
def test_info_prints_exact_paper_counts(name):
    info = json.loads(camelid("info", name, "--json").stdout)
    assert info["params"] == SPEC_COUNTS[name]
    assert info["config"]["dim"] in (4096, 5120, 6656, 8192)


def test_info_of_a_checkpoint(debug_checkpoint):
    info = json.loads(camelid("info", str(debug_checkpoint), "--json").stdout)
    assert info["config"]["vocab_size"] == 2000 and info["params"] > 0


def test_generate_json(debug_checkpoint):
    args = ["generate", "--model", str(debug_checkpoint), "--prompt", "def main():", "--max-new-tokens", "10"]
    out = json.loads(camelid(*args, "--temperature", "0", "--json").stdout)
    assert set(out) >= {"prompt_ids", "ids", "text", "logprobs", "tokens_per_s"}
    assert len(out["ids"]) == len(out["logprobs"]) and 1 <= len(out["ids"]) <= 10
    assert all(lp <= 0 for lp in out["logprobs"]) and out["tokens_per_s"] > 0
    assert out["prompt_ids"][0] == 1
    again = json.loads(camelid(*args, "--temperature", "0", "--json").stdout)
    assert again["ids"] == out["ids"]


def test_generate_streams_text_and_sampling_is_seeded(debug_checkpoint):
    args = [
        "generate",
        "--model",
        str(debug_checkpoint),
        "--prompt",
        "Hello",
        "--max-new-tokens",
        "12",
        "--temperature",
        "1.0",
        "--top-k",
        "50",
        "--top-p",
        "0.9",
        "--seed",
        "3",
    ]
    a, b = camelid(*args), camelid(*args)
    assert a.stdout.startswith("Hello") and a.stdout == b.stdout
    j = json.loads(camelid(*args, "--json").stdout)
    assert a.stdout == "Hello" + j["text"] + "\n"


def test_score_json(debug_checkpoint):
    out = json.loads(camelid("score", "--model", str(debug_checkpoint), "--text", "The cat sat.", "--json").stdout)
    assert len(out["logprobs"]) == len(out["ids"]) - 1
    assert out["total"] == pytest.approx(sum(out["logprobs"]))


def test_tokenizer_train_and_encode(tmp_path, corpus):
    proc = camelid("tokenizer", "train", "--input", str(corpus), "--vocab-size", "600", "--out", str(tmp_path))
    assert "600 pieces" in proc.stdout
    out = json.loads(camelid("tokenizer", "encode", "--tokenizer", str(tmp_path), "--text", "x = 42", "--json").stdout)
    assert out["ids"][0] == 1 and out["pieces"][-2:] == ["4", "2"]


def test_user_errors_are_one_line(tmp_path, debug_checkpoint):
    assert_user_error(camelid("info", "llama-8b", check=False), "llama-8b", "llama-7b", "llama3.1-8b", "tiny")

    broken = tmp_path / "broken"
    shutil.copytree(debug_checkpoint, broken)
    (broken / "model.safetensors").unlink()
    assert_user_error(camelid("generate", "--model", str(broken), "--prompt", "x", check=False), "model.safetensors")

    trunc = tmp_path / "trunc"
    shutil.copytree(debug_checkpoint, trunc)
    data = (trunc / "model.safetensors").read_bytes()
    (trunc / "model.safetensors").write_bytes(data[:-100])
    assert_user_error(
        camelid("score", "--model", str(trunc), "--text", "x y", check=False), "model.safetensors", "truncated"
    )

    nokey = tmp_path / "nokey"
    shutil.copytree(debug_checkpoint, nokey)
    cfg = json.loads((nokey / "config.json").read_text())
    del cfg["model"]["vocab_size"]
    (nokey / "config.json").write_text(json.dumps(cfg))
    assert_user_error(
        camelid("generate", "--model", str(nokey), "--prompt", "x", check=False), "config.json", "vocab_size"
    )

    long_prompt = "word " * 400  # the debug preset has a 256-token context
    assert_user_error(
        camelid("generate", "--model", str(debug_checkpoint), "--prompt", long_prompt, check=False), "context of 256"
    )

    assert_user_error(camelid("generate", "--model", str(tmp_path / "nope"), "--prompt", "x", check=False), "nope")
    assert_user_error(
        camelid("tokenizer", "train", "--input", str(tmp_path / "no.txt"), "--out", str(tmp_path), check=False),
        "no.txt",
    )


def test_version_verbose_and_help_defaults():
    assert camelid("--version").stdout.strip() == f"camelid {__import__('camelid').__version__}"
    assert camelid("info", "tiny", "-v").returncode == 0  # -v after the subcommand, as people type it
    help_text = " ".join(camelid("generate", "--help").stdout.split())  # unwrapped
    assert "(default: 128)" in help_text and "(default: 0.7)" in help_text and "(default: smollm2-135m)" in help_text


@pytest.mark.parametrize("args", [["--help"], ["generate", "--help"], ["info", "smollm2-135m"], ["info", "llama-7b"]])
def test_help_and_info_do_not_import_torch(args):
    code = (
        "import sys, runpy; sys.argv = ['camelid', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('camelid', run_name='__main__')\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        "print('torch' in sys.modules, file=sys.stderr)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip().splitlines()[-1] == "False"


def test_serve_limits_must_be_positive():
    assert_user_error(camelid("serve", "--max-rows", "0", check=False), "--max-rows must be > 0, got 0")
