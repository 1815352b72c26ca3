"""Reading audio files: probe without decoding, then mono, resampled, fixed-length waves."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import soundfile
from scipy.signal import resample_poly

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
# Part of every file clip's identity: bump it when reading changes what a clip's wave is,
# so cached embeddings of the old waves are not reused.
READER_VERSION = "audio-reader-v1"


def audio_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as audio, or ``None`` when it can.

    Reads the header only (cheap), so a partition can leave unreadable files out before any
    clip is decoded.
    """
    if not path.is_file():
        return "the file does not exist"
    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError, OSError) as err:
        return f"not a readable audio file ({err})"
    if info.frames <= 0 or info.samplerate <= 0:
        return "the file holds no audio frames"
    return None


def file_identity(path: Path, *, sample_rate: int, seconds: float) -> str:
    """Names one clip read from ``path`` for the embedding cache (SPEC 3.1): the path, its size
    and modification time (an edited file is a new clip), and the settings that shape the wave."""
    stat = path.stat()
    return f"{READER_VERSION}/{path}/size{stat.st_size}/mtime{stat.st_mtime_ns}/sr{sample_rate}/dur{seconds}"


def resample(wave: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Polyphase resampling of a mono float32 wave (identity when the rates match)."""
    if from_rate == to_rate:
        return wave
    common = math.gcd(from_rate, to_rate)
    return resample_poly(wave, to_rate // common, from_rate // common).astype(np.float32)


def read_audio(path: Path, *, sample_rate: int, seconds: float) -> np.ndarray:
    """One mono float32 wave of ``round(seconds * sample_rate)`` samples.

    Channels are averaged, the audio is resampled to ``sample_rate`` (polyphase filter), then cut
    or zero-padded at the end. Only the first ``seconds`` of a long file are decoded.
    """
    try:
        with soundfile.SoundFile(str(path)) as audio:
            native_rate = audio.samplerate
            wave = audio.read(frames=math.ceil(seconds * native_rate), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as err:
        raise ValueError(f"cannot decode the audio ({err}); the file is damaged, moved or replaced") from err
    mono = resample(wave.mean(axis=1), native_rate, sample_rate)  # (frames, channels) -> (frames,)
    length = int(round(seconds * sample_rate))
    mono = np.pad(mono[:length], (0, max(0, length - mono.size)))
    return mono.astype(np.float32)
