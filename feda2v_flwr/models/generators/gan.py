"""Conditional GAN (``generator_type: "gan"``): a generator and a discriminator on token sequences.

Trained with the non-saturating BCE losses in ``feda2v_flwr.models.losses``. Like the flat VAE
it works on a short grid of ``sequence_length`` tokens and interpolates samples to any length.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from feda2v_flwr.models.generators.base import Condition, ConditionEncoder, SequenceGenerator
from feda2v_flwr.models.sequence import pool_tokens


class GANGenerator(SequenceGenerator):
    """[z ; c] -> H -> H -> L*D, reshaped to (B, L, D)."""

    kind = "gan"

    def __init__(
        self,
        *,
        input_dim: int,
        sequence_length: int,
        hidden_dim: int = 512,
        latent_dim: int = 128,
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
        self.net = nn.Sequential(
            nn.Linear(latent_dim + self.condition_dim, hidden_dim),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden_dim, hidden_dim),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden_dim, sequence_length * input_dim),
        )

    def constructor_args(self) -> dict[str, Any]:
        return {**self._common_args(), "hidden_dim": self.hidden_dim}

    def decode(self, z: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        inputs = z if condition is None else torch.cat([z, condition], dim=1)
        return self.net(inputs).view(-1, self.sequence_length, self.input_dim)

    def forward(self, z: torch.Tensor, condition: Condition | None = None) -> torch.Tensor:
        return self.decode(z, self.condition(condition, z.shape[0]))


class GANDiscriminator(nn.Module):
    """(x (B, T, D) pooled to L, flattened ; c) -> one real/fake logit per sample (B,)."""

    def __init__(
        self,
        *,
        input_dim: int,
        sequence_length: int,
        hidden_dim: int = 512,
        condition_slots: dict[str, list[int]] | None = None,
        fusion_dim: int | None = None,
    ):
        super().__init__()
        self.input_dim, self.sequence_length, self.hidden_dim = input_dim, sequence_length, hidden_dim
        self.condition = ConditionEncoder(slots=condition_slots or {}, fusion_dim=fusion_dim)
        self.net = nn.Sequential(
            nn.Linear(sequence_length * input_dim + self.condition.out_dim, hidden_dim),
            nn.LeakyReLU(0.2),
            nn.Dropout(0.2),
            nn.Linear(hidden_dim, hidden_dim),
            nn.LeakyReLU(0.2),
            nn.Dropout(0.2),
            nn.Linear(hidden_dim, 1),
        )

    def constructor_args(self) -> dict[str, Any]:
        return {
            "input_dim": self.input_dim,
            "sequence_length": self.sequence_length,
            "hidden_dim": self.hidden_dim,
            "condition_slots": dict(self.condition.slots),
            "fusion_dim": self.condition.fusion_dim,
        }

    def forward(self, x: torch.Tensor, condition: Condition | None = None) -> torch.Tensor:
        flat = pool_tokens(x, self.sequence_length).flatten(1)  # (B, L*D)
        encoded = self.condition(condition, x.shape[0])
        inputs = flat if encoded is None else torch.cat([flat, encoded], dim=1)
        return self.net(inputs).squeeze(1)
