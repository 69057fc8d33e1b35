"""Rotary position embeddings in Meta's layout: adjacent pairs (x[2i], x[2i+1]) rotate together."""

from __future__ import annotations

import math

import torch

from camelid.model.args import ModelArgs, RopeScaling


def inverse_frequencies(head_dim: int, theta: float, scaling: RopeScaling | None = None) -> torch.Tensor:
    """theta^(-2i/d) for i < d/2, in fp32, with linear or Llama 3.1's frequency-dependent scaling when given."""
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    if scaling is None:
        return freqs
    if scaling.rope_type == "linear":
        return freqs / scaling.factor
    low_wavelen = scaling.original_max_seq_len / scaling.low_freq_factor
    high_wavelen = scaling.original_max_seq_len / scaling.high_freq_factor
    wavelen = 2 * math.pi / freqs
    smooth = (scaling.original_max_seq_len / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    blended = (1 - smooth) * freqs / scaling.factor + smooth * freqs
    # Short wavelengths keep their frequency, long ones are divided by `factor`, the band between blends.
    out = torch.where(wavelen > low_wavelen, freqs / scaling.factor, blended)
    return torch.where(wavelen < high_wavelen, freqs, out)


class RotaryEmbedding(torch.nn.Module):
    """Maps integer positions (B, T) to the (cos, sin) tables (B, T, head_dim/2) used by `apply_rotary`.

    The inverse frequencies are not a buffer: `model.to(bfloat16)` must never round them, so they are made
    in fp32 once per device and kept aside.
    """

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.head_dim = args.head_size
        self.theta = args.rope_theta
        self.scaling = args.rope_scaling
        self._inv_freq: dict[torch.device, torch.Tensor] = {}

    def inv_freq(self, device: torch.device) -> torch.Tensor:
        if device not in self._inv_freq:
            self._inv_freq[device] = inverse_frequencies(self.head_dim, self.theta, self.scaling).to(device)
        return self._inv_freq[device]

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        angles = positions.float()[..., None] * self.inv_freq(positions.device)  # (B, T, hd/2)
        return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, T, H, hd) by per-position angles (B, T, hd/2); computed in fp32 like Meta's reference."""
    xf = x.float().unflatten(-1, (-1, 2))  # (B, T, H, hd/2, 2)
    x0, x1 = xf[..., 0], xf[..., 1]
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    out = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
    return out.flatten(-2).type_as(x)
