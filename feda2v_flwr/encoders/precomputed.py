"""The ``precomputed`` audio encoder: the clips already are embeddings, so it passes them through.

The ``precomputed`` dataset's clips load as float32 arrays (T, D) (``<root>/<class>/*.npy``,
from any encoder the user ran). This encoder checks each array's shape against the dataset's
(T, D), read from one file's header, and returns them stacked. Its outputs are not copied into
the embedding cache (``cacheable = False``): the cache reads the arrays from their files instead.
"""

from __future__ import annotations

import hashlib

import numpy as np

from feda2v_flwr.config.schema import DataSettings
from feda2v_flwr.data.datasets import index_dataset


def precomputed_shape(data: DataSettings) -> tuple[int, int]:
    """(T, D) of every array of the ``precomputed`` dataset, from one file's header (no array is loaded)."""
    shape = index_dataset(data).embedding_shape
    assert shape is not None, "only the 'precomputed' dataset has an embedding shape"
    return shape


class PrecomputedEncoder:
    encoder_id = "precomputed"
    cacheable = False  # the inputs already are embeddings: EmbeddingCache reads them, never copies them

    def __init__(self, shape: tuple[int, int]):
        self.shape = shape  # (T, D)
        self.calls = 0  # arrays passed through so far (read from their files each time)

    @property
    def embed_dim(self) -> int:
        return self.shape[1]

    def cache_key(self) -> str:
        """Names this encoder's output (nothing is stored under it: see ``cacheable``)."""
        digest = hashlib.sha256(repr(self.shape).encode()).hexdigest()[:12]
        return f"{self.encoder_id}-{digest}"

    def encode(self, waves: list[np.ndarray]) -> np.ndarray:
        """(B,) arrays (T, D) -> (B, T, D) float32, unchanged; a wrong shape is a ``ValueError``."""
        for array in waves:
            if array.shape != self.shape:
                raise ValueError(
                    f"this embedding has shape {array.shape}, but every clip of the 'precomputed' dataset must have "
                    f"the shape (T, D) = {self.shape} of the others"
                )
        self.calls += len(waves)
        return np.stack(waves).astype(np.float32, copy=False) if waves else np.zeros((0, *self.shape), np.float32)
