"""Data parallelism: FSDP2 (`fully_shard`, per block then the root) or DDP replication, on the mesh's data dims."""

from __future__ import annotations

import torch
from torch.distributed.device_mesh import DeviceMesh

from camelid.model.transformer import Transformer
from camelid.transforms.mesh import ParallelDims


def apply_data_parallel(model: Transformer, mesh: DeviceMesh, dims: ParallelDims, param_dtype: torch.dtype | None):
    if dims.dp_shard > 1:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        dp_mesh = mesh["dp_replicate", "dp_shard"] if dims.dp_replicate > 1 else mesh["dp_shard"]
        mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
        for i, block in enumerate(model.layers):
            # The last block's parameters are needed again at once by backward: keep them gathered.
            fully_shard(block, mesh=dp_mesh, mp_policy=mp, reshard_after_forward=i < len(model.layers) - 1)
        fully_shard(model, mesh=dp_mesh, mp_policy=mp)
    elif dims.dp_replicate > 1:
        from torch.distributed._composable.replicate import replicate

        replicate(model, device_mesh=mesh["dp_replicate"])
