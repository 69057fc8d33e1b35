"""Exact resume: SIGKILL at a step the test picks, restart from the last checkpoint, same losses to the last digit.
And a kill in the middle of a checkpoint save leaves the previous checkpoint loadable."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import train_losses, write_train_config

KILL_AT = 13  # the last checkpoint before it is step 10 (interval 5)


def camelid_train(args, **popen):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen(
        [sys.executable, "-m", "camelid", "train", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def finish(proc):
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return out


@pytest.fixture(scope="module")
def uninterrupted(token_shards, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full")
    cfg = write_train_config(tmp / "job.toml", token_shards, tmp / "run")
    finish(camelid_train([str(cfg)]))
    return cfg, train_losses(tmp / "run")


@pytest.mark.slow
def test_sigkill_then_resume_reproduces_losses_exactly(uninterrupted, tmp_path):
    cfg, reference = uninterrupted
    run_dir = tmp_path / "run"
    proc = camelid_train([str(cfg), "--job.run_dir", str(run_dir)])
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline:
        if metrics.exists() and any(
            json.loads(x).get("step") == KILL_AT for x in metrics.read_text().splitlines() if x.strip()
        ):
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(train_losses(run_dir))
    assert KILL_AT <= killed_at < 20, killed_at
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert ckpts[-1] == f"step-{(killed_at // 5) * 5:08d}"
    finish(camelid_train([str(cfg), "--job.run_dir", str(run_dir)]))
    resumed = train_losses(run_dir)
    assert sorted(resumed) == list(range(1, 21))
    # fp32 on CPU: every per-step loss equal to the last digit, before and after the kill
    assert [resumed[s] for s in range(1, 21)] == [reference[s] for s in range(1, 21)]


CRASH_IN_SAVE = """
import os, signal, sys
import torch.distributed.checkpoint as dcp
real_save = dcp.save
calls = {"n": 0}
def save(state, checkpoint_id, **kw):
    calls["n"] += 1
    if calls["n"] == 2:  # the second checkpoint (step 10): write half of it, then die
        real_save({"model": state["model"]}, checkpoint_id=checkpoint_id, **kw)
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(state, checkpoint_id=checkpoint_id, **kw)
dcp.save = save
from camelid.cli import main
sys.exit(main(["train", *sys.argv[1:]]))
"""


@pytest.mark.slow
def test_kill_during_checkpoint_save_keeps_previous_checkpoint(uninterrupted, tmp_path):
    cfg, reference = uninterrupted
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_IN_SAVE, str(cfg), "--job.run_dir", str(run_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == -signal.SIGKILL
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == ["step-00000005", "step-00000010.tmp"]  # the interrupted save never became a checkpoint
    # the previous checkpoint is loadable: export it, then resume from it
    out = subprocess.run(
        [sys.executable, "-m", "camelid", "convert", str(run_dir / "checkpoints" / names[0]), str(tmp_path / "export")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    finish(camelid_train([str(cfg), "--job.run_dir", str(run_dir)]))
    resumed = train_losses(run_dir)
    assert [resumed[s] for s in range(1, 21)] == [reference[s] for s in range(1, 21)]
    assert not any(p.name.endswith(".tmp") for p in (run_dir / "checkpoints").iterdir())
