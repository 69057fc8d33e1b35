"""Training checkpoints with torch.distributed.checkpoint (sharded: each rank writes its own shards).

A checkpoint is `run_dir/checkpoints/step-NNNNNNNN/`: the DCP files (model and optimizer), `train.json`
(step, data-loader state, model config), `rng-rank{r}.pt` per rank and a copy of the tokenizer. It is
written under `step-NNNNNNNN.tmp` and renamed when every rank has finished, so a crash during a save
leaves the previous checkpoint as it was; incomplete `.tmp` directories are removed at the next start.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from camelid.errors import CheckpointError
from camelid.model.args import ModelArgs

log = logging.getLogger(__name__)
_STEP_DIR = re.compile(r"^step-(\d{8})$")


@contextlib.contextmanager
def _dcp_quietly():
    """DCP warns on every single-process save and load that it assumes a single process (that is intended), and
    logs a traceback at WARNING for each file a damaged checkpoint lacks (camelid reports the damage itself, in one
    line)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(previous)


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:08d}"


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP_DIR.match(p.name) and (p / "train.json").is_file()]
    return sorted(found, key=lambda p: p.name)


def clean_incomplete(root: Path) -> None:
    if _rank() == 0 and root.is_dir():
        for p in root.glob("step-*.tmp"):
            log.warning("removing incomplete checkpoint %s (a save was interrupted)", p)
            shutil.rmtree(p, ignore_errors=True)
    _barrier()


def _rng_state() -> dict[str, torch.Tensor]:
    """Every RNG this process uses, as plain tensors so the file loads with `weights_only=True`."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
        "numpy_rest": torch.tensor([pos, has_gauss], dtype=torch.int64),
        "numpy_gauss": torch.tensor(gauss, dtype=torch.float64),
        "python": torch.tensor(py_state, dtype=torch.int64),
        "python_meta": torch.tensor([version, py_gauss is not None], dtype=torch.int64),
        "python_gauss": torch.tensor(py_gauss or 0.0, dtype=torch.float64),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(rng: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(rng["torch"])
    pos, has_gauss = rng["numpy_rest"].tolist()
    keys = rng["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, pos, has_gauss, float(rng["numpy_gauss"])))
    version, has_py_gauss = rng["python_meta"].tolist()
    py_gauss = float(rng["python_gauss"]) if has_py_gauss else None
    random.setstate((version, tuple(rng["python"].tolist()), py_gauss))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])


def save(
    root: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    train_state: dict,
    args: ModelArgs,
    tokenizer_file: Path | None,
    keep: int,
) -> Path:
    """Write checkpoint `step` on every rank (collective), then keep only the newest `keep`. A save that fails
    (a full disk) removes its temp directory and raises a CheckpointError naming the checkpoint that survives."""
    final = step_dir(root, step)
    tmp = final.with_name(final.name + ".tmp")
    try:
        if _rank() == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        _barrier()
        state = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, optimizer)}
        with _dcp_quietly():
            dcp.save(state, checkpoint_id=str(tmp), no_dist=not dist.is_initialized())
        torch.save(_rng_state(), tmp / f"rng-rank{_rank()}.pt")
        _barrier()
        if _rank() == 0:
            if tokenizer_file is not None:
                shutil.copyfile(tokenizer_file, tmp / "tokenizer.model")
            meta = {"step": step, "model": args.to_dict(), **train_state}
            (tmp / "train.json").write_text(json.dumps(meta, indent=2))
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
    except (OSError, RuntimeError, CheckpointException) as e:
        cause = getattr(e, "strerror", None) or str(e).strip().splitlines()[-1][:200]
        with contextlib.suppress(OSError):  # torch reports a full disk as a zip-writer error: say what it is
            if shutil.disk_usage(root).free < 1 << 20:
                cause = f"no space left on the device ({cause})"
        if _rank() == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        previous = list_checkpoints(root)
        kept = f"the previous checkpoint {previous[-1]} is intact" if previous else "no earlier checkpoint exists"
        raise CheckpointError(f"saving checkpoint step {step} to {root} failed ({cause}); {kept}") from None
    if _rank() == 0:
        for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def read_meta(path: Path) -> dict:
    try:
        meta = json.loads((path / "train.json").read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is not a complete training checkpoint (no train.json)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path / 'train.json'} is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), dict) or not isinstance(meta.get("step"), int):
        raise CheckpointError(f"{path / 'train.json'} lacks the step or the model config")
    return meta


def check_model(path: Path, args: ModelArgs) -> None:
    saved = ModelArgs.from_dict(read_meta(path)["model"], source=str(path / "train.json"))
    if saved != args:
        diff = [
            f"{k} {getattr(saved, k)} vs {getattr(args, k)}"
            for k in args.to_dict()
            if getattr(saved, k) != getattr(args, k)
        ]
        raise CheckpointError(
            f"checkpoint {path} was saved for a different model shape ({', '.join(diff)}); "
            "use the same [model] settings or a new job.run_dir"
        )


def load(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore model, optimizer and this rank's RNG state from `path`; returns train.json's contents. A damaged
    or incomplete checkpoint (truncated or missing files) is a CheckpointError naming it."""
    meta = read_meta(path)
    if not (path / ".metadata").is_file():
        raise CheckpointError(f"checkpoint {path} is damaged or incomplete (its DCP .metadata file is missing)")
    state = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, optimizer)}
    rng_file = path / f"rng-rank{_rank()}.pt"
    try:
        with _dcp_quietly():
            dcp.load(state, checkpoint_id=str(path), no_dist=not dist.is_initialized())
        rng = torch.load(rng_file, weights_only=True) if rng_file.is_file() else None
    except (Exception, CheckpointException) as e:  # DCP's CheckpointException is a BaseException
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(f"checkpoint {path} is damaged or incomplete ({type(e).__name__}: {first})") from None
    set_model_state_dict(model, state["model"])
    set_optimizer_state_dict(model, optimizer, state["optim"])
    if rng is not None:
        _set_rng_state(rng)
    return meta


def load_model_weights(path: Path, model: torch.nn.Module) -> None:
    """Only the model part of a training checkpoint, into a plain (unsharded) model: for export."""
    state = {"model": get_model_state_dict(model, options=StateDictOptions(full_state_dict=False))}
    with _dcp_quietly():
        dcp.load(state, checkpoint_id=str(path), no_dist=not dist.is_initialized())
    set_model_state_dict(model, state["model"])
