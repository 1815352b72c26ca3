"""Shared fixtures: a tiny but real configuration that runs in seconds on a CPU."""

from __future__ import annotations

import os

import pytest
from flwr.server.client_proxy import ClientProxy
from transformers import ASTConfig, ASTFeatureExtractor, ASTModel

from feda2v_flwr.config import ExperimentConfig, validate_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY = {
    "feda2v": {
        "clip_adapter_hidden_dims": [32],
        "t5_adapter_hidden_dims": [32],
        "adapter_width": 32,
        "adapter_heads": 2,
        "mel_patch": {"n_mels": 32, "patch_mels": 16, "patch_frames": 8, "embed_dim": 48},
        "generator_hidden_dim": 64,
        "generator_latent_dim": 8,
        "generator_training_sequence_length": None,
        "generator_training_epochs": 3,
        "generator_validation_frequency": 1,
        "synthetic_samples_per_class": 2,
        "global_model_train_epochs": 2,
        "generator_checkpoint_frequency": 1,
    },
    "federation": {"num_clients": 2, "global_rounds": 2, "local_epochs": 1},
    "data": {"classes": ["siren", "rain", "dog", "engine"], "clips_per_class": 10, "clip_seconds": 1.0},
    "wandb": {"enabled": False},
}


def tiny_config(**sections: dict) -> ExperimentConfig:
    raw = {name: dict(values) for name, values in TINY.items()}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return validate_config(raw)


@pytest.fixture
def config() -> ExperimentConfig:
    return tiny_config()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One cache per test session: targets are encoded once (MiniLM loads in ~5 s)."""
    return tmp_path_factory.mktemp("cache")


class FakeClientProxy(ClientProxy):
    """A client proxy for strategy tests that call aggregate_fit directly (never contacted)."""

    def get_properties(self, ins, timeout, group_id):
        raise NotImplementedError

    def get_parameters(self, ins, timeout, group_id):
        raise NotImplementedError

    def fit(self, ins, timeout, group_id):
        raise NotImplementedError

    def evaluate(self, ins, timeout, group_id):
        raise NotImplementedError

    def reconnect(self, ins, timeout, group_id):
        raise NotImplementedError


# 16 mel bins x 64 frames, 16x16 patches with stride 10: 1 x 5 patches + CLS + distillation = 7 tokens
TINY_AST = dict(
    hidden_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=64,
    num_mel_bins=16,
    max_length=64,
    patch_size=16,
    frequency_stride=10,
    time_stride=10,
)
TINY_AST_TOKENS = 7


def save_tiny_ast(directory) -> str:
    """A randomly initialised AST (and its feature extractor) saved like a real local model."""
    config = ASTConfig(**TINY_AST)
    ASTModel(config).save_pretrained(directory)
    ASTFeatureExtractor(num_mel_bins=16, max_length=64).save_pretrained(directory)
    return str(directory)
