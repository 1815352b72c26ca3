"""The mini-batch epoch every trainer here shares: a fresh seeded shuffle per epoch cut into
batches of indices, and the epoch's mean loss per slot weighted by batch size. What one step
does (losses, optimizers, clipping, a step cap) stays with each trainer: the nodes' adapters
(``training/adapters.py``), their generators (``training/client_generators.py``), the server's
fine-tuning (``server/generator_trainer.py``) and ``kd`` (``server/distillation.py``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import torch


def shuffled_batches(
    n: int, batch_size: int, rng: torch.Generator, device: torch.device | str | None = None
) -> Iterator[torch.Tensor]:
    """One epoch over ``n`` rows: index tensors of a permutation drawn from ``rng`` when the
    first batch is asked for (on ``device`` when given), ``batch_size`` at a time."""
    order = torch.randperm(n, generator=rng)
    if device is not None:
        order = order.to(device)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


class EpochLosses:
    """Per-slot sums of ``loss x rows`` over an epoch; :meth:`means` is the mean loss per row."""

    def __init__(self, slots: Iterable[str]):
        self.sums = dict.fromkeys(slots, 0.0)
        self.rows = 0

    def add(self, losses: Mapping[str, torch.Tensor], rows: int) -> None:
        for slot, loss in losses.items():
            self.sums[slot] += loss.item() * rows
        self.rows += rows

    def means(self) -> dict[str, float]:
        return {slot: total / self.rows for slot, total in self.sums.items()}
