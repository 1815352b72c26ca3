"""Adapters, generators and losses (compact, shape-tested)."""

from feda2v_flwr.models.adapter import AttentionPooling, SlotAdapter, TokenMLP, build_adapters
from feda2v_flwr.models.generators import (
    ConditionedVAEGenerator,
    count_flat_vae_parameters,
    pool_tokens,
    resize_tokens,
)
from feda2v_flwr.models.losses import VAELoss, adapter_loss

__all__ = [
    "AttentionPooling",
    "ConditionedVAEGenerator",
    "SlotAdapter",
    "TokenMLP",
    "VAELoss",
    "adapter_loss",
    "build_adapters",
    "count_flat_vae_parameters",
    "pool_tokens",
    "resize_tokens",
]
