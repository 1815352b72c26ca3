"""One class as the server sees it: its clients' statistics merged (counts, means, stds,
mixtures, samples), and draws from them. No learning here: the Gaussian baseline and the
generator's training batches both come from these draws."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from feda2v_flwr.models.generators import Condition
from feda2v_flwr.models.sequence import resize_tokens
from feda2v_flwr.training.statistics import ClassStats


@dataclass
class ClassSummary:
    """Count-weighted merge of one class's statistics over the clients that hold it."""

    count: int
    slot_means: dict[str, torch.Tensor]
    client_counts: list[int]
    client_audio_means: list[torch.Tensor]
    client_audio_stds: list[torch.Tensor]
    val_audio_mean: torch.Tensor | None
    # With feda2v.statistics_components K > 1: every client's mixture, stacked: weights (C, K),
    # means and stds (C, K, L, D). None: each client's class is one Gaussian N(mean, std^2).
    mixture_weights: torch.Tensor | None = None
    mixture_means: torch.Tensor | None = None
    mixture_stds: torch.Tensor | None = None
    # With synthetic_source "clients": the nodes' generator samples of the class, (sum N, L, D).
    client_samples: torch.Tensor | None = None

    @classmethod
    def merge(cls, entries: list[ClassStats]) -> ClassSummary:
        counts = [e.count for e in entries]
        slot_means = {
            slot: _weighted_mean([e.slot_means[slot] for e in entries], counts) for slot in entries[0].slot_means
        }
        val = [e for e in entries if e.val_audio_mean is not None and e.val_count > 0]
        val_mean = _weighted_mean([e.val_audio_mean for e in val], [e.val_count for e in val]) if val else None
        mixtures = [e.mixture for e in entries]
        if all(m is not None for m in mixtures):
            stacked = {
                "mixture_weights": torch.from_numpy(np.stack([m.weights for m in mixtures])).double(),
                "mixture_means": torch.from_numpy(np.stack([m.means for m in mixtures])),
                "mixture_stds": torch.from_numpy(np.stack([m.stds for m in mixtures])),
            }
        else:
            stacked = {}
        samples = [torch.from_numpy(e.samples) for e in entries if e.samples is not None]
        if samples:
            stacked["client_samples"] = torch.cat(samples)
        return cls(
            count=int(sum(counts)),
            slot_means=slot_means,
            client_counts=counts,
            client_audio_means=[torch.from_numpy(e.audio_mean) for e in entries],
            client_audio_stds=[torch.from_numpy(e.audio_std) for e in entries],
            val_audio_mean=val_mean,
            **stacked,
        )

    def condition(self, batch: int, device: str | torch.device) -> Condition:
        """This class's mean adapter outputs, one copy per sample: {slot: (batch, *shape)}."""
        return {slot: m.expand(batch, *m.shape).to(device) for slot, m in self.slot_means.items()}


def _weighted_mean(arrays: list[np.ndarray], weights: list[int]) -> torch.Tensor:
    w = np.asarray(weights, dtype=np.float64) / float(sum(weights))
    return torch.from_numpy(sum(wi * a.astype(np.float64) for wi, a in zip(w, arrays, strict=True))).float()


def draw_from_statistics(summary: ClassSummary, draws: int, rng: torch.Generator) -> torch.Tensor:
    """``draws`` samples of every client's class distribution: N(mean, std^2), or its mixture."""
    parts = []
    for client, (mean, std) in enumerate(zip(summary.client_audio_means, summary.client_audio_stds, strict=True)):
        if summary.mixture_weights is not None:
            weights = summary.mixture_weights[client]
            picks = torch.multinomial(weights, draws, replacement=True, generator=rng)
            mean, std = summary.mixture_means[client, picks], summary.mixture_stds[client, picks]
        eps = torch.randn((draws, *summary.client_audio_means[client].shape), generator=rng)
        parts.append(mean + std * eps)
    return torch.cat(parts)


def draw_from_mixture(
    summary: ClassSummary, num_samples: int, length: int, *, interpolation: str, rng: torch.Generator
) -> torch.Tensor:
    """``num_samples`` draws of the Gaussian baseline at ``length`` tokens: a client picked with
    probability proportional to its clip count, then N(its mean, its std^2) per token and
    feature (mean and std resized to ``length`` first, so resizing does not shrink the noise)."""
    mode = resize_mode(interpolation)
    weights = torch.tensor(summary.client_counts, dtype=torch.float64)
    picks = torch.multinomial(weights, num_samples, replacement=True, generator=rng)
    if summary.mixture_weights is None:
        means = resize_tokens(torch.stack(summary.client_audio_means), length, mode)[picks]
        stds = resize_tokens(torch.stack(summary.client_audio_stds), length, mode).clamp_min(0)[picks]
    else:  # then a component of the picked client's mixture, by its weights
        components = torch.multinomial(summary.mixture_weights[picks], 1, generator=rng).squeeze(1)
        means = resize_tokens(summary.mixture_means[picks, components], length, mode)
        stds = resize_tokens(summary.mixture_stds[picks, components], length, mode).clamp_min(0)
    return means + stds * torch.randn(means.shape, generator=rng)


def client_samples(
    summary: ClassSummary, num_samples: int, length: int, *, interpolation: str, rng: torch.Generator
) -> torch.Tensor:
    """``num_samples`` of the nodes' generator samples of a class (a seeded choice when they
    sent more, fewer when they sent fewer), resized to ``length`` tokens."""
    samples = summary.client_samples
    if samples is None:
        shape = summary.client_audio_means[0].shape
        return torch.zeros((0, length, shape[1]))
    if len(samples) > num_samples:
        samples = samples[torch.randperm(len(samples), generator=rng)[:num_samples]]
    return resize_tokens(samples, length, resize_mode(interpolation))


def resize_mode(mode: str) -> str:
    """How real rows and Gaussian draws are resized: the configured mode (``learned`` belongs to a
    trained generator, so they use linear interpolation)."""
    return "linear" if mode == "learned" else mode
