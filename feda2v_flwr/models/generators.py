"""Generators of synthetic audio-encoder embeddings ``(N, L, D)`` (SPEC 3.4, seed 001)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LOGVAR_RANGE = (-10.0, 5.0)


def pool_tokens(x: torch.Tensor, length: int) -> torch.Tensor:
    """Adaptive average pooling along the token axis: (B, T, D) -> (B, length, D)."""
    if x.shape[1] == length:
        return x
    return F.adaptive_avg_pool1d(x.transpose(1, 2), length).transpose(1, 2)


def resize_tokens(x: torch.Tensor, length: int, mode: str = "linear") -> torch.Tensor:
    """Interpolate along the token axis: (B, T, D) -> (B, length, D); linear, nearest or cubic."""
    if x.shape[1] == length:
        return x
    channels_first = x.transpose(1, 2)  # (B, D, T)
    if mode == "cubic":  # 1-D cubic = bicubic on a height-1 image
        out = F.interpolate(channels_first.unsqueeze(2), size=(1, length), mode="bicubic", align_corners=False)
        return out.squeeze(2).transpose(1, 2)
    kwargs = {"align_corners": False} if mode == "linear" else {}
    return F.interpolate(channels_first, size=length, mode=mode, **kwargs).transpose(1, 2)


class ConditionedVAEGenerator(nn.Module):
    """Conditional VAE on flattened token sequences; the condition is **per sample**.

    encoder: [x (L*D) ; c (C)] -> H -> H -> (mu, logvar) in R^latent
    decoder: [z ; c] -> H -> H -> L*D (no output squashing: embeddings are not bounded)
    Inputs of another length are pooled to L; samples are interpolated to any length.
    """

    def __init__(
        self,
        *,
        input_dim: int,
        condition_dim: int,
        sequence_length: int,
        hidden_dim: int = 512,
        latent_dim: int = 256,
    ):
        super().__init__()
        self.input_dim, self.condition_dim = input_dim, condition_dim
        self.sequence_length, self.hidden_dim, self.latent_dim = sequence_length, hidden_dim, latent_dim
        flat = sequence_length * input_dim
        self.encoder = nn.Sequential(
            nn.Linear(flat + condition_dim, hidden_dim),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden_dim, hidden_dim),
            nn.LeakyReLU(0.2),
        )
        self.fc_mu = nn.Linear(hidden_dim, latent_dim)
        self.fc_logvar = nn.Linear(hidden_dim, latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim + condition_dim, hidden_dim),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden_dim, hidden_dim),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden_dim, flat),
        )

    def constructor_args(self) -> dict[str, int]:
        return {
            "input_dim": self.input_dim,
            "condition_dim": self.condition_dim,
            "sequence_length": self.sequence_length,
            "hidden_dim": self.hidden_dim,
            "latent_dim": self.latent_dim,
        }

    def encode(self, x: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = pool_tokens(x, self.sequence_length).flatten(1)  # (B, L, D) -> (B, L*D)
        hidden = self.encoder(torch.cat([flat, condition], dim=1))
        return self.fc_mu(hidden), self.fc_logvar(hidden).clamp(*LOGVAR_RANGE)

    def decode(self, z: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        out = self.decoder(torch.cat([z, condition], dim=1))
        return out.view(-1, self.sequence_length, self.input_dim)  # (B, L, D)

    def forward(
        self, x: torch.Tensor, condition: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        assert condition.shape == (x.shape[0], self.condition_dim), f"condition {tuple(condition.shape)}"
        mu, logvar = self.encode(x, condition)
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype).to(mu.device)  # seeded CPU draw
        z = mu + eps * torch.exp(0.5 * logvar)
        return self.decode(z, condition), mu, logvar

    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        condition: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        target_sequence_length: int | None = None,
        mode: str = "linear",
    ) -> torch.Tensor:
        """``condition``: (C,) for all samples or (N, C) per sample -> (N, L_out, D)."""
        if condition.dim() == 1:
            condition = condition.expand(num_samples, -1)
        z = torch.randn((num_samples, self.latent_dim), generator=generator).to(condition.device)
        out = self.decode(z, condition)
        return resize_tokens(out, target_sequence_length or self.sequence_length, mode)


def count_flat_vae_parameters(
    *, input_dim: int, condition_dim: int, sequence_length: int, hidden_dim: int, latent_dim: int
) -> int:
    """Parameter count of ConditionedVAEGenerator without allocating it (for large L)."""
    flat = sequence_length * input_dim

    def linear(i: int, o: int) -> int:
        return i * o + o

    return (
        linear(flat + condition_dim, hidden_dim)
        + linear(hidden_dim, hidden_dim)
        + 2 * linear(hidden_dim, latent_dim)
        + linear(latent_dim + condition_dim, hidden_dim)
        + linear(hidden_dim, hidden_dim)
        + linear(hidden_dim, flat)
    )
