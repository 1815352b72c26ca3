"""Per-class statistics a client sends instead of data (SPEC 4, step 4)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from feda2v_flwr.models.sequence import pool_tokens


@dataclass
class ClassStats:
    """Aggregates of one class on one client.

    ``slot_means``: mean adapter output per slot (the server's fine-tuning target).
    ``audio_mean`` / ``audio_std``: (L, D) mean and per-token-position std of the audio
    embedding at the statistics length L. ``val_*``: the same mean on the held-out val split,
    used only to validate the server generator.
    """

    count: int
    slot_means: dict[str, np.ndarray]
    audio_mean: np.ndarray
    audio_std: np.ndarray
    val_count: int = 0
    val_audio_mean: np.ndarray | None = field(default=None)


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
) -> dict[str, ClassStats]:
    """Statistics for every class of ``classes``; labels index the federation class list."""
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
        if val is not None and val_labels is not None:
            val_mask = val_labels == class_index[name]
            if val_mask.any():
                entry.val_count = int(val_mask.sum())
                entry.val_audio_mean = val[val_mask].mean(0).numpy()
        stats[name] = entry
    return stats
