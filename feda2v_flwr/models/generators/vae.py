"""Variational generators of audio-encoder token sequences (SPEC 3.4, seeds 000 and 001).

Two designs:

* **flat** (``VAEGenerator`` and its conditioned / multi-modal variants): the seed's MLP VAE on
  the flattened sequence, ``L*D -> H -> H -> 2*latent`` and back. Its first and last layers
  grow with L (about 1.9 B parameters at L = 1214, D = 768, H = 1024), so it is trained on
  sequences pooled to a short L and its samples are interpolated to the output length.
* **tokenwise** (``TokenwiseVAEGenerator``): shared per-token layers, 1-D convolutions and
  continuous positional queries. Its parameter count does not depend on L, so it trains on
  full 1214-token AST sequences directly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from feda2v_flwr.models.generators.base import Condition, SequenceGenerator, draw_normal
from feda2v_flwr.models.losses import LOGVAR_RANGE
from feda2v_flwr.models.sequence import fourier_positions, pool_tokens


class _VAEMixin:
    """encode -> reparameterise -> decode, shared by both designs."""

    def encode(self, x: torch.Tensor, condition: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(
        self, x: torch.Tensor, condition: Condition | None = None, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, D), pooled to L -> (reconstruction (B, L, D), mu (B, latent), logvar (B, latent))."""
        encoded = self.condition(condition, x.shape[0])
        mu, logvar = self.encode(pool_tokens(x, self.sequence_length), encoded)
        logvar = logvar.clamp(*LOGVAR_RANGE)
        z = mu + draw_normal(mu.shape, mu, generator) * torch.exp(0.5 * logvar)
        return self.decode(z, encoded), mu, logvar


def _with(condition: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    return x if condition is None else torch.cat([x, condition], dim=1)


class VAEGenerator(_VAEMixin, SequenceGenerator):
    """Flat MLP VAE sized by ``sequence_length`` (seed 000); unconditioned unless given slots.

    encoder: [x (L*D) ; c] -> H -> H -> (mu, logvar);  decoder: [z ; c] -> H -> H -> L*D.
    No output squashing: audio embeddings are not bounded to [-1, 1].
    """

    kind = "vae"

    def __init__(
        self,
        *,
        input_dim: int,
        sequence_length: int,
        hidden_dim: int = 1024,
        latent_dim: int = 256,
        condition_slots: dict[str, list[int]] | None = None,
        fusion_dim: int | None = None,
        learned_upsampler: bool = False,
    ):
        super().__init__(
            input_dim=input_dim,
            sequence_length=sequence_length,
            latent_dim=latent_dim,
            condition_slots=condition_slots,
            fusion_dim=fusion_dim,
            learned_upsampler=learned_upsampler,
        )
        self.hidden_dim = hidden_dim
        flat, cond = sequence_length * input_dim, self.condition_dim
        self.encoder = nn.Sequential(
            nn.Linear(flat + cond, hidden_dim),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden_dim, hidden_dim),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden_dim, 2 * latent_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim + cond, hidden_dim),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden_dim, hidden_dim),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden_dim, flat),
        )

    def constructor_args(self) -> dict[str, Any]:
        return {**self._common_args(), "hidden_dim": self.hidden_dim}

    def encode(self, x: torch.Tensor, condition: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        stats = self.encoder(_with(condition, x.flatten(1)))  # (B, L, D) -> (B, L*D) -> (B, 2*latent)
        return stats.chunk(2, dim=1)

    def decode(self, z: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        return self.decoder(_with(condition, z)).view(-1, self.sequence_length, self.input_dim)


class ConditionedVAEGenerator(VAEGenerator):
    """The server's flat VAE (seed 001): conditioned on the class's CLIP prompt, per sample."""

    def __init__(self, *, condition_slots: dict[str, list[int]], **kwargs: Any):
        if not condition_slots:
            raise ValueError("ConditionedVAEGenerator needs condition_slots, e.g. {'clip': [768]}")
        super().__init__(condition_slots=condition_slots, **kwargs)


class MultiModalVAEGenerator(VAEGenerator):
    """Flat VAE conditioned on CLIP ⊕ T5 (flux): both prompts are projected and fused first."""

    def __init__(self, *, condition_slots: dict[str, list[int]], fusion_dim: int = 512, **kwargs: Any):
        if len(condition_slots or {}) < 2:
            raise ValueError("MultiModalVAEGenerator needs two condition slots, e.g. clip and t5")
        super().__init__(condition_slots=condition_slots, fusion_dim=fusion_dim, **kwargs)


class _ConvBlock(nn.Module):
    """Pre-norm residual 1-D convolution along the tokens: (B, T, H) -> (B, T, H)."""

    def __init__(self, dim: int, kernel_size: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.conv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(torch.nn.functional.gelu(self.norm(x)).transpose(1, 2)).transpose(1, 2)


class TokenwiseVAEGenerator(_VAEMixin, SequenceGenerator):
    """Length-independent VAE: no layer sees more than one token's features at a time.

    encoder: per-token Linear([x_t ; pos_t]) -> conv blocks -> attention pooling (one learned
    query) -> [h ; c] -> (mu, logvar).
    decoder: [z ; c] -> FiLM (scale, shift) applied to positional queries pos_t -> conv blocks
    -> per-token Linear -> (B, L, D).
    Positions are continuous (Fourier features of t / L), so ``sequence_length`` only sets the
    token grid; the parameter count is the same for L = 4 and L = 1214.
    """

    kind = "vae"

    def __init__(
        self,
        *,
        input_dim: int,
        sequence_length: int,
        hidden_dim: int = 256,
        latent_dim: int = 256,
        num_blocks: int = 2,
        kernel_size: int = 3,
        heads: int = 4,
        num_frequencies: int = 16,
        condition_slots: dict[str, list[int]] | None = None,
        fusion_dim: int | None = None,
        learned_upsampler: bool = False,
    ):
        super().__init__(
            input_dim=input_dim,
            sequence_length=sequence_length,
            latent_dim=latent_dim,
            condition_slots=condition_slots,
            fusion_dim=fusion_dim,
            learned_upsampler=learned_upsampler,
        )
        assert hidden_dim % heads == 0 and kernel_size % 2 == 1
        self.hidden_dim, self.num_blocks, self.kernel_size = hidden_dim, num_blocks, kernel_size
        self.heads, self.num_frequencies = heads, num_frequencies
        pos, cond = 2 * num_frequencies, self.condition_dim
        self.embed = nn.Linear(input_dim + pos, hidden_dim)
        self.encoder_blocks = nn.Sequential(*[_ConvBlock(hidden_dim, kernel_size) for _ in range(num_blocks)])
        self.pool_query = nn.Parameter(torch.randn(1, 1, hidden_dim) * 0.02)
        self.pool_norm = nn.LayerNorm(hidden_dim)
        self.pool = nn.MultiheadAttention(hidden_dim, heads, batch_first=True)
        self.encoder_head = nn.Sequential(
            nn.Linear(hidden_dim + cond, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, 2 * latent_dim)
        )
        self.code = nn.Sequential(
            nn.Linear(latent_dim + cond, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, 2 * hidden_dim)
        )
        self.positions = nn.Sequential(nn.Linear(pos, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim))
        self.decoder_blocks = nn.Sequential(*[_ConvBlock(hidden_dim, kernel_size) for _ in range(num_blocks)])
        self.output = nn.Sequential(nn.LayerNorm(hidden_dim), nn.Linear(hidden_dim, input_dim))

    def constructor_args(self) -> dict[str, Any]:
        return {
            **self._common_args(),
            "hidden_dim": self.hidden_dim,
            "num_blocks": self.num_blocks,
            "kernel_size": self.kernel_size,
            "heads": self.heads,
            "num_frequencies": self.num_frequencies,
        }

    def encode(self, x: torch.Tensor, condition: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        batch, length, _ = x.shape
        pos = fourier_positions(length, self.num_frequencies, x.device).expand(batch, -1, -1)
        tokens = self.encoder_blocks(self.embed(torch.cat([x, pos], dim=2)))  # (B, L, H)
        keys = self.pool_norm(tokens)
        pooled, _ = self.pool(self.pool_query.expand(batch, -1, -1), keys, keys, need_weights=False)  # (B, 1, H)
        return self.encoder_head(_with(condition, pooled.squeeze(1))).chunk(2, dim=1)

    def decode(self, z: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        scale, shift = self.code(_with(condition, z)).chunk(2, dim=1)  # (B, H) each
        pos = self.positions(fourier_positions(self.sequence_length, self.num_frequencies, z.device))  # (L, H)
        tokens = pos[None] * (1 + scale[:, None]) + shift[:, None]  # (B, L, H)
        return self.output(self.decoder_blocks(tokens))  # (B, L, D)


def count_flat_vae_parameters(
    *, input_dim: int, sequence_length: int, hidden_dim: int, latent_dim: int, condition_dim: int = 0
) -> int:
    """Parameters of ``VAEGenerator`` (with a flattened condition of ``condition_dim``) without
    allocating it: the seed's full-length design is too large to build in a test."""
    flat = sequence_length * input_dim

    def linear(i: int, o: int) -> int:
        return i * o + o

    encoder = (
        linear(flat + condition_dim, hidden_dim) + linear(hidden_dim, hidden_dim) + linear(hidden_dim, 2 * latent_dim)
    )
    decoder = linear(latent_dim + condition_dim, hidden_dim) + linear(hidden_dim, hidden_dim) + linear(hidden_dim, flat)
    return encoder + decoder
