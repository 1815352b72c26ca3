"""The ``ast`` audio encoder: transformers' ``ASTFeatureExtractor`` + ``ASTModel``, frozen.

Waves (mono, ``data.sample_rate``, clip length) are resampled to the 16 kHz AST expects; the
feature extractor pads/cuts the log-mel to its ``max_length`` frames (1024 for the AudioSet
model: (B, 1214, 768) = 1212 patches + CLS + distillation token; it must match the model's
position embeddings). The weights load lazily, on the first clip that is not in the embedding
cache, so later rounds (all cached) never load them. The model's config is read at start: a
model that cannot be found fails there with one message saying how to supply it.
"""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import torch

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
