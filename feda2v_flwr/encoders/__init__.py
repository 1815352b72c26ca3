"""Frozen audio encoders, their embedding cache, and class text targets."""

from __future__ import annotations

from feda2v_flwr.config.schema import ExperimentConfig
from feda2v_flwr.encoders.ast import ASTEncoder, ast_config
from feda2v_flwr.encoders.cache import EmbeddingCache
from feda2v_flwr.encoders.mel_patch import MelPatchEncoder
from feda2v_flwr.encoders.pretrained import ModelLoadError
from feda2v_flwr.encoders.text_targets import (
    PROFILE_SLOTS,
    SlotSpec,
    TextTargets,
    load_text_targets,
    target_slots,
)


def build_audio_encoder(config: ExperimentConfig, device: str = "cpu") -> MelPatchEncoder | ASTEncoder:
    """The configured frozen encoder (``ast`` loads its weights lazily, on the first uncached clip)."""
    f, data = config.feda2v, config.data
    if f.audio_encoder == "ast":
        return ASTEncoder(f.ast, sample_rate=data.sample_rate, clip_seconds=data.clip_seconds, device=device)
    return MelPatchEncoder(f.mel_patch, sample_rate=data.sample_rate, clip_seconds=data.clip_seconds)


def audio_embed_dim(config: ExperimentConfig) -> int:
    """Feature size of the configured encoder, without loading any weights."""
    f = config.feda2v
    return int(ast_config(f.ast).hidden_size) if f.audio_encoder == "ast" else f.mel_patch.embed_dim


__all__ = [
    "PROFILE_SLOTS",
    "ASTEncoder",
    "EmbeddingCache",
    "MelPatchEncoder",
    "ModelLoadError",
    "SlotSpec",
    "TextTargets",
    "audio_embed_dim",
    "build_audio_encoder",
    "load_text_targets",
    "target_slots",
]
