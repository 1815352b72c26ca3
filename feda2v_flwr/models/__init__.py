"""Adapters, generators and losses (compact, shape-tested)."""

from feda2v_flwr.models.adapter import AttentionPooling, SlotAdapter, TokenMLP, build_adapters
from feda2v_flwr.models.generators import (
    ConditionedVAEGenerator,
    GANDiscriminator,
    GANGenerator,
    MultiModalVAEGenerator,
    TokenwiseVAEGenerator,
    VAEGenerator,
    build_generator,
    count_flat_vae_parameters,
)
from feda2v_flwr.models.losses import VAELoss, adapter_loss, gan_discriminator_loss, gan_generator_loss
from feda2v_flwr.models.sequence import AttentionUpsampler, pool_tokens, resize_tokens

__all__ = [
    "AttentionPooling",
    "AttentionUpsampler",
    "ConditionedVAEGenerator",
    "GANDiscriminator",
    "GANGenerator",
    "MultiModalVAEGenerator",
    "SlotAdapter",
    "TokenMLP",
    "TokenwiseVAEGenerator",
    "VAEGenerator",
    "VAELoss",
    "adapter_loss",
    "build_adapters",
    "build_generator",
    "count_flat_vae_parameters",
    "gan_discriminator_loss",
    "gan_generator_loss",
    "pool_tokens",
    "resize_tokens",
]
