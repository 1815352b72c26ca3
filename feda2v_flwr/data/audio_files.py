"""Reading clip files: audio (probe without decoding, then mono, resampled, fixed-length waves)
and the ``precomputed`` dataset's embedding arrays (``.npy``, header first, then the array)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import soundfile
from scipy.signal import resample_poly

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")  # what libsndfile (>= 1.1, in soundfile's wheels) reads
# Shorter files are skipped as broken (a truncated WAV of 8 samples would be 5 s of zero padding).
MIN_CLIP_SECONDS = 0.05
EMBEDDING_EXTENSION = ".npy"
# Part of every file clip's identity: bump it when reading changes what a clip's wave is,
# so cached embeddings of the old waves are not reused.
READER_VERSION = "audio-reader-v1"
EMBEDDING_READER_VERSION = "embedding-reader-v1"


def audio_problem(path: Path) -> tuple[str | None, float]:
    """(why ``path`` cannot be read as audio or ``None`` when it can, its duration in seconds).

    Reads the header only (cheap), so a partition can leave unreadable files out before any
    clip is decoded.
    """
    if not path.is_file():
        return "the file does not exist", 0.0
    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError, OSError) as err:
        return f"not a readable audio file ({err})", 0.0
    if info.frames <= 0 or info.samplerate <= 0:
        return "the file holds no audio frames", 0.0
    seconds = info.frames / info.samplerate
    if seconds < MIN_CLIP_SECONDS:
        return f"{info.frames} samples ({seconds * 1000:.1f} ms), shorter than {MIN_CLIP_SECONDS} s", seconds
    return None, seconds


def embedding_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of the ``.npy`` array in ``path``, from its header only (memory-mapped, no
    data read). Raises ``ValueError`` saying why when the file is not a readable numeric array."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"not a readable .npy array ({err})") from None
    shape, dtype = array.shape, array.dtype
    del array  # closes the memory map
    return shape, dtype


def read_embedding(path: Path) -> np.ndarray:
    """The float32 array (T, D) saved in ``path``; ``ValueError`` when it cannot be read as one."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"cannot read the .npy array ({err}); the file is damaged, moved or replaced") from None
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"holds a {array.dtype} array of shape {array.shape}, not a float array (T, D)")
    return array.astype(np.float32, copy=False)


def embedding_identity(path: Path) -> str:
    """Names one precomputed clip: the path, its size and modification time."""
    stat = path.stat()
    return f"{EMBEDDING_READER_VERSION}/{path}/size{stat.st_size}/mtime{stat.st_mtime_ns}"


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
