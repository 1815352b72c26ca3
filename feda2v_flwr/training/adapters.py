"""Plain-torch adapter training and evaluation (no Flower here)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from feda2v_flwr.config.schema import ExperimentConfig
from feda2v_flwr.encoders.text_targets import SlotSpec
from feda2v_flwr.models.adapter import build_adapters
from feda2v_flwr.models.losses import adapter_loss
from feda2v_flwr.training.loop import EpochLosses, shuffled_batches
from feda2v_flwr.training.optim import adamw

GRAD_CLIP_NORM = 1.0


def build_model(config: ExperimentConfig, slots: tuple[SlotSpec, ...], in_dim: int) -> nn.ModuleDict:
    return build_adapters(slots, **adapter_arguments(config, in_dim))


def adapter_arguments(config: ExperimentConfig, in_dim: int) -> dict[str, Any]:
    """``build_adapters``' keyword arguments besides the slots (an export stores them to rebuild the adapters)."""
    f = config.feda2v
    hidden = {"clip": list(f.clip_adapter_hidden_dims), "t5": list(f.t5_adapter_hidden_dims)}
    return {"in_dim": in_dim, "hidden_dims": hidden, "width": f.adapter_width, "heads": f.adapter_heads}


def slot_hyperparameters(config: ExperimentConfig, slot: str) -> tuple[float, float, bool]:
    """(learning rate, weight decay, cosine schedule) of one slot's optimizer."""
    f = config.feda2v
    if slot == "clip":
        return f.clip_adapter_learning_rate, f.clip_adapter_weight_decay, f.clip_adapter_learning_rate_schedule
    return f.t5_adapter_learning_rate, f.t5_adapter_weight_decay, f.t5_adapter_learning_rate_schedule


def make_optimizers(adapters: nn.ModuleDict, config: ExperimentConfig) -> dict[str, torch.optim.AdamW]:
    """One AdamW per slot, each with its own learning rate and weight decay."""
    optimizers = {}
    for slot, module in adapters.items():
        lr, weight_decay, _ = slot_hyperparameters(config, slot)
        optimizers[slot] = adamw(module.parameters(), lr=lr, weight_decay=weight_decay)
    return optimizers


def scheduled_lr(base_lr: float, epoch: int, total_epochs: int, min_ratio: float = 1e-3) -> float:
    """Cosine decay as a pure function of the global epoch (so it needs no saved state)."""
    progress = min(1.0, epoch / max(1, total_epochs))
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def train_adapters(
    adapters: nn.ModuleDict,
    optimizers: dict[str, torch.optim.Optimizer],
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    targets: dict[str, torch.Tensor],
    *,
    config: ExperimentConfig,
    epochs: int,
    first_epoch: int,
    total_epochs: int,
    generator: torch.Generator,
) -> dict[str, float]:
    """Train every slot with its own loss and optimizer; returns each slot's mean last-epoch loss.

    embeddings (N, T, D); labels (N,) index into the class axis of each ``targets[slot]``.
    """
    f = config.feda2v
    batch_size = config.training.batch_size
    mu = config.federation.proximal_mu
    anchors = {slot: [p.detach().clone() for p in m.parameters()] for slot, m in adapters.items()} if mu else {}
    adapters.train()
    last: dict[str, float] = {}
    for epoch in range(epochs):
        for slot, optimizer in optimizers.items():
            lr, _, schedule = slot_hyperparameters(config, slot)
            if schedule:
                for group in optimizer.param_groups:
                    group["lr"] = scheduled_lr(lr, first_epoch + epoch, total_epochs)
        epoch_losses = EpochLosses(adapters)
        for idx in shuffled_batches(len(labels), batch_size, generator):
            x, losses = embeddings[idx], {}
            for slot, module in adapters.items():
                optimizer = optimizers[slot]
                optimizer.zero_grad(set_to_none=True)
                losses[slot] = adapter_loss(module(x), targets[slot][labels[idx]], f.adapter_cosine_loss_weight)
                if mu:  # FedProx's proximal term; the reported loss stays the data loss
                    (losses[slot] + proximal_term(module, anchors[slot], mu)).backward()
                else:
                    losses[slot].backward()
                if f.optimizer_clip_gradients:
                    nn.utils.clip_grad_norm_(module.parameters(), GRAD_CLIP_NORM)
                optimizer.step()
            epoch_losses.add(losses, len(idx))
        last = epoch_losses.means()
    return last


def proximal_term(module: nn.Module, anchor: list[torch.Tensor], mu: float) -> torch.Tensor:
    """FedProx: mu / 2 * ||w - w_anchor||^2 over the module's parameters."""
    return 0.5 * mu * sum(((p - a) ** 2).sum() for p, a in zip(module.parameters(), anchor, strict=True))


@torch.no_grad()
def predict(adapters: nn.ModuleDict, embeddings: torch.Tensor, batch_size: int = 64) -> dict[str, torch.Tensor]:
    adapters.eval()
    outputs: dict[str, list[torch.Tensor]] = {slot: [] for slot in adapters}
    for start in range(0, len(embeddings), batch_size):
        x = embeddings[start : start + batch_size]
        for slot, module in adapters.items():
            outputs[slot].append(module(x))
    return {slot: torch.cat(parts) for slot, parts in outputs.items()}


@torch.no_grad()
def evaluate_adapters(
    adapters: nn.ModuleDict, embeddings: torch.Tensor, labels: torch.Tensor, targets: dict[str, torch.Tensor]
) -> dict[str, float]:
    """Per slot: MSE and cosine to the own class target, and retrieval top-1 among all classes.

    Retrieval: the nearest class target (cosine) must be the clip's own class. ``retrieval_top1``
    is the mean over slots.
    """
    return retrieval_metrics(predict(adapters, embeddings), labels, targets)


def retrieval_metrics(
    outputs: dict[str, torch.Tensor], labels: torch.Tensor, targets: dict[str, torch.Tensor]
) -> dict[str, float]:
    """``evaluate_adapters``' metrics of any outputs {slot: (N, *target shape)}: a classifier's
    too, which emits its predicted class's targets."""
    metrics: dict[str, float] = {}
    for slot, out in outputs.items():
        own = targets[slot][labels]
        metrics[f"mse_{slot}"] = F.mse_loss(out, own).item()
        metrics[f"cosine_{slot}"] = F.cosine_similarity(out.flatten(1), own.flatten(1), dim=1).mean().item()
        sims = F.normalize(out.flatten(1), dim=1) @ F.normalize(targets[slot].flatten(1), dim=1).T  # (N, C)
        metrics[f"retrieval_top1_{slot}"] = (sims.argmax(1) == labels).float().mean().item()
    metrics["retrieval_top1"] = float(np.mean([metrics[f"retrieval_top1_{s}"] for s in outputs]))
    metrics["mse"] = float(np.mean([metrics[f"mse_{s}"] for s in outputs]))
    return metrics
