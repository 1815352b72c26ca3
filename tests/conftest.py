"""Shared fixtures: a tiny but real configuration that runs in seconds on a CPU."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile
from flwr.server.client_proxy import ClientProxy
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    ASTConfig,
    ASTFeatureExtractor,
    ASTModel,
    CLIPTextConfig,
    CLIPTextModel,
    PreTrainedTokenizerFast,
    T5Config,
    T5EncoderModel,
)

from feda2v_flwr.config import ExperimentConfig, validate_config
from feda2v_flwr.launch import run_simulation

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")  # runs whose config does not name a W&B mode log nothing

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


def need_offline_asset(present: bool, what: str) -> None:
    """Skip a test whose Debian package is not installed; fail instead under .ci/run, which installs
    them and sets FEDA2V_REQUIRE_OFFLINE_ASSETS=1 (a CI without them must not pass by skipping)."""
    if not present:
        if os.environ.get("FEDA2V_REQUIRE_OFFLINE_ASSETS") == "1":
            pytest.fail(f"{what} is not installed, and FEDA2V_REQUIRE_OFFLINE_ASSETS=1")
        pytest.skip(f"{what} is not installed (apt-get install sonic-pi-samples espeak-ng)")


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


PROMPT_WORDS = (
    "a photo of clear siren rain dog engine clock tick church bells crickets wind chirping birds door wood knock"
)


def _word_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the test prompts (real runs use the models' own tokenizers)."""
    vocab = {"[PAD]": 0, "[UNK]": 1, "[EOS]": 2, **{w: i + 3 for i, w in enumerate(PROMPT_WORDS.split())}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]")


def save_tiny_text_encoders(directory) -> dict[str, str]:
    """Randomly initialised CLIP text (hidden 32) and T5 encoders (d_model 24), each saved with
    a tokenizer like a real local model; returns the ``feda2v.text_encoders`` settings."""
    clip_dir, t5_dir = directory / "clip", directory / "t5"
    clip = CLIPTextConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=77,
        pad_token_id=0,
        eos_token_id=2,
    )
    CLIPTextModel(clip).save_pretrained(clip_dir)
    T5EncoderModel(
        T5Config(vocab_size=64, d_model=24, d_kv=8, d_ff=48, num_layers=1, num_heads=2, pad_token_id=0, eos_token_id=2)
    ).save_pretrained(t5_dir)
    for folder in (clip_dir, t5_dir):
        _word_tokenizer().save_pretrained(folder)
    return {"clip_model": str(clip_dir), "t5_model": str(t5_dir)}


FILE_RATE = 22050  # not the 16 kHz the config asks for, so every read resamples
FOLDER_CLASSES = ("bell", "cat", "dog", "siren")


def write_clip(path: Path, seed: int) -> None:
    """1 s of a tone plus noise, stereo at 22.05 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(FILE_RATE) / FILE_RATE
    tone = 0.4 * np.sin(2 * np.pi * rng.uniform(200, 2000) * t) + 0.05 * rng.normal(size=t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, np.stack([tone, 0.5 * tone], axis=1), FILE_RATE)


def simulate(tmp_path: Path, config, name: str, overrides: str = "", **options) -> tuple[str, Path]:
    """A real ``flwr run`` of ``config`` under ``tmp_path`` (own FLWR_HOME and outputs), no log
    streaming; returns (final status, run folder)."""
    return run_simulation(
        config=str(config),
        overrides=overrides,
        run_name=name,
        output_dir=tmp_path / "outputs",
        flwr_home=tmp_path / "flwr-home",
        stream=False,
        timeout=options.pop("timeout", 1200.0),
        **options,
    )
