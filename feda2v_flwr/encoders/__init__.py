"""Frozen audio encoders, their embedding cache, and class text targets."""

from __future__ import annotations

from feda2v_flwr.config.schema import ExperimentConfig
from feda2v_flwr.encoders import aisfx
from feda2v_flwr.encoders.aisfx import AisfxEncoder
from feda2v_flwr.encoders.ast import ASTEncoder, ast_config, token_count
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

AudioEncoder = MelPatchEncoder | ASTEncoder | AisfxEncoder | PrecomputedEncoder


def build_audio_encoder(config: ExperimentConfig, device: str = "cpu") -> AudioEncoder:
    """The configured frozen encoder (``ast`` and ``aisfx`` load their weights lazily, on the first
    uncached clip; ``precomputed`` reads the dataset's (T, D) from one file's header)."""
    f, data = config.feda2v, config.data
    if f.audio_encoder == "ast":
        return ASTEncoder(f.ast, sample_rate=data.sample_rate, clip_seconds=data.clip_seconds, device=device)
    if f.audio_encoder == "aisfx":
        return AisfxEncoder(f.aisfx, sample_rate=data.sample_rate, clip_seconds=data.clip_seconds, device=device)
    if f.audio_encoder == "precomputed":
        return PrecomputedEncoder(precomputed_shape(data))
    return MelPatchEncoder(f.mel_patch, sample_rate=data.sample_rate, clip_seconds=data.clip_seconds)


def audio_embed_dim(config: ExperimentConfig) -> int:
    """Feature size of the configured encoder, without loading any weights or arrays."""
    f = config.feda2v
    if f.audio_encoder == "ast":
        return int(ast_config(f.ast).hidden_size)
    if f.audio_encoder == "aisfx":
        return aisfx.EMBED_DIM
    if f.audio_encoder == "precomputed":
        return precomputed_shape(config.data)[1]
    return f.mel_patch.embed_dim


def audio_token_count(config: ExperimentConfig) -> int:
    """Tokens per clip of the configured encoder (T of its (T, D) output), without loading weights."""
    f, data = config.feda2v, config.data
    if f.audio_encoder == "ast":
        settings = ast_config(f.ast)
        return token_count(settings, f.ast.max_length or int(settings.max_length))
    if f.audio_encoder == "aisfx":
        samples = int(round(data.clip_seconds * data.sample_rate))
        return 1 + aisfx.block_count(samples, data.sample_rate, f.aisfx.hop_fraction)
    if f.audio_encoder == "precomputed":
        return precomputed_shape(data)[0]
    return MelPatchEncoder(f.mel_patch, sample_rate=data.sample_rate, clip_seconds=data.clip_seconds).num_tokens


def statistics_shape(config: ExperimentConfig) -> tuple[int, int]:
    """(L, D) of the per-class audio means and stds every node sends: L is
    ``statistics_sequence_length``, else the encoder's tokens (1 with ``use_cls_token_only``)."""
    f = config.feda2v
    length = f.statistics_sequence_length or (1 if f.use_cls_token_only else audio_token_count(config))
    return length, audio_embed_dim(config)


__all__ = [
    "PROFILE_SLOTS",
    "ASTEncoder",
    "AisfxEncoder",
    "AudioEncoder",
    "EmbeddingCache",
    "MelPatchEncoder",
    "ModelLoadError",
    "PrecomputedEncoder",
    "SlotSpec",
    "TextTargets",
    "audio_embed_dim",
    "audio_token_count",
    "build_audio_encoder",
    "load_text_targets",
    "statistics_shape",
    "target_slots",
]
