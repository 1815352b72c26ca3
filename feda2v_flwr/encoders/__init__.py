"""Frozen audio encoders, their embedding cache, and class text targets."""

from __future__ import annotations

from feda2v_flwr.config.schema import ExperimentConfig
from feda2v_flwr.encoders.ast import ASTEncoder, ast_config
from feda2v_flwr.encoders.cache import EmbeddingCache
from feda2v_flwr.encoders.mel_patch import MelPatchEncoder
from feda2v_flwr.encoders.precomputed import PrecomputedEncoder, precomputed_shape
from feda2v_flwr.encoders.pretrained import ModelLoadError
from feda2v_flwr.encoders.text_targets import (
    PROFILE_SLOTS,
    SlotSpec,
    TextTargets,
    load_text_targets,
    target_slots,
)


def build_audio_encoder(
    config: ExperimentConfig, device: str = "cpu"
) -> MelPatchEncoder | ASTEncoder | PrecomputedEncoder:
    """The configured frozen encoder (``ast`` loads its weights lazily, on the first uncached clip;
    ``precomputed`` reads the dataset's (T, D) from one file's header)."""
    f, data = config.feda2v, config.data
    if f.audio_encoder == "ast":
        return ASTEncoder(f.ast, sample_rate=data.sample_rate, clip_seconds=data.clip_seconds, device=device)
    if f.audio_encoder == "precomputed":
        return PrecomputedEncoder(precomputed_shape(data))
    return MelPatchEncoder(f.mel_patch, sample_rate=data.sample_rate, clip_seconds=data.clip_seconds)


def audio_embed_dim(config: ExperimentConfig) -> int:
    """Feature size of the configured encoder, without loading any weights or arrays."""
    f = config.feda2v
    if f.audio_encoder == "ast":
        return int(ast_config(f.ast).hidden_size)
    if f.audio_encoder == "precomputed":
        return precomputed_shape(config.data)[1]
    return f.mel_patch.embed_dim


__all__ = [
    "PROFILE_SLOTS",
    "ASTEncoder",
    "EmbeddingCache",
    "MelPatchEncoder",
    "ModelLoadError",
    "PrecomputedEncoder",
    "SlotSpec",
    "TextTargets",
    "audio_embed_dim",
    "build_audio_encoder",
    "load_text_targets",
    "target_slots",
]
