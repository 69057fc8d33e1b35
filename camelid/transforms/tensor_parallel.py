"""Tensor parallelism (Megatron-style): q/k/v and w1/w3 split by output rows, wo and w2 by input columns."""

from __future__ import annotations

from torch.distributed.device_mesh import DeviceMesh

from camelid.errors import ConfigError
from camelid.model.transformer import Transformer


def apply_tensor_parallel(model: Transformer, mesh: DeviceMesh) -> None:
    """Megatron-style split of every block: q/k/v and w1/w3 by output rows, wo and w2 by input columns."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    args = model.args
    if args.n_heads % mesh.size() or args.kv_heads % mesh.size():
        raise ConfigError(
            f"parallel.tp ({mesh.size()}) must divide n_heads ({args.n_heads}) and n_kv_heads ({args.kv_heads})"
        )
    plan = {
        "attention.wq": ColwiseParallel(),
        "attention.wk": ColwiseParallel(),
        "attention.wv": ColwiseParallel(),
        "attention.wo": RowwiseParallel(),
        "feed_forward.w1": ColwiseParallel(),
        "feed_forward.w3": ColwiseParallel(),
        "feed_forward.w2": RowwiseParallel(),
    }
    for block in model.layers:
        parallelize_module(block, mesh, plan)
