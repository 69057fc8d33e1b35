"""`parallelize`: the training transforms 3-6 of the package docstring, applied in that order (torchtitan's)."""

from __future__ import annotations

import torch
from torch.distributed.device_mesh import DeviceMesh

from camelid.model.transformer import Transformer
from camelid.transforms.checkpointing import apply_activation_checkpointing
from camelid.transforms.compile import apply_compile
from camelid.transforms.fsdp import apply_data_parallel
from camelid.transforms.mesh import ParallelDims
from camelid.transforms.tensor_parallel import apply_tensor_parallel


def parallelize(
    model: Transformer,
    mesh: DeviceMesh | None,
    dims: ParallelDims,
    activation_checkpointing: str,
    compile: bool,
    fsdp_param_dtype: torch.dtype | None,
) -> None:
    if mesh is not None and dims.tp > 1:
        apply_tensor_parallel(model, mesh["tp"])
    apply_activation_checkpointing(model, activation_checkpointing)
    if compile:
        apply_compile(model, head=dims.dp_shard == 1)
    if mesh is not None and dims.dp > 1:
        apply_data_parallel(model, mesh, dims, fsdp_param_dtype)
