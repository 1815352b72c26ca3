"""On-disk embedding cache: the encoder runs once per clip, ever.

Key = encoder id + a hash of every setting that changes the output (``encoder.cache_key()``) +
the clip's identity. The full token sequence is cached; CLS-only slicing happens after the
cache, so both modes share entries safely. An encoder whose inputs already are embeddings
(``precomputed``) says ``cacheable = False``: its clips are read from their own files every time
and nothing is written.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from feda2v_flwr.data.partition import Clip

log = logging.getLogger(__name__)


class AudioEncoder(Protocol):
    """What the cache needs of an encoder. An optional class attribute ``cacheable = False`` says
    its outputs must not be stored (they already are files the user owns)."""

    calls: int  # clips encoded so far

    @property
    def embed_dim(self) -> int: ...
    def cache_key(self) -> str: ...
    def encode(self, waves: list[np.ndarray]) -> np.ndarray: ...


class EmbeddingCache:
    def __init__(self, cache_dir: str | Path, encoder: AudioEncoder, batch_size: int = 16):
        self.encoder = encoder
        self.stores = bool(getattr(encoder, "cacheable", True))
        self.directory = Path(cache_dir) / "embeddings" / encoder.cache_key()
        if self.stores:
            self.directory.mkdir(parents=True, exist_ok=True)
        self.batch_size = batch_size
        self.failed: set[str] = set()  # identities of clips whose audio could not be decoded

    def _file(self, clip: Clip) -> Path:
        return self.directory / f"{hashlib.sha256(clip.identity.encode()).hexdigest()[:32]}.npy"

    def embed(self, clips: Sequence[Clip]) -> np.ndarray:
        """(N, T, D) embeddings of ``clips``, encoding only the ones not cached yet.

        A clip whose audio cannot be decoded (a damaged file whose header still reads) is left
        out with one warning naming it and recorded in ``failed``; the rows follow the order of
        the remaining clips. An encoder that is not ``cacheable`` reads every clip now instead."""
        if not self.stores:
            return self._embed_directly(clips)
        missing = [c for c in clips if not self._file(c).exists() and c.identity not in self.failed]
        if missing:
            log.info("Encoding %d of %d clips (the rest are cached in %s)", len(missing), len(clips), self.directory)
        progress, failed_before = EncodingProgress(len(missing)), len(self.failed)
        for start in range(0, len(missing), self.batch_size):
            batch, waves = [], []
            for clip in missing[start : start + self.batch_size]:
                try:
                    waves.append(clip.load())
                    batch.append(clip)
                except ValueError as err:
                    log.warning("Skipping %s: %s", clip.source or clip.identity, err)
                    self.failed.add(clip.identity)
            for clip, emb in zip(batch, self.encoder.encode(waves) if batch else [], strict=True):
                _atomic_save(self._file(clip), emb.astype(np.float32))
            progress.update(min(start + self.batch_size, len(missing)), failed=len(self.failed) - failed_before)
        kept = [c for c in clips if c.identity not in self.failed]
        if clips and not kept:
            raise ValueError(f"None of the {len(clips)} clips could be decoded; see the warnings above")
        return np.stack([np.load(self._file(c)) for c in kept]) if kept else np.zeros((0, 1, self.encoder.embed_dim))

    def _embed_directly(self, clips: Sequence[Clip]) -> np.ndarray:
        """(N, T, D) from an encoder that is not cached: every clip is loaded and encoded now. An
        array the encoder rejects is an error naming its file; an unreadable file is skipped."""
        rows = []
        for clip in clips:
            if clip.identity in self.failed:
                continue
            try:
                array = clip.load()
            except ValueError as err:
                log.warning("Skipping %s: %s", clip.source or clip.identity, err)
                self.failed.add(clip.identity)
                continue
            try:
                rows.append(self.encoder.encode([array])[0])
            except ValueError as err:
                raise ValueError(f"{clip.source or clip.identity}: {err}") from None
        if clips and not rows:
            raise ValueError(f"None of the {len(clips)} clips could be read; see the warnings above")
        return np.stack(rows) if rows else np.zeros((0, 1, self.encoder.embed_dim))


class EncodingProgress:
    """Log lines (readable in ``flwr log``, unlike a redrawn bar): every ``every`` seconds and
    at the end, clips done, total and rate."""

    def __init__(self, total: int, every: float = 10.0):
        self.total, self.every = total, every
        self.start = self.last = time.perf_counter()

    def update(self, done: int, failed: int = 0) -> None:
        """``done`` clips processed so far, ``failed`` of them unreadable."""
        now = time.perf_counter()
        if done < self.total and now - self.last < self.every:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        if done < self.total:
            log.info(
                "  encoded %d/%d clips (%.1f clips/s, about %.0f s left)",
                done,
                self.total,
                rate,
                (self.total - done) / rate,
            )
        else:
            skipped = f"; {failed} unreadable, skipped" if failed else ""
            log.info("Encoded %d clips in %.1f s (%.1f clips/s)%s", done - failed, now - self.start, rate, skipped)


def _atomic_save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)
