"""Frozen audio encoders, their embedding cache, and class text targets."""

from feda2v_flwr.config.schema import ExperimentConfig
from feda2v_flwr.encoders.cache import EmbeddingCache
from feda2v_flwr.encoders.mel_patch import MelPatchEncoder
from feda2v_flwr.encoders.text_targets import (
    PROFILE_SLOTS,
    SlotSpec,
    TextTargets,
    load_text_targets,
)


def build_audio_encoder(config: ExperimentConfig) -> MelPatchEncoder:
    return MelPatchEncoder(
        config.feda2v.mel_patch, sample_rate=config.data.sample_rate, clip_seconds=config.data.clip_seconds
    )


__all__ = [
    "PROFILE_SLOTS",
    "EmbeddingCache",
    "MelPatchEncoder",
    "SlotSpec",
    "TextTargets",
    "build_audio_encoder",
    "load_text_targets",
]
