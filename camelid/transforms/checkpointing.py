"""Activation checkpointing per block: `full` recomputes each block in backward, `selective` keeps the matmul
and attention outputs (the paper's choice: save the expensive activations) and recomputes the cheap ones."""

from __future__ import annotations

import functools

import torch

from camelid.model.transformer import Transformer


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
