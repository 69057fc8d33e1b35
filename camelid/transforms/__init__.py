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

from camelid.lazy import lazy_exports

# Names load their module on first use (PEP 562), so that reading a quantized file's header (camelid.formats ->
# quant_weight) does not import the distributed and compile machinery.
_HOME = {
    "ParallelDims": "mesh",
    "apply_activation_checkpointing": "checkpointing",
    "apply_compile": "compile",
    "apply_data_parallel": "fsdp",
    "apply_tensor_parallel": "tensor_parallel",
    "build_mesh": "mesh",
    "dp_rank": "mesh",
    "init_distributed": "mesh",
    "parallelize": "parallelism",
    "resolve_dims": "mesh",
}


__getattr__ = lazy_exports(__name__, _HOME)


__all__ = sorted(_HOME)
