"""The ``ast`` audio encoder: transformers' ``ASTFeatureExtractor`` + ``ASTModel``, frozen.

Waves (mono, ``data.sample_rate``, clip length) are resampled to the 16 kHz AST expects; the
feature extractor pads/cuts the log-mel to ``max_length`` frames (the model's own by default,
1024 for the AudioSet model: (B, 1214, 768) = 1212 patches + CLS + distillation token). A
different ``ast.max_length`` adapts the time axis of the position embeddings the way the AST
authors fine-tuned on shorter clips (centre crop when shorter, bilinear interpolation when
longer): 512 frames cover ESC-50's 5 s clips with 602 tokens. The weights load lazily, on
the first clip that is not in the embedding cache, so later rounds (all cached) never load
them. The model's config is read at start: a model that cannot be found fails there with one
message saying how to supply it.
"""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from feda2v_flwr.config.schema import AstSettings
from feda2v_flwr.data.audio_files import resample
from feda2v_flwr.encoders.pretrained import load_pretrained, model_identity

log = logging.getLogger(__name__)

AST_SAMPLE_RATE = 16_000


def ast_config(settings: AstSettings):  # noqa: ANN201 (transformers.ASTConfig)
    from transformers import ASTConfig

    return load_pretrained("AST model config", settings.model, ASTConfig.from_pretrained)


class ASTEncoder:
    encoder_id = "ast"

    def __init__(self, settings: AstSettings, *, sample_rate: int, clip_seconds: float, device: str = "cpu"):
        self.settings = settings
        self.sample_rate = sample_rate
        self.clip_seconds = clip_seconds
        self.device = device
        self.config = ast_config(settings)
        self.max_length = settings.max_length or int(self.config.max_length)
        self._model = None
        self._extractor = None
        self.calls = 0  # clips encoded so far (tests assert the cache avoids re-encoding)

    @property
    def embed_dim(self) -> int:
        return int(self.config.hidden_size)

    def cache_key(self) -> str:
        """Model identity (id or local dir + its config and weight files) + every setting that
        changes the output."""
        identity = {
            **model_identity(self.settings.model, self.config),
            "sample_rate": self.sample_rate,
            "clip_seconds": self.clip_seconds,
            "max_length": self.max_length,
        }
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]
        return f"{self.encoder_id}-{digest}"

    def _ensure_loaded(self) -> None:
        if self._model is not None:
            return
        from transformers import ASTFeatureExtractor, ASTModel

        self._extractor = load_pretrained(
            "AST feature extractor", self.settings.model, ASTFeatureExtractor.from_pretrained
        )
        model = load_pretrained("AST model", self.settings.model, ASTModel.from_pretrained)
        model.requires_grad_(False)
        if self.max_length != model.config.max_length:
            log.info("AST: position embeddings adapted from %d to %d frames", model.config.max_length, self.max_length)
            adapt_time_length(model, self.max_length)
        self._extractor.max_length = self.max_length
        self._model = model.eval().to(self.device)
        log.info("AST encoder %s loaded on %s", self.settings.model, self.device)

    @torch.no_grad()
    def encode(self, waves: list[np.ndarray]) -> np.ndarray:
        """(B, samples) waves -> (B, tokens, hidden) float32 (the full sequence, CLS first)."""
        self._ensure_loaded()
        assert self._model is not None and self._extractor is not None
        self.calls += len(waves)
        outputs = []
        for start in range(0, len(waves), self.settings.batch_size):
            batch = [
                resample(np.asarray(w, dtype=np.float32), self.sample_rate, AST_SAMPLE_RATE)
                for w in waves[start : start + self.settings.batch_size]
            ]
            features = self._extractor(batch, sampling_rate=AST_SAMPLE_RATE, return_tensors="pt")
            hidden = self._model(input_values=features["input_values"].to(self.device)).last_hidden_state
            outputs.append(hidden.float().cpu().numpy())
        return np.concatenate(outputs)


def token_count(config, max_length: int) -> int:  # noqa: ANN001 (transformers.ASTConfig)
    """Tokens per clip: CLS + distillation token + frequency x time patches."""
    frequency = (config.num_mel_bins - config.patch_size) // config.frequency_stride + 1
    return 2 + frequency * _time_patches(config, max_length)


def _time_patches(config, max_length: int) -> int:  # noqa: ANN001
    if max_length < config.patch_size:
        raise ValueError(f"ast.max_length {max_length} is shorter than one patch ({config.patch_size} frames)")
    return (max_length - config.patch_size) // config.time_stride + 1


@torch.no_grad()
def adapt_time_length(model, max_length: int) -> None:  # noqa: ANN001 (transformers.ASTModel)
    """Make ``model`` take ``max_length`` frames: its patch position embeddings are laid out
    (frequency, time); the time axis is centre-cropped when shorter and bilinearly interpolated
    when longer (the AST authors' recipe); the CLS and distillation positions are kept."""
    config = model.config
    old_time = _time_patches(config, config.max_length)
    new_time = _time_patches(config, max_length)
    positions = model.embeddings.position_embeddings
    special, patches = positions[:, :2], positions[:, 2:]
    frequency = patches.shape[1] // old_time
    grid = patches.reshape(1, frequency, old_time, -1).permute(0, 3, 1, 2)  # (1, D, f, t)
    if new_time <= old_time:
        start = old_time // 2 - new_time // 2
        grid = grid[..., start : start + new_time]
    else:
        grid = F.interpolate(grid, size=(frequency, new_time), mode="bilinear", align_corners=False)
    patches = grid.permute(0, 2, 3, 1).reshape(1, frequency * new_time, -1)
    model.embeddings.position_embeddings = nn.Parameter(torch.cat([special, patches], dim=1), requires_grad=False)
    config.max_length = max_length
