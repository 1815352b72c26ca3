"""Draw and score pictures for labelled adapter outputs: a PNG grid per class + CLIP predictions.

Used by the nodes every ``images.every_rounds`` rounds and by the ``feda2v-images`` command. The
pipeline and the classifier load on the first drawing and stay until ``release()``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from feda2v_flwr.config.schema import ImageSettings
from feda2v_flwr.images.grid import save_grid
from feda2v_flwr.images.pipelines import ImageGenerator
from feda2v_flwr.images.scoring import ZeroShotClassifier

log = logging.getLogger(__name__)


def pick_per_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of the first ``per_class`` rows of every label, in label order (deterministic)."""
    labels = np.asarray(labels)
    picked = [np.flatnonzero(labels == label)[:per_class] for label in np.unique(labels)]
    return np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)


def encode_labels(values: np.ndarray) -> str:
    """Class indices as the comma-separated string a Flower metric can carry."""
    return ",".join(str(int(v)) for v in values)


def decode_labels(text: str) -> np.ndarray:
    return np.array([int(v) for v in text.split(",") if v], dtype=np.int64)


class ImageMaker:
    """Pictures from prompt embeddings (original scale) and their zero-shot predictions."""

    def __init__(self, profile: str, settings: ImageSettings, device: str):
        self.profile, self.settings, self.device = profile, settings, device
        self._generator: ImageGenerator | None = None
        self._classifier: ZeroShotClassifier | None = None

    def draw(
        self,
        embeddings: Mapping[str, np.ndarray],
        labels: np.ndarray,
        class_names: list[str],
        directory: Path,
    ) -> np.ndarray:
        """Draw one picture per row, save ``<directory>/<class>.png`` per class present, and
        return the predicted class index (into ``class_names``) of every picture."""
        if self._generator is None:
            self._generator = ImageGenerator(self.profile, self.settings, self.device)
        if self._classifier is None:
            s = self.settings
            self._classifier = ZeroShotClassifier(s.classifier_model, self.device, s.classifier_template)
        pictures = self._generator.generate(embeddings, seed=self.settings.seed)
        predictions = self._classifier.predict(pictures, class_names)
        for label in np.unique(labels):
            rows = np.flatnonzero(labels == label)
            hits = int((predictions[rows] == label).sum())
            name = class_names[label]
            save_grid(
                [pictures[i] for i in rows],
                directory / f"{name}.png",
                title=f"{name}: {hits}/{len(rows)} recognised by CLIP",
            )
        log.info("Saved %d pictures of %d classes in %s", len(pictures), len(np.unique(labels)), directory)
        return predictions

    def release(self) -> None:
        """Give the pipeline's and the classifier's memory back."""
        if self._generator is not None:
            self._generator.release()
        self._generator = self._classifier = None
