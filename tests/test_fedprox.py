"""FedProx's proximal term on the nodes' adapter training (``federation.proximal_mu``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import tiny_config
from feda2v_flwr.encoders import PROFILE_SLOTS
from feda2v_flwr.training.adapters import build_model, make_optimizers, proximal_term, train_adapters


def test_the_proximal_term_is_half_mu_times_the_squared_distance():
    layer = nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0]]))
        layer.bias.copy_(torch.tensor([0.5]))
    anchor = [torch.zeros(1, 2), torch.tensor([1.5])]
    # ||w - anchor||^2 = 1 + 4 + 1 = 6 -> 0.5 * 0.1 * 6
    assert proximal_term(layer, anchor, 0.1).item() == pytest.approx(0.3)


def _drift_and_losses(mu: float) -> tuple[float, dict[str, float]]:
    config = tiny_config(federation={"proximal_mu": mu})
    torch.manual_seed(0)
    model = build_model(config, PROFILE_SLOTS["minilm"], 48)
    start = [p.detach().clone() for p in model.parameters()]
    data = torch.Generator().manual_seed(1)
    embeddings, labels = torch.randn(16, 7, 48, generator=data), torch.arange(16) % 4
    targets = {"clip": torch.randn(4, 384, generator=data), "t5": torch.randn(4, 17, 384, generator=data)}
    losses = train_adapters(
        model,
        make_optimizers(model, config),
        embeddings,
        labels,
        targets,
        config=config,
        epochs=3,
        first_epoch=0,
        total_epochs=3,
        generator=torch.Generator().manual_seed(2),
    )
    drift = sum(((p.detach() - s) ** 2).sum() for p, s in zip(model.parameters(), start, strict=True)).sqrt()
    return float(drift), losses


def test_a_large_mu_keeps_the_adapters_near_the_global_ones():
    free, free_losses = _drift_and_losses(0.0)
    held, held_losses = _drift_and_losses(1000.0)
    assert held < 0.5 * free, (held, free)
    assert set(held_losses) == set(free_losses) == {"clip", "t5"}  # the data loss is what is reported
    assert _drift_and_losses(0.0) == (free, free_losses)  # mu = 0: plain training, deterministic
