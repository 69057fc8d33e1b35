"""Training faults: SIGKILL at random steps and during saves, damaged newest checkpoints, a full disk. A resumed
run reproduces the uninterrupted losses exactly; a damaged checkpoint is skipped with a warning; a failed save
is one line that names the checkpoint that survives."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import train_losses, write_train_config
from tests.faults.cases import record


def train(cfg: Path, run_dir: Path, *extra: str, wait: bool = True):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "camelid", "train", str(cfg), "--job.run_dir", str(run_dir), *extra]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def reference(token_shards, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    cfg = write_train_config(tmp / "job.toml", token_shards, tmp / "run")
    rc, _, err = train(cfg, tmp / "run")
    assert rc == 0, err[-2000:]
    return cfg, train_losses(tmp / "run")


def kill_at(cfg: Path, run_dir: Path, step: int) -> int:
    proc = train(cfg, run_dir, wait=False)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and any(
            json.loads(x).get("step") == step for x in metrics.read_text().splitlines() if x.strip()
        ):
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return max(train_losses(run_dir), default=0)


def same_losses(run_dir: Path, want: dict) -> bool:
    got = train_losses(run_dir)
    return sorted(got) == sorted(want) and all(got[s] == want[s] for s in want)


@pytest.mark.slow
def test_sigkill_at_random_steps_then_resume(reference, tmp_path):
    cfg, want = reference
    rng = random.Random(20261201)
    points = sorted(rng.sample(range(2, 19), 3))
    run_dir = tmp_path / "run"
    for step in points:  # three kills in one run, each resumed
        kill_at(cfg, run_dir, step)
    rc, _, err = train(cfg, run_dir)
    ok = rc == 0 and same_losses(run_dir, want)
    record("training", "clean" if ok else "crash")
    print(f"killed at steps {points}, resumed each time: losses identical to the uninterrupted run: {ok}")
    assert ok, err[-2000:]


def damage(ckpt: Path, how: str) -> None:
    files = sorted(p for p in ckpt.iterdir() if p.suffix == ".distcp")
    if how == "truncated":
        data = files[0].read_bytes()
        files[0].write_bytes(data[: len(data) // 3])
    elif how == "shard_deleted":
        files[0].unlink()
    elif how == "metadata_deleted":
        (ckpt / ".metadata").unlink()
    elif how == "rng_garbage":
        (ckpt / "rng-rank0.pt").write_bytes(b"not a torch file")
    elif how == "train_json_garbage":
        (ckpt / "train.json").write_text("{")


@pytest.mark.parametrize("how", ["truncated", "shard_deleted", "metadata_deleted", "rng_garbage", "train_json_garbage"])
def test_damaged_newest_checkpoint_falls_back_to_the_previous(reference, tmp_path, how):
    cfg, want = reference
    run_dir = tmp_path / "run"
    kill_at(cfg, run_dir, 13)  # checkpoints at steps 5 and 10
    damage(run_dir / "checkpoints" / "step-00000010", how)
    rc, _, err = train(cfg, run_dir)
    warned = "damaged" in err or "not valid JSON" in err
    ok = rc == 0 and warned and same_losses(run_dir, want) and "Traceback" not in err
    record("training", "clean" if ok else "crash")
    assert ok, err[-3000:]


def test_no_loadable_checkpoint_is_one_line(reference, tmp_path):
    cfg, _ = reference
    run_dir = tmp_path / "run"
    rc, _, err = train(cfg, run_dir, "--training.steps", "6")
    assert rc == 0, err
    for ckpt in (run_dir / "checkpoints").iterdir():
        damage(ckpt, "truncated")
    rc, _, err = train(cfg, run_dir)
    lines = [x for x in err.strip().splitlines() if x.startswith("error:")]
    ok = rc == 2 and len(lines) == 1 and "Traceback" not in err and "no checkpoint" in lines[0]
    record("training", "clean" if ok else "crash")
    assert ok, err[-3000:]


@pytest.fixture
def small_disk(tmp_path):
    """A 6 MB tmpfs the test mounts itself (room for one checkpoint of the debug model, not two)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({p.stderr.strip()}); the full-disk case needs one")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_during_save(reference, small_disk):
    cfg, _ = reference
    run_dir = small_disk / "run"
    rc, _, err = train(cfg, run_dir, "--metrics.tensorboard", "false")
    lines = [x for x in err.strip().splitlines() if x.startswith("error:")]
    survivors = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    ok = (
        rc == 2
        and len(lines) == 1
        and "Traceback" not in err
        and "is intact" in lines[0]
        and survivors == ["step-00000005"]
    )
    record("training", "clean" if ok else "crash")
    print(f"full disk: {lines[0] if lines else err[-300:]}")
    assert ok, (survivors, err[-3000:])
