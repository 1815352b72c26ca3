"""Generators of synthetic audio-encoder embeddings, and how to rebuild one from a checkpoint."""

from __future__ import annotations

from typing import Any

from torch import nn

from feda2v_flwr.models.generators.base import Condition, ConditionEncoder, SequenceGenerator
from feda2v_flwr.models.generators.gan import GANDiscriminator, GANGenerator
from feda2v_flwr.models.generators.vae import (
    ConditionedVAEGenerator,
    MultiModalVAEGenerator,
    TokenwiseVAEGenerator,
    VAEGenerator,
    count_flat_vae_parameters,
)

GENERATOR_CLASSES: dict[str, type[nn.Module]] = {
    cls.__name__: cls
    for cls in (
        VAEGenerator,
        ConditionedVAEGenerator,
        MultiModalVAEGenerator,
        TokenwiseVAEGenerator,
        GANGenerator,
        GANDiscriminator,
    )
}


def build_generator(class_name: str, args: dict[str, Any]) -> nn.Module:
    """Rebuild a generator (or discriminator) from its class name and ``constructor_args()``."""
    if class_name not in GENERATOR_CLASSES:
        raise ValueError(f"Unknown generator class '{class_name}'. Known: {sorted(GENERATOR_CLASSES)}")
    return GENERATOR_CLASSES[class_name](**args)


__all__ = [
    "GENERATOR_CLASSES",
    "Condition",
    "ConditionEncoder",
    "ConditionedVAEGenerator",
    "GANDiscriminator",
    "GANGenerator",
    "MultiModalVAEGenerator",
    "SequenceGenerator",
    "TokenwiseVAEGenerator",
    "VAEGenerator",
    "build_generator",
    "count_flat_vae_parameters",
]
