"""The ``aisfx`` audio encoder: a pretrained sound-effects CNN that installs offline.

The PyPI package ``aisfx`` 0.1.2 ships the "X-Sequential-CE" model of Ma & Lerch, *Representation
Learning for the Automatic Indexing of Sound Effects Libraries* (ISMIR 2022) with its weights
inside the wheel (``aisfx/models/checkpoint.pth``; code MIT, **model CC BY 4.0**: credit the
authors when you publish results). Its embedding net (4.69 M parameters, the DCASE "Cnn_9layers"
baseline) reads blocks of 100 log-mel frames (96 bands, 44.1 kHz, hop 1024: about 2.3 s) and gives
512 values per block (mean over frequency, max over time, post-ReLU).

Each clip becomes a token sequence: blocks hop by ``aisfx.hop_fraction`` of a block (the
authors' 0.5, about 1.16 s), a partial last block is dropped, and a clip shorter than one block
is zero-padded to one. Token 0 is the mean of the block tokens (the analogue of AST's CLS token,
so ``use_cls_token_only`` works), then one token per block: (1 + blocks, 512).

The front-end is the package's librosa path (the one its authors offer besides Essentia),
written with transformers' audio utilities so that neither librosa nor numba is needed: the
wave is resampled to 44.1 kHz and peak-normalised; power mel spectrogram (Hann window 2048,
centred frames with zero padding, HTK mel scale 0-22.05 kHz, filters of unit area);
``log10(1 + 10^4 S)``; divided by 9.4578, the authors' cross-dataset maximum ("original"
normalisation). With librosa 0.11 installed, ``tests/test_aisfx.py`` compares it with
``librosa.feature.melspectrogram``: 6e-8 apart at most on a 3 s test sound (librosa is not a
dependency, so CI skips that check).

Install the package without its dependencies: its wheel pins numpy 1.23 and librosa 0.9.2,
which do not install on Python 3.11 (``pip install --no-deps aisfx==0.1.2``;
``scripts/install.sh`` does it).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import math
import pickle
from pathlib import Path

import numpy as np
import torch
from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

from feda2v_flwr.config.schema import AisfxSettings
from feda2v_flwr.data.audio_files import resample
from feda2v_flwr.encoders.pretrained import ModelLoadError

AISFX_SAMPLE_RATE = 44_100
N_FFT = 2048
HOP_LENGTH = 1024
MEL_BANDS = 96
BLOCK_FRAMES = 100  # the model's input: 100 frames, about 2.3 s
SPECTROGRAM_MAX = 9.457798957824707  # aisfx.preprocessing's "original" normalisation
EMBED_DIM = 512
INSTALL_HINT = "Install it with `pip install --no-deps aisfx==0.1.2` (its own pins do not fit Python 3.11)."


def block_count(num_samples: int, sample_rate: int, hop_fraction: float) -> int:
    """Blocks of one clip of ``num_samples`` samples at ``sample_rate``: the frames of the
    44.1 kHz wave (centred, hop 1024), at least one block, partial last block dropped."""
    resampled = math.ceil(num_samples * AISFX_SAMPLE_RATE / sample_rate)  # resample_poly's output length
    frames = max(BLOCK_FRAMES, 1 + resampled // HOP_LENGTH)
    return 1 + (frames - BLOCK_FRAMES) // _block_hop(hop_fraction)


def _block_hop(hop_fraction: float) -> int:
    return max(1, int(round(BLOCK_FRAMES * hop_fraction)))


def default_weights() -> Path:
    """The checkpoint inside the installed ``aisfx`` wheel."""
    try:
        return Path(str(importlib.resources.files("aisfx") / "models" / "checkpoint.pth"))
    except ModuleNotFoundError:
        raise ModelLoadError(f"feda2v.audio_encoder 'aisfx' needs the aisfx package. {INSTALL_HINT}") from None


def load_embedding_net(weights: Path, device: str = "cpu") -> torch.nn.Module:
    """aisfx's embedding net with the checkpoint's weights (``torch.load(weights_only=True)``:
    the checkpoint's dataset table holds numpy integers, allowed by name and nothing else)."""
    try:
        from aisfx.models.cnn2d import EmbeddingNet
    except ModuleNotFoundError:
        raise ModelLoadError(f"feda2v.audio_encoder 'aisfx' needs the aisfx package. {INSTALL_HINT}") from None
    core = np._core if hasattr(np, "_core") else np.core  # numpy 2 / numpy 1
    allowed = [(core.multiarray.scalar, "numpy.core.multiarray.scalar"), np.dtype, np.dtypes.Int64DType]
    try:
        with torch.serialization.safe_globals(allowed):
            state, _datasets = torch.load(weights, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as err:
        raise ModelLoadError(
            f"Cannot load the aisfx weights {weights}: {str(err).splitlines()[0]}. {INSTALL_HINT}"
        ) from None
    prefix = "embedding_net."
    net = EmbeddingNet("max", 3, 1, 64)
    net.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    return net.requires_grad_(False).eval().to(device)


class AisfxEncoder:
    encoder_id = "aisfx"

    def __init__(self, settings: AisfxSettings, *, sample_rate: int, clip_seconds: float, device: str = "cpu"):
        self.settings = settings
        self.sample_rate = sample_rate
        self.num_samples = int(round(clip_seconds * sample_rate))
        self.device = device
        self.weights = Path(settings.weights).expanduser() if settings.weights else default_weights()
        if not self.weights.is_file():
            raise ModelLoadError(f"aisfx.weights {self.weights} is not a file. {INSTALL_HINT}")
        self.num_blocks = block_count(self.num_samples, sample_rate, settings.hop_fraction)
        filters = mel_filter_bank(
            num_frequency_bins=N_FFT // 2 + 1,
            num_mel_filters=MEL_BANDS,
            min_frequency=0.0,
            max_frequency=AISFX_SAMPLE_RATE / 2,
            sampling_rate=AISFX_SAMPLE_RATE,
            norm=None,
            mel_scale="htk",
            triangularize_in_mel_space=False,
        )  # (frequency bins, bands); the lowest bands are narrower than one bin and stay empty
        area = filters.sum(axis=0, keepdims=True)
        self.mel_filters = np.divide(filters, area, out=np.zeros_like(filters), where=area > 0)  # librosa norm=1
        self.window = window_function(N_FFT, "hann")
        self._net: torch.nn.Module | None = None  # loaded on the first clip that is not cached
        self.calls = 0  # clips encoded so far (tests assert the cache avoids re-encoding)

    @property
    def num_tokens(self) -> int:
        return 1 + self.num_blocks

    @property
    def embed_dim(self) -> int:
        return EMBED_DIM

    def cache_key(self) -> str:
        """The weights file (name, size, modification time) and every setting that changes the output."""
        stat = self.weights.stat()
        identity = {
            "weights": [str(self.weights), stat.st_size, stat.st_mtime_ns],
            "hop_fraction": self.settings.hop_fraction,
            "sample_rate": self.sample_rate,
            "n": self.num_samples,
        }
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
        return f"{self.encoder_id}-{digest}"

    def log_mel(self, wave: np.ndarray) -> np.ndarray:
        """(frames, 96) normalised log-mel of one wave at ``data.sample_rate`` (cut or padded to the clip)."""
        wave = np.asarray(wave, dtype=np.float32)[: self.num_samples]
        wave = np.pad(wave, (0, self.num_samples - wave.size))
        wave = resample(wave, self.sample_rate, AISFX_SAMPLE_RATE).astype(np.float64)
        peak = np.abs(wave).max()
        wave = wave / peak if peak > 0 else wave
        power = spectrogram(
            wave,
            self.window,
            frame_length=N_FFT,
            hop_length=HOP_LENGTH,
            power=2.0,
            center=True,
            pad_mode="constant",
            mel_filters=self.mel_filters,
            mel_floor=0.0,
        )  # (96, frames)
        return (np.log10(1.0 + 1e4 * power) / SPECTROGRAM_MAX).T.astype(np.float32)

    def blocks(self, wave: np.ndarray) -> np.ndarray:
        """(blocks, 100, 96): the clip's log-mel, zero-padded to one block at least, cut into blocks."""
        mel = self.log_mel(wave)
        mel = np.pad(mel, ((0, max(0, BLOCK_FRAMES - mel.shape[0])), (0, 0)))
        hop = _block_hop(self.settings.hop_fraction)
        return np.stack([mel[i * hop : i * hop + BLOCK_FRAMES] for i in range(self.num_blocks)])

    @torch.no_grad()
    def encode(self, waves: list[np.ndarray]) -> np.ndarray:
        """(B, samples) waves -> (B, 1 + blocks, 512) float32 tokens (block mean first)."""
        if self._net is None:
            self._net = load_embedding_net(self.weights, self.device)
        self.calls += len(waves)
        blocks = np.concatenate([self.blocks(w) for w in waves])  # (B * blocks, 100, 96)
        outputs = []
        batch = self.settings.batch_size * self.num_blocks
        for start in range(0, len(blocks), batch):
            chunk = torch.from_numpy(blocks[start : start + batch]).to(self.device)
            outputs.append(self._net(chunk).float().cpu().numpy())
        tokens = np.concatenate(outputs).reshape(len(waves), self.num_blocks, EMBED_DIM)
        return np.concatenate([tokens.mean(axis=1, keepdims=True), tokens], axis=1)
