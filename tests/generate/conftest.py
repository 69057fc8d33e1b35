"""The debug model with its logits spread out, shared by the generation tests."""

import pytest
import torch

from camelid.model import build_model, preset


@pytest.fixture(scope="module")
def model():
    m = build_model(preset("debug"), seed=5).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.mul_(8)  # spread the logits so greedy paths are varied
    return m
