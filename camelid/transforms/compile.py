"""torch.compile applied from outside: each block (one graph reused by every layer) and the loss head."""

from __future__ import annotations

import torch

from camelid.model.transformer import Transformer


def apply_compile(model: Transformer, head: bool) -> None:
    """Compile each block (one graph, reused by every layer) and, with `head`, the final norm + output
    projection + cross-entropy. The head is left eager under FSDP, whose root hooks gather its parameters."""
    for block in model.layers:
        block.compile(fullgraph=True)
    if head:
        model.head_loss = torch.compile(model.head_loss, fullgraph=True)
