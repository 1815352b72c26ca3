"""What every generator shares: the class condition, seeded sampling, upsampling to any length.

A generator makes synthetic audio-encoder embeddings ``(N, L, D)`` on its own token grid of
``sequence_length`` tokens, then resizes them to the requested length.

Conditions are dicts ``{slot: tensor}`` (e.g. ``{"clip": (B, 768)}`` or
``{"clip": (B, 768), "t5": (B, 17, 4096)}``): one condition **per sample**, so a batch may mix
classes. ``condition_slots`` (slot -> shape) says which slots a generator reads.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from feda2v_flwr.models.sequence import AttentionUpsampler, resize_tokens

Condition = dict[str, torch.Tensor]


class ConditionEncoder(nn.Module):
    """Class condition -> one vector per sample, ``(B, out_dim)``.

    Without ``fusion_dim`` the slots are flattened and concatenated (a CLIP-conditioned VAE sees
    the 768-d prompt as is). With ``fusion_dim`` each slot is projected token-wise, averaged over
    its tokens and the slots are fused (CLIP ⊕ T5 for flux): Linear -> LayerNorm -> GELU.
    """

    def __init__(self, *, slots: dict[str, list[int]], fusion_dim: int | None = None):
        super().__init__()
        self.slots = {name: list(shape) for name, shape in sorted(slots.items())}
        self.fusion_dim = fusion_dim
        if fusion_dim is None:
            self.out_dim = sum(math.prod(shape) for shape in self.slots.values())
            self.projections = None
        else:
            assert self.slots, "a fused condition needs at least one slot"
            self.projections = nn.ModuleDict({n: nn.Linear(s[-1], fusion_dim) for n, s in self.slots.items()})
            self.fuse = nn.Sequential(
                nn.Linear(len(self.slots) * fusion_dim, fusion_dim), nn.LayerNorm(fusion_dim), nn.GELU()
            )
            self.out_dim = fusion_dim

    def forward(self, condition: Condition | None, batch: int) -> torch.Tensor | None:
        if not self.slots:
            return None
        if condition is None or set(self.slots) - set(condition):
            raise ValueError(f"This generator is conditioned on {sorted(self.slots)}; got {sorted(condition or {})}")
        parts = []
        for name, shape in self.slots.items():
            value = condition[name]
            if tuple(value.shape[1:]) != tuple(shape) or value.shape[0] != batch:
                raise ValueError(f"condition '{name}' has shape {tuple(value.shape)}, expected ({batch}, *{shape})")
            if self.projections is None:
                parts.append(value.reshape(batch, -1))
            else:
                tokens = value.reshape(batch, -1, shape[-1])  # (B, n, d): vectors are one token
                parts.append(self.projections[name](tokens).mean(1))
        joined = torch.cat(parts, dim=1)
        return joined if self.projections is None else self.fuse(joined)


class SequenceGenerator(nn.Module):
    """Base class; subclasses set ``kind`` and implement ``decode`` and ``constructor_args``."""

    kind = "?"

    def __init__(
        self,
        *,
        input_dim: int,
        sequence_length: int,
        latent_dim: int,
        condition_slots: dict[str, list[int]] | None,
        fusion_dim: int | None,
        learned_upsampler: bool,
    ):
        super().__init__()
        assert sequence_length >= 1 and input_dim >= 1 and latent_dim >= 1
        self.input_dim, self.sequence_length, self.latent_dim = input_dim, sequence_length, latent_dim
        self.condition = ConditionEncoder(slots=condition_slots or {}, fusion_dim=fusion_dim)
        self.condition_dim = self.condition.out_dim
        self.upsampler = AttentionUpsampler(dim=input_dim) if learned_upsampler else None

    def _common_args(self) -> dict[str, Any]:
        return {
            "input_dim": self.input_dim,
            "sequence_length": self.sequence_length,
            "latent_dim": self.latent_dim,
            "condition_slots": dict(self.condition.slots),
            "fusion_dim": self.condition.fusion_dim,
            "learned_upsampler": self.upsampler is not None,
        }

    def constructor_args(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this exact model (stored in checkpoints)."""
        raise NotImplementedError

    @property
    def conditioned(self) -> bool:
        return bool(self.condition.slots)

    def decode(self, z: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        """(B, latent) [+ encoded condition (B, C)] -> (B, sequence_length, input_dim)."""
        raise NotImplementedError

    def upsample(self, x: torch.Tensor, length: int, mode: str = "linear") -> torch.Tensor:
        """(B, L, D) -> (B, length, D) with linear / nearest / cubic interpolation or the learned upsampler."""
        if mode == "learned":
            if self.upsampler is None:
                raise ValueError("interpolation 'learned' needs a generator built with learned_upsampler=True")
            return self.upsampler(x, length)
        return resize_tokens(x, length, mode)

    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        condition: Condition | None = None,
        *,
        generator: torch.Generator | None = None,
        target_sequence_length: int | None = None,
        interpolation: str = "linear",
    ) -> torch.Tensor:
        """``num_samples`` draws -> (N, target_sequence_length or L, D).

        ``condition`` values may be one class's condition (shape of the slot) for all samples or
        one per sample (N, *shape). ``generator`` seeds z (drawn on CPU, so CUDA runs match).
        """
        device = next(self.parameters()).device
        if condition is not None:
            condition = self._per_sample(condition, num_samples, device)
        z = torch.randn((num_samples, self.latent_dim), generator=generator).to(device)
        out = self.decode(z, self.condition(condition, num_samples))
        return self.upsample(out, target_sequence_length or self.sequence_length, interpolation)

    def _per_sample(self, condition: Condition, num_samples: int, device: torch.device) -> Condition:
        """A slot given with its own shape (one class) is repeated for every sample."""
        batched = {}
        for name, value in condition.items():
            if value.dim() == len(self.condition.slots.get(name, ())):
                value = value.expand(num_samples, *value.shape)
            batched[name] = value.to(device)
        return batched


def draw_normal(
    shape: tuple[int, ...] | torch.Size, like: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """Standard normal noise drawn on CPU with ``generator`` and moved to ``like``'s device."""
    return torch.randn(shape, generator=generator, dtype=like.dtype).to(like.device)
