"""FSDP2, DDP and tensor parallel on CPU with gloo and 2 processes against the single-process loss curve."""

import os
import subprocess
import sys

import pytest

from tests.conftest import train_losses, write_train_config

MODES = {
    "fsdp2-shard-2": ["--parallel.dp_shard", "2"],
    "ddp-replicate-2": ["--parallel.dp_replicate", "2", "--parallel.dp_shard", "1"],
    "tensor-parallel-2": ["--parallel.tp", "2", "--parallel.dp_shard", "1"],
}


def run(args, nproc=1):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    if nproc == 1:
        cmd = [sys.executable, "-m", "camelid", "train", *args]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            str(nproc),
            "-m",
            "camelid",
            "train",
            *args,
        ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def single_run(token_shards, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("single")
    cfg = write_train_config(tmp / "job.toml", token_shards, tmp / "run", checkpoint={"interval": 0})
    run([str(cfg)])
    return cfg, train_losses(tmp / "run")


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_parallel_loss_curve_matches_single_process(mode, single_run, tmp_path):
    cfg, reference = single_run
    assert len(reference) == 20
    run([str(cfg), "--job.run_dir", str(tmp_path / "run"), *MODES[mode]], nproc=2)
    losses = train_losses(tmp_path / "run")
    assert sorted(losses) == sorted(reference)
    worst = max(abs(losses[s] - reference[s]) / abs(reference[s]) for s in reference)
    print(f"{mode}: max relative loss difference over 20 fp32 steps = {worst:.2e}")
    assert worst <= 1e-4
    assert reference[20] < reference[1] - 0.5  # the curve being matched is a real learning curve
