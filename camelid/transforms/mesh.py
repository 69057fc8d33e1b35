"""The device mesh: process-group start-up and the (dp_replicate, dp_shard, tp) dimensions of a run."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from camelid.config import ParallelSection
from camelid.errors import ConfigError


@dataclass
class ParallelDims:
    dp_replicate: int
    dp_shard: int
    tp: int
    world_size: int

    @property
    def dp(self) -> int:
        return self.dp_replicate * self.dp_shard


def init_distributed(device_type: str) -> tuple[int, int]:
    """Start the process group when launched by torchrun; returns (rank, world size)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def resolve_dims(cfg: ParallelSection, world_size: int) -> ParallelDims:
    shard = cfg.dp_shard
    if shard == -1:
        shard, rest = divmod(world_size, cfg.dp_replicate * cfg.tp)
        if rest or shard < 1:
            raise ConfigError(
                f"parallel.dp_replicate ({cfg.dp_replicate}) x parallel.tp ({cfg.tp}) must divide the "
                f"{world_size} processes"
            )
    if cfg.dp_replicate * shard * cfg.tp != world_size:
        raise ConfigError(
            f"parallel.dp_replicate x dp_shard x tp = {cfg.dp_replicate} x {shard} x {cfg.tp} "
            f"does not equal the {world_size} processes launched"
        )
    return ParallelDims(cfg.dp_replicate, shard, cfg.tp, world_size)


def build_mesh(dims: ParallelDims, device_type: str) -> DeviceMesh | None:
    if dims.world_size == 1:
        return None
    return init_device_mesh(
        device_type, (dims.dp_replicate, dims.dp_shard, dims.tp), mesh_dim_names=("dp_replicate", "dp_shard", "tp")
    )


def dp_rank(mesh: DeviceMesh | None) -> int:
    if mesh is None:
        return 0
    return mesh["dp_replicate"].get_local_rank() * mesh["dp_shard"].size() + mesh["dp_shard"].get_local_rank()
