"""The weight-free ``mel-patch`` audio encoder (the offline default).

Log-mel spectrogram -> non-overlapping (mel band x time) patches -> a fixed, seeded random
projection to ``embed_dim``. Token 0 is the mean of the patch tokens (the analogue of AST's CLS
token), so ``use_cls_token_only`` works. Deterministic and fast, but it has **no learned
semantics**: it is a stand-in that lets the whole pipeline run offline, not a pretrained model.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

from feda2v_flwr.config.schema import MelPatchSettings


class MelPatchEncoder:
    encoder_id = "mel-patch"

    def __init__(self, settings: MelPatchSettings, *, sample_rate: int, clip_seconds: float):
        self.settings = settings
        self.sample_rate = sample_rate
        self.num_samples = int(round(clip_seconds * sample_rate))
        self.window = window_function(settings.n_fft, "hann")
        self.mel_filters = mel_filter_bank(
            num_frequency_bins=settings.n_fft // 2 + 1,
            num_mel_filters=settings.n_mels,
            min_frequency=20.0,
            max_frequency=sample_rate / 2,
            sampling_rate=sample_rate,
            norm="slaney",
            mel_scale="slaney",
        )
        patch_dim = settings.patch_mels * settings.patch_frames
        rng = np.random.default_rng(settings.projection_seed)
        self.projection = (rng.standard_normal((patch_dim, settings.embed_dim)) / np.sqrt(patch_dim)).astype(np.float32)
        frames = 1 + self.num_samples // settings.hop_length
        self.num_patch_tokens = (settings.n_mels // settings.patch_mels) * (frames // settings.patch_frames)
        if self.num_patch_tokens < 1:
            raise ValueError("Clips are too short for one mel patch: lower patch_frames or hop_length")
        self.calls = 0  # clips encoded so far (tests assert the cache avoids re-encoding)

    @property
    def num_tokens(self) -> int:
        return 1 + self.num_patch_tokens

    @property
    def embed_dim(self) -> int:
        return self.settings.embed_dim

    def cache_key(self) -> str:
        """Every setting that changes the output, hashed."""
        settings = {**self.settings.model_dump(), "sample_rate": self.sample_rate, "n": self.num_samples}
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
        return f"{self.encoder_id}-{digest}"

    def encode(self, waves: list[np.ndarray]) -> np.ndarray:
        """(B, samples) waves -> (B, 1 + patches, embed_dim) float32 tokens."""
        self.calls += len(waves)
        return np.stack([self._encode_one(w) for w in waves])

    def _encode_one(self, wave: np.ndarray) -> np.ndarray:
        s = self.settings
        wave = np.pad(wave[: self.num_samples], (0, max(0, self.num_samples - wave.size)))
        mel = spectrogram(
            wave,
            self.window,
            frame_length=s.n_fft,
            hop_length=s.hop_length,
            power=2.0,
            mel_filters=self.mel_filters,
            log_mel="log",
            mel_floor=1e-6,
        )  # (n_mels, frames)
        mel = (mel - mel.mean()) / (mel.std() + 1e-5)
        bands, chunks = s.n_mels // s.patch_mels, mel.shape[1] // s.patch_frames
        mel = mel[:, : chunks * s.patch_frames]
        patches = mel.reshape(bands, s.patch_mels, chunks, s.patch_frames).transpose(0, 2, 1, 3)
        tokens = patches.reshape(bands * chunks, -1).astype(np.float32) @ self.projection  # (P, D)
        return np.concatenate([tokens.mean(0, keepdims=True), tokens])  # (1 + P, D)
