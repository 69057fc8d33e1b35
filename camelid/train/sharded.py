"""Training helpers that are aware of sharded (DTensor) parameters: sharding-independent initialisation and the
global gradient norm with clipping."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, distribute_tensor

from camelid.model.transformer import Transformer


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
