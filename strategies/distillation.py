"""``kd`` aggregation: distil the global adapters from the clients' adapters (Flower-free).

For each class, synthetic audio embeddings come from the server generator. The teacher target
of a class is the mean output of the adapters of the clients that **own** the class (not of
every client: one that never saw the class has nothing to teach about it). Every slot is
distilled (the original trained only ``clip``: a swallowed TypeError skipped ``t5``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def teacher_targets(
    teachers: list[nn.ModuleDict], owners: list[int], synthetic: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Mean output of ``teachers[i]`` for i in ``owners`` on ``synthetic`` (N, T, D), per slot."""
    assert owners, "a class needs at least one owner"
    targets = {}
    for slot in teachers[owners[0]]:
        outputs = []
        for i in owners:
            teachers[i].eval()
            outputs.append(teachers[i][slot](synthetic))
        targets[slot] = torch.stack(outputs).mean(0)
    return targets


def distill_adapters(
    student: nn.ModuleDict,
    teachers: list[nn.ModuleDict],
    owners: dict[str, list[int]],
    synthetic: dict[str, torch.Tensor],
    *,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    rng: torch.Generator,
) -> dict[str, float]:
    """Train ``student`` (every slot) to match the owners' mean outputs; returns the last epoch's
    mean MSE per slot. ``synthetic[class]``: (N, T, D); ``owners[class]``: teacher indices."""
    classes = sorted(c for c in synthetic if owners.get(c))
    inputs = torch.cat([synthetic[c] for c in classes])
    per_class = [teacher_targets(teachers, owners[c], synthetic[c]) for c in classes]
    targets = {slot: torch.cat([t[slot] for t in per_class]) for slot in student}
    optimizer = torch.optim.AdamW(student.parameters(), lr=learning_rate)
    student.train()
    last: dict[str, float] = {}
    for _ in range(epochs):
        sums = dict.fromkeys(student, 0.0)
        order = torch.randperm(len(inputs), generator=rng)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size].to(inputs.device)
            losses = {slot: F.mse_loss(module(inputs[idx]), targets[slot][idx]) for slot, module in student.items()}
            optimizer.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            optimizer.step()
            for slot, loss in losses.items():
                sums[slot] += loss.item() * len(idx)
        last = {slot: total / len(inputs) for slot, total in sums.items()}
    return last
