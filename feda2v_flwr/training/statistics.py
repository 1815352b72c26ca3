"""Per-class statistics a client sends instead of data (SPEC 4, step 4)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from feda2v_flwr.models.sequence import pool_tokens
from feda2v_flwr.seeding import mixture_seed


@dataclass
class ClassStats:
    """Aggregates of one class on one client.

    ``slot_means``: mean adapter output per slot (the server's fine-tuning target).
    ``audio_mean`` / ``audio_std``: (L, D) mean and per-token-position std of the audio
    embedding at the statistics length L. ``val_*``: the same mean on the held-out val split,
    used only to validate the server generator. ``mixture``: with
    ``feda2v.statistics_components`` K > 1, a diagonal Gaussian mixture of the class's clips.
    ``samples``: with ``synthetic_source: clients``, (N, L, D) samples of the node's own generator.
    """

    count: int
    slot_means: dict[str, np.ndarray]
    audio_mean: np.ndarray
    audio_std: np.ndarray
    val_count: int = 0
    val_audio_mean: np.ndarray | None = field(default=None)
    mixture: Mixture | None = None
    samples: np.ndarray | None = None


@dataclass
class Mixture:
    """K diagonal Gaussian components of one class's (L, D) embeddings: ``weights`` (K,) summing
    to 1, ``means`` and ``stds`` (K, L, D). A class with fewer clips than K has fewer fitted
    components; the others have weight 0 (and the class's mean and std), so every upload has K."""

    weights: np.ndarray
    means: np.ndarray
    stds: np.ndarray


def fit_mixture(rows: torch.Tensor, components: int, seed: int) -> Mixture:
    """A diagonal Gaussian mixture of ``rows`` (N, L, D) with ``components`` components
    (scikit-learn's EM, k-means initialisation, seeded), as FedPFT's clients fit theirs."""
    from sklearn.mixture import GaussianMixture

    flat = rows.reshape(len(rows), -1).double().numpy()
    fitted = min(components, len(rows))
    mixture = GaussianMixture(fitted, covariance_type="diag", reg_covar=1e-6, random_state=seed).fit(flat)
    shape = (components, *rows.shape[1:])
    weights = np.zeros(components, dtype=np.float32)
    weights[:fitted] = mixture.weights_ / mixture.weights_.sum()
    means = np.broadcast_to(rows.mean(0).numpy(), shape).copy()
    stds = np.broadcast_to(rows.std(0, unbiased=False).numpy(), shape).copy()
    means[:fitted] = mixture.means_.reshape(fitted, *rows.shape[1:])
    stds[:fitted] = np.sqrt(mixture.covariances_).reshape(fitted, *rows.shape[1:])
    return Mixture(weights, means.astype(np.float32), stds.astype(np.float32))


def _reduce(embeddings: torch.Tensor, length: int | None) -> torch.Tensor:
    return embeddings if length is None else pool_tokens(embeddings, length)


@torch.no_grad()
def class_statistics(
    *,
    classes: list[str],
    class_index: dict[str, int],
    train_embeddings: torch.Tensor,
    train_labels: torch.Tensor,
    train_outputs: dict[str, torch.Tensor],
    val_embeddings: torch.Tensor | None = None,
    val_labels: torch.Tensor | None = None,
    sequence_length: int | None = None,
    components: int = 1,
    seed: int = 0,
) -> dict[str, ClassStats]:
    """Statistics for every class of ``classes``; labels index the federation class list.
    ``components`` > 1 adds each class's Gaussian mixture (seeded by ``seed`` and the class)."""
    train = _reduce(train_embeddings, sequence_length)  # (N, L, D)
    val = _reduce(val_embeddings, sequence_length) if val_embeddings is not None else None
    stats = {}
    for name in classes:
        mask = train_labels == class_index[name]
        rows = train[mask]
        entry = ClassStats(
            count=int(mask.sum()),
            slot_means={slot: out[mask].mean(0).numpy() for slot, out in train_outputs.items()},
            audio_mean=rows.mean(0).numpy(),
            audio_std=rows.std(0, unbiased=False).numpy(),
        )
        if components > 1:
            entry.mixture = fit_mixture(rows, components, mixture_seed(seed, name))
        if val is not None and val_labels is not None:
            val_mask = val_labels == class_index[name]
            if val_mask.any():
                entry.val_count = int(val_mask.sum())
                entry.val_audio_mean = val[val_mask].mean(0).numpy()
        stats[name] = entry
    return stats
