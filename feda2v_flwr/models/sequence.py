"""Operations along the token axis: pooling, interpolation, positions, a learned upsampler.

All functions take and return ``(B, T, D)`` tensors (batch, tokens, features).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def pool_tokens(x: torch.Tensor, length: int) -> torch.Tensor:
    """Adaptive average pooling along the token axis: (B, T, D) -> (B, length, D)."""
    if x.shape[1] == length:
        return x
    return F.adaptive_avg_pool1d(x.transpose(1, 2), length).transpose(1, 2)


def resize_tokens(x: torch.Tensor, length: int, mode: str = "linear") -> torch.Tensor:
    """Interpolate along the token axis: (B, T, D) -> (B, length, D); linear, nearest or cubic.

    ``align_corners=False``: linear and nearest upsampling keep the first and last token exactly
    (cubic overshoots slightly at the ends).
    """
    if mode not in ("linear", "nearest", "cubic"):
        raise ValueError(f"Unknown interpolation mode '{mode}'. Allowed: linear, nearest, cubic")
    if x.shape[1] == length:
        return x
    channels_first = x.transpose(1, 2)  # (B, D, T)
    if mode == "cubic":  # 1-D cubic = bicubic on a height-1 image
        out = F.interpolate(channels_first.unsqueeze(2), size=(1, length), mode="bicubic", align_corners=False)
        return out.squeeze(2).transpose(1, 2)
    kwargs = {"align_corners": False} if mode == "linear" else {}
    return F.interpolate(channels_first, size=length, mode=mode, **kwargs).transpose(1, 2)


def fourier_positions(length: int, num_frequencies: int, device: torch.device | None = None) -> torch.Tensor:
    """Continuous position features of token centres in [0, 1]: (length, 2 * num_frequencies).

    They depend on the relative position only, so a module that reads them works at any length.
    """
    centres = (torch.arange(length, device=device, dtype=torch.float32) + 0.5) / length  # (T,)
    freqs = math.pi * 2.0 ** torch.arange(num_frequencies, device=device, dtype=torch.float32)  # (F,)
    angles = centres[:, None] * freqs[None, :]  # (T, F)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class AttentionUpsampler(nn.Module):
    """Learned upsampling: linear interpolation + a cross-attention correction.

    Each output position (a query built from its continuous position) attends to the short
    input sequence (keys carry the input positions). The correction's last layer starts at zero,
    so an untrained upsampler is exactly linear interpolation; training teaches it to undo
    adaptive pooling (see ``GeneratorLearner``). Parameters do not depend on either length.
    """

    def __init__(self, *, dim: int, hidden_dim: int = 128, heads: int = 4, num_frequencies: int = 16):
        super().__init__()
        assert hidden_dim % heads == 0, f"hidden_dim {hidden_dim} must be divisible by heads {heads}"
        self.num_frequencies = num_frequencies
        pos_dim = 2 * num_frequencies
        self.query = nn.Sequential(nn.Linear(pos_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim))
        self.key_value = nn.Linear(dim + pos_dim, hidden_dim)
        self.attention = nn.MultiheadAttention(hidden_dim, heads, batch_first=True)
        self.out = nn.Linear(hidden_dim, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, length: int) -> torch.Tensor:
        """(B, L, D) -> (B, length, D)."""
        base = resize_tokens(x, length, "linear")
        if x.shape[1] == length:
            return base
        batch = x.shape[0]
        in_pos = fourier_positions(x.shape[1], self.num_frequencies, x.device).expand(batch, -1, -1)
        out_pos = fourier_positions(length, self.num_frequencies, x.device)
        keys = self.key_value(torch.cat([x, in_pos], dim=2))  # (B, L, H)
        queries = self.query(out_pos).expand(batch, -1, -1)  # (B, length, H)
        attended, _ = self.attention(queries, keys, keys, need_weights=False)
        return base + self.out(attended)
