"""Adapters: frozen audio tokens -> one prompt-embedding slot (SPEC 3.3)."""

from __future__ import annotations

import torch
from torch import nn

from feda2v_flwr.encoders.text_targets import SlotSpec


class TokenMLP(nn.Module):
    """Token-wise MLP with per-token LayerNorm (independent of batch size and composition)."""

    def __init__(self, *, in_dim: int, hidden_dims: list[int], out_dim: int):
        super().__init__()
        layers: list[nn.Module] = []
        for dim in hidden_dims:
            layers += [nn.Linear(in_dim, dim), nn.LayerNorm(dim), nn.GELU()]
            in_dim = dim
        layers.append(nn.Linear(in_dim, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, T, in) -> (B, T, out)


class AttentionPooling(nn.Module):
    """``n_latents`` learned queries cross-attend to the tokens, then a residual MLP."""

    def __init__(self, *, dim: int, n_latents: int, heads: int):
        super().__init__()
        assert dim % heads == 0, f"width {dim} must be divisible by heads {heads}"
        self.latents = nn.Parameter(torch.randn(n_latents, dim) * 0.02)
        self.norm_tokens = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        kv = self.norm_tokens(tokens)  # (B, T, W)
        queries = self.latents.expand(tokens.shape[0], -1, -1)  # (B, n, W)
        pooled, _ = self.attention(queries, kv, kv, need_weights=False)
        pooled = pooled + queries
        return pooled + self.mlp(self.norm_mlp(pooled))  # (B, n, W)


class SlotAdapter(nn.Module):
    """(B, T, in_dim) -> (B, n_latents, slot.dim), squeezed to (B, slot.dim) when n_latents = 1.

    Attention runs at ``width``; the projection to the slot size comes last, so wide slots
    (T5's 4096) do not make the adapter, or the round's upload, large.
    """

    def __init__(self, *, slot: SlotSpec, in_dim: int, hidden_dims: list[int], width: int, heads: int):
        super().__init__()
        self.slot = slot
        self.token_mlp = TokenMLP(in_dim=in_dim, hidden_dims=hidden_dims, out_dim=width)
        self.pool = AttentionPooling(dim=width, n_latents=slot.n_latents, heads=heads)
        self.projection = nn.Linear(width, slot.dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out = self.projection(self.pool(self.token_mlp(tokens)))  # (B, n, dim)
        return out.squeeze(1) if self.slot.n_latents == 1 else out


def build_adapters(
    slots: tuple[SlotSpec, ...], *, in_dim: int, hidden_dims: dict[str, list[int]], width: int, heads: int
) -> nn.ModuleDict:
    return nn.ModuleDict(
        {
            s.name: SlotAdapter(slot=s, in_dim=in_dim, hidden_dims=hidden_dims[s.name], width=width, heads=heads)
            for s in slots
        }
    )
