"""Parallelism applied from outside the model, in torchtitan's order: tensor parallel, activation
checkpointing, compile, then FSDP2 (or DDP replication), on one DeviceMesh (dp_replicate, dp_shard, tp).
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.tensor import DTensor, distribute_tensor

from camelid.config import ParallelSection
from camelid.errors import ConfigError
from camelid.model.transformer import Transformer

log = logging.getLogger(__name__)


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


def _save_matmuls(ctx, op, *args, **kwargs):
    from torch.utils.checkpoint import CheckpointPolicy

    expensive = {
        torch.ops.aten.mm.default,
        torch.ops.aten._scaled_dot_product_flash_attention.default,
        torch.ops.aten._scaled_dot_product_efficient_attention.default,
        torch.ops.aten._scaled_dot_product_cudnn_attention.default,
    }
    return CheckpointPolicy.MUST_SAVE if op in expensive else CheckpointPolicy.PREFER_RECOMPUTE


def apply_activation_checkpointing(model: Transformer, mode: str) -> None:
    """`full` recomputes each block in backward; `selective` keeps matmul and attention outputs (the paper's
    choice: save the expensive activations) and recomputes the cheap element-wise ones."""
    if mode == "none":
        return
    from torch.utils.checkpoint import checkpoint, create_selective_checkpoint_contexts

    context_fn = None
    if mode == "selective":
        context_fn = functools.partial(create_selective_checkpoint_contexts, _save_matmuls)
    for block in model.layers:
        inner = block.forward
        kwargs = {"context_fn": context_fn} if context_fn else {}

        def forward(*a, _inner=inner, _kw=kwargs, **k):
            return checkpoint(_inner, *a, use_reentrant=False, **_kw, **k)

        block.forward = forward


def apply_compile(model: Transformer, head: bool) -> None:
    """Compile each block (one graph, reused by every layer) and, with `head`, the final norm + output
    projection + cross-entropy. The head is left eager under FSDP, whose root hooks gather its parameters."""
    for block in model.layers:
        block.compile(fullgraph=True)
    if head:
        model.head_loss = torch.compile(model.head_loss, fullgraph=True)


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


@torch.no_grad()
def init_weights(model: Transformer, seed: int) -> None:
    """The same initial values as `Transformer.init_weights(seed)`, whatever the sharding: every rank draws
    the full tensor from the same seeded generator and keeps its own shard."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    for name, p in model.named_parameters():
        full = model.initial_value(name, tuple(p.shape), gen)
        if isinstance(p, DTensor):
            local = distribute_tensor(
                full.to(p.device_mesh.device_type), p.device_mesh, p.placements, src_data_rank=None
            )
            p.to_local().copy_(local.to_local())
        else:
            p.copy_(full)


def grad_norm_and_clip(params: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """Global L2 norm of the gradients over all ranks and shardings; scales them down to `max_norm`.

    Multi-tensor kernels and a tensor scale factor: nothing here waits for the device.
    """
    grads = [p.grad for p in params if p.grad is not None]
    groups: dict[tuple, list[torch.Tensor]] = {}
    for g in grads:
        key = (g.device_mesh, tuple(g.placements)) if isinstance(g, DTensor) else (None, ())
        groups.setdefault(key, []).append(g.to_local() if isinstance(g, DTensor) else g)
    total = None
    for (mesh, placements), gs in groups.items():
        norms = torch._foreach_norm(gs, 2.0, dtype=torch.float32)
        local = torch.stack(norms).square().sum()
        if mesh is not None:
            for dim, placement in enumerate(placements):
                if placement.is_shard() or placement.is_partial():
                    dist.all_reduce(local, group=mesh.get_group(dim))
        total = local if total is None else total + local.to(total.device)
    if total is None:
        return torch.tensor(0.0)
    norm = total.sqrt()
    if max_norm > 0:
        coef = (max_norm / (norm + 1e-6)).clamp(max=1.0)
        for gs in groups.values():
            torch._foreach_mul_(gs, coef)
    return norm
