"""Model transforms, applied from outside the model (which knows nothing of them), one module each:

| order | module | what |
|---|---|---|
| 1 | `quantize` | weight-only int8 / int4 linears (a module swap); inference and QLoRA's frozen base |
| 2 | `lora` | low-rank adapters beside the linears (a module swap) |
| 3 | `tensor_parallel` | q/k/v, w1/w3 by rows, wo/w2 by columns on the mesh's tp dimension |
| 4 | `checkpointing` | activation checkpointing per block (selective or full) |
| 5 | `compile` | torch.compile per block, and the loss head |
| 6 | `fsdp` | FSDP2 sharding (or DDP replication) on the mesh's data dimensions |

`parallelize` applies 3-6 for training in that order (torchtitan's); `mesh` starts the process group and builds
the DeviceMesh.
"""

from __future__ import annotations

import torch
from torch.distributed.device_mesh import DeviceMesh

from camelid.model.transformer import Transformer
from camelid.transforms.checkpointing import apply_activation_checkpointing
from camelid.transforms.compile import apply_compile
from camelid.transforms.fsdp import apply_data_parallel
from camelid.transforms.mesh import ParallelDims, build_mesh, dp_rank, init_distributed, resolve_dims
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


__all__ = [
    "ParallelDims",
    "apply_activation_checkpointing",
    "apply_compile",
    "apply_data_parallel",
    "apply_tensor_parallel",
    "build_mesh",
    "dp_rank",
    "init_distributed",
    "parallelize",
    "resolve_dims",
]
