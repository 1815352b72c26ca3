"""Losses: adapter regression to class targets, and the VAE loss with its schedules."""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOGVAR_RANGE = (-5.0, 2.0)  # log-variance clamp of the VAE posterior (the original's working range)


def adapter_loss(output: torch.Tensor, target: torch.Tensor, cosine_weight: float = 0.0) -> torch.Tensor:
    """MSE to the class target (+ optional ``cosine_weight * (1 - cos)``). Shapes must match."""
    if output.shape != target.shape:
        raise ValueError(f"Adapter output {tuple(output.shape)} and target {tuple(target.shape)} differ")
    loss = F.mse_loss(output, target)
    if cosine_weight > 0:
        cos = F.cosine_similarity(output.flatten(1), target.flatten(1), dim=1).mean()
        loss = loss + cosine_weight * (1 - cos)
    return loss


class VAELoss:
    """MSE + beta(epoch) * KL (mean) + w(epoch) * (1 - cosine); returns (total, recon, kl, sim).

    beta rises linearly to ``beta_max`` at half of ``total_epochs``; w decays 0.1 -> 0.01.
    ``epoch`` counts every epoch the generator has trained (across rounds), so the warm-up
    happens once per run, not once per round. A non-finite total is returned as is: the
    trainer skips that batch and counts it (it never steps on NaN).
    """

    def __init__(self, *, total_epochs: int, beta_max: float = 0.01, warmup_ratio: float = 0.5):
        self.total_epochs = max(1, total_epochs)
        self.beta_max = beta_max
        self.warmup_epochs = max(1, int(self.total_epochs * warmup_ratio))

    def beta(self, epoch: int) -> float:
        return self.beta_max * min(1.0, (epoch + 1) / self.warmup_epochs)

    def similarity_weight(self, epoch: int) -> float:
        return max(0.01, 0.1 * (1 - epoch / self.total_epochs))

    def __call__(
        self, recon: torch.Tensor, target: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, epoch: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        recon_loss = F.mse_loss(recon, target)
        logvar = logvar.clamp(*LOGVAR_RANGE)  # the generators' own range; keeps exp() finite
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).mean()
        cos = F.cosine_similarity(recon.flatten(1), target.flatten(1), dim=1, eps=1e-8).clamp(-1, 1)
        sim = (1 - cos).mean()
        total = recon_loss + self.beta(epoch) * kl + self.similarity_weight(epoch) * sim
        return total, recon_loss, kl, sim


def gan_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """BCE: real -> 1, fake -> 0."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake


def gan_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss: -log D(G(z)), i.e. BCE of fakes against label 1."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
