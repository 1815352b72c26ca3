"""Training-free heads from the clients' uploads: what the per-class statistics give for free.

Every node uploads, per class, the count, mean and standard deviation of its frozen audio
tokens (``training/statistics.py``: population std, shape (L, D)). Retrieval top-1 against one
target per class is nearest-prototype classification, so these statistics alone define
classifiers: classify a clip, then emit the predicted class's targets. A federated method is
worth its rounds only where it beats these on the same uploads.

- nearest class mean, cosine or Euclidean (the uploads' pooled means);
- Gaussian naive Bayes: one diagonal Gaussian per class (means and variances);
- diagonal LDA: the classes share the pooled within-class variance (a linear rule);
- a FedPFT-style head (Beitollahi et al., "Parametric Feature Transfer: One-shot Federated
  Learning with Foundation Models", 2024): a softmax-linear classifier trained on draws from
  the per-class Gaussians.

Features are the (L, D) token grid flattened; a clip is pooled to the statistics' L first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from feda2v_flwr.models.sequence import pool_tokens
from feda2v_flwr.training.adapters import retrieval_metrics

VARIANCE_FLOOR = 1e-6  # relative to the mean variance: a feature constant within a class is not infinitely sure


@dataclass(frozen=True)
class ClassStatistics:
    """The federation's per-class statistics, pooled over the clients: ``means`` and
    ``variances`` (C, F) over flattened features, ``counts`` (C,)."""

    means: torch.Tensor
    variances: torch.Tensor
    counts: torch.Tensor

    @classmethod
    def pooled(cls, per_class: Iterable[Iterable[tuple[int, torch.Tensor, torch.Tensor]]]) -> ClassStatistics:
        """Class by class, each client's (count, mean, std) merged exactly: the count-weighted
        mean, and the variance from the pooled second moment E[x^2] - mean^2."""
        means, variances, counts = [], [], []
        for uploads in per_class:
            n = torch.tensor([float(c) for c, _, _ in uploads], dtype=torch.float64)
            mu = torch.stack([m.flatten().double() for _, m, _ in uploads])
            sd = torch.stack([s.flatten().double() for _, _, s in uploads])
            weights = (n / n.sum())[:, None]
            mean = (weights * mu).sum(0)
            second = (weights * (sd**2 + mu**2)).sum(0)
            means.append(mean)
            variances.append((second - mean**2).clamp_min(0))
            counts.append(n.sum())
        return cls(torch.stack(means).float(), torch.stack(variances).float(), torch.stack(counts).float())

    def log_priors(self) -> torch.Tensor:
        return torch.log(self.counts / self.counts.sum())


def _floored(variances: torch.Tensor) -> torch.Tensor:
    return variances.clamp_min(VARIANCE_FLOOR * float(variances.mean().clamp_min(1e-12)))


def nearest_class_mean(stats: ClassStatistics, features: torch.Tensor, metric: str = "cosine") -> torch.Tensor:
    """Predicted class per row of ``features`` (N, F): the nearest class mean."""
    if metric == "cosine":
        return (F.normalize(features, dim=1) @ F.normalize(stats.means, dim=1).T).argmax(1)
    if metric == "euclidean":
        return torch.cdist(features, stats.means).argmin(1)
    raise ValueError(f"Unknown metric '{metric}'. Allowed: cosine, euclidean")


def gaussian_naive_bayes(stats: ClassStatistics, features: torch.Tensor) -> torch.Tensor:
    """argmax_c log p(c) + sum_f log N(x_f; mean_cf, var_cf)."""
    precision = 1.0 / _floored(stats.variances)  # (C, F)
    # sum_f (x_f - mean_cf)^2 / var_cf, expanded into matrix products (no (N, C, F) tensor)
    squared = (features**2) @ precision.T - 2 * features @ (stats.means * precision).T
    squared = squared + (stats.means**2 * precision).sum(1)[None]
    log_likelihood = -0.5 * (squared - torch.log(precision).sum(1)[None])
    return (log_likelihood + stats.log_priors()[None]).argmax(1)


def diagonal_lda(stats: ClassStatistics, features: torch.Tensor) -> torch.Tensor:
    """Linear discriminant with the count-weighted within-class variance shared by all classes:
    argmax_c x . (mean_c / var) - mean_c . (mean_c / var) / 2 + log p(c)."""
    weights = (stats.counts / stats.counts.sum())[:, None]
    var = _floored((weights * stats.variances).sum(0, keepdim=True))
    scaled = stats.means / var  # (C, F)
    scores = features @ scaled.T - 0.5 * (stats.means * scaled).sum(1)[None] + stats.log_priors()[None]
    return scores.argmax(1)


def fedpft_head(
    stats: ClassStatistics,
    features: torch.Tensor,
    *,
    samples_per_class: int = 200,
    epochs: int = 100,
    learning_rate: float = 1e-2,
    seed: int = 0,
) -> torch.Tensor:
    """A softmax-linear classifier trained (full-batch Adam, ``epochs`` steps) on
    ``samples_per_class`` draws from each class's N(mean, var); features standardised by the
    draws' own mean and std. Memory: the draws, C x samples_per_class x F floats."""
    generator = torch.Generator().manual_seed(seed)
    num_classes, dim = stats.means.shape
    noise = torch.randn(num_classes, samples_per_class, dim, generator=generator)
    draws = (stats.means[:, None] + noise * stats.variances.sqrt()[:, None]).reshape(-1, dim)
    labels = torch.arange(num_classes).repeat_interleave(samples_per_class)
    centre, scale = draws.mean(0), draws.std(0).clamp_min(1e-6)
    head = torch.nn.Linear(dim, num_classes)
    with torch.no_grad():
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
    optimizer = torch.optim.Adam(head.parameters(), lr=learning_rate)
    inputs = (draws - centre) / scale
    for _ in range(epochs):
        optimizer.zero_grad()
        F.cross_entropy(head(inputs), labels).backward()
        optimizer.step()
    with torch.no_grad():
        return head((features - centre) / scale).argmax(1)


HEADS = {
    "ncm-cosine": lambda stats, x: nearest_class_mean(stats, x, "cosine"),
    "ncm-euclidean": lambda stats, x: nearest_class_mean(stats, x, "euclidean"),
    "gaussian-nb": gaussian_naive_bayes,
    "diagonal-lda": diagonal_lda,
    "fedpft-head": fedpft_head,
}


def head_metrics(predictions: torch.Tensor, labels: torch.Tensor, targets: dict[str, torch.Tensor]) -> dict[str, float]:
    """A head scored like the adapters: it emits its predicted class's targets, so retrieval
    top-1 is its accuracy and MSE / cosine are those of the emitted targets."""
    return retrieval_metrics({slot: t[predictions] for slot, t in targets.items()}, labels, targets)


def same_information_scores(
    summaries: Mapping[str, Any],
    class_index: Mapping[str, int],
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    targets: dict[str, torch.Tensor],
) -> dict[str, dict[str, float]]:
    """Every head of ``HEADS`` built from a round's uploads and scored on ``embeddings`` (N, T, D)
    with ``labels``: {head: metrics}. ``summaries``: per class, what the server merged from the
    clients (``client_counts``, ``client_audio_means``, ``client_audio_stds``; the server
    trainer's ``last_summaries``). Classes no client uploaded cannot be predicted."""
    names = sorted(summaries, key=lambda name: class_index[name])
    stats = ClassStatistics.pooled(
        list(zip(s.client_counts, s.client_audio_means, s.client_audio_stds, strict=True))
        for s in (summaries[name] for name in names)
    )
    length = summaries[names[0]].client_audio_means[0].shape[0]
    features = pool_tokens(embeddings.float(), length).flatten(1)
    ids = torch.tensor([class_index[name] for name in names])
    return {name: head_metrics(ids[head(stats, features)], labels, targets) for name, head in HEADS.items()}
