"""``kd`` aggregation: distil the global adapters from the clients' adapters (Flower-free).

For each class, synthetic audio embeddings come from the server generator. The teacher target
of a class is the mean output of the adapters of the clients that **own** the class (not of
every client: one that never saw the class has nothing to teach about it). Every slot is
distilled (the original trained only ``clip``: a swallowed TypeError skipped ``t5``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from feda2v_flwr.training.loop import EpochLosses, shuffled_batches
from feda2v_flwr.training.optim import adamw


@torch.no_grad()
def teacher_targets(
    teacher: Callable[[int], nn.ModuleDict],
    owners: dict[str, list[int]],
    synthetic: dict[str, torch.Tensor],
) -> dict[str, dict[str, torch.Tensor]]:
    """Per class and slot: the mean output of ``teacher(i)`` for i in ``owners[class]`` on
    ``synthetic[class]`` (N, T, D). Teachers are visited one at a time (``teacher(i)`` may load
    client i's weights into one scratch module), so memory does not grow with the clients."""
    sums: dict[str, dict[str, torch.Tensor]] = {}
    for index in sorted({i for ids in owners.values() for i in ids}):
        module = teacher(index).eval()
        for name, ids in owners.items():
            if index in ids and name in synthetic:
                outputs = {slot: m(synthetic[name]) for slot, m in module.items()}
                previous = sums.get(name)
                sums[name] = outputs if previous is None else {s: previous[s] + o for s, o in outputs.items()}
    return {name: {s: v / len(owners[name]) for s, v in slots.items()} for name, slots in sums.items()}


def distill_adapters(
    student: nn.ModuleDict,
    targets: dict[str, dict[str, torch.Tensor]],
    synthetic: dict[str, torch.Tensor],
    *,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    rng: torch.Generator,
) -> dict[str, float]:
    """Train ``student`` (every slot) to match ``targets`` on ``synthetic`` (per class); returns
    the last epoch's mean MSE per slot."""
    classes = sorted(targets)
    inputs = torch.cat([synthetic[c] for c in classes])
    stacked = {slot: torch.cat([targets[c][slot] for c in classes]) for slot in student}
    optimizer = adamw(student.parameters(), lr=learning_rate)
    student.train()
    last: dict[str, float] = {}
    for _ in range(epochs):
        epoch_losses = EpochLosses(student)
        for idx in shuffled_batches(len(inputs), batch_size, rng, inputs.device):
            losses = {slot: F.mse_loss(module(inputs[idx]), stacked[slot][idx]) for slot, module in student.items()}
            optimizer.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            optimizer.step()
            epoch_losses.add(losses, len(idx))
        last = epoch_losses.means()
    return last
