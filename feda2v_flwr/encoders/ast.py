"""The ``ast`` audio encoder: transformers' ``ASTFeatureExtractor`` + ``ASTModel``, frozen.

Waves (mono, ``data.sample_rate``, clip length) are resampled to the 16 kHz AST expects; the
feature extractor pads/cuts the log-mel to the model's ``max_length`` frames (1024 for the
AudioSet model: (B, 1214, 768) = 1212 patches + CLS + distillation token). The model is loaded
lazily, on the first clip that is not in the embedding cache, so later rounds (all cached) never
load it. A model that cannot be found fails with one message saying how to supply it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from feda2v_flwr.config.schema import AstSettings
from feda2v_flwr.data.audio_files import resample

log = logging.getLogger(__name__)

AST_SAMPLE_RATE = 16_000


class ModelLoadError(RuntimeError):
    """A pretrained model that cannot be loaded; the message says how to supply it."""


def load_pretrained(what: str, model: str, loader):  # noqa: ANN001, ANN201 (transformers' from_pretrained)
    """``loader(model)`` for a hub id or a local directory; failures become one ModelLoadError."""
    looks_local = model.startswith(("/", ".", "~"))
    try:
        if looks_local and not Path(model).expanduser().is_dir():
            raise OSError("no such directory")
        return loader(str(Path(model).expanduser()) if looks_local else model)
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"Cannot load the {what} '{model}': {str(err).splitlines()[0]}.\n"
            f"Give a local directory made with save_pretrained (config.json + weights, plus the tokenizer "
            f"files for a text model), or fetch it once on a machine with network access "
            f"(huggingface-cli download {model}) and run with HF_HUB_OFFLINE=1 so nothing is fetched at run time."
        ) from None


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
            "model": self.settings.model,
            "config": self.config.to_dict(),
            "sample_rate": self.sample_rate,
            "clip_seconds": self.clip_seconds,
        }
        local = Path(self.settings.model).expanduser()
        if local.is_dir():  # a local model: its weight files' sizes and times identify it
            identity["files"] = sorted(
                (p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in local.iterdir() if p.is_file()
            )
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]
        return f"{self.encoder_id}-{digest}"

    def _ensure_loaded(self) -> None:
        if self._model is not None:
            return
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
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
