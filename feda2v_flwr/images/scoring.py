"""Scoring pictures: CLIP zero-shot classification among the federation's class names."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from sklearn.metrics import accuracy_score, f1_score, recall_score

from feda2v_flwr.encoders.pretrained import load_pretrained


def _features(output: Any) -> torch.Tensor:
    """CLIP's projected features: a tensor in transformers 4, ``pooler_output`` of an output in 5."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ZeroShotClassifier:
    """Each picture gets the class whose prompt (``template`` with the class name, ``_`` read as a
    space) has the highest CLIP cosine similarity with it."""

    def __init__(self, model: str, device: str, template: str, *, batch_size: int = 32) -> None:
        from transformers import CLIPModel, CLIPProcessor

        assert batch_size >= 1
        self.device = device
        self.template = template
        self.batch_size = batch_size
        self.model = load_pretrained("CLIP model", model, CLIPModel.from_pretrained).to(device).eval()
        self.processor = load_pretrained("CLIP processor", model, CLIPProcessor.from_pretrained)

    @torch.no_grad()
    def _text_features(self, class_names: Sequence[str]) -> torch.Tensor:
        prompts = [self.template.format(label=name.replace("_", " ")) for name in class_names]
        tokens = self.processor.tokenizer(prompts, padding=True, truncation=True, return_tensors="pt").to(self.device)
        features = _features(self.model.get_text_features(**tokens))  # (C, projection_dim)
        return torch.nn.functional.normalize(features.float(), dim=-1)

    @torch.no_grad()
    def predict(self, images: list[Image.Image], class_names: list[str]) -> np.ndarray:
        """(len(images),) int64 indices into ``class_names``."""
        if not class_names:
            raise ValueError("Zero-shot classification needs at least one class name")
        if not images:
            return np.zeros(0, dtype=np.int64)
        text = self._text_features(class_names)
        predictions = []
        for start in range(0, len(images), self.batch_size):
            batch = [image.convert("RGB") for image in images[start : start + self.batch_size]]
            pixels = self.processor.image_processor(images=batch, return_tensors="pt")["pixel_values"]
            features = _features(self.model.get_image_features(pixel_values=pixels.to(self.device)))  # (B, proj)
            similarity = torch.nn.functional.normalize(features.float(), dim=-1) @ text.T  # (B, C)
            predictions.append(similarity.argmax(dim=-1).cpu())
        return torch.cat(predictions).numpy().astype(np.int64)


def image_metrics(labels: Sequence[int], predictions: Sequence[int], num_classes: int) -> dict[str, float]:
    """Accuracy, balanced accuracy and macro F1 of zero-shot predictions.

    Balanced accuracy and macro F1 average over the classes present in ``labels``: a class a node
    drew no pictures of has no recall, and its F1 would only be a zero from ``zero_division``.
    Predictions of such a class still count as errors for the true class.
    """
    labels, predictions = np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)
    if labels.size == 0:
        raise ValueError("image_metrics needs at least one labelled picture")
    if labels.shape != predictions.shape or labels.ndim != 1:
        raise ValueError(f"labels {labels.shape} and predictions {predictions.shape} must be equal-length 1-d")
    both = np.concatenate([labels, predictions])
    if both.min() < 0 or both.max() >= num_classes:
        raise ValueError(f"Class indices must lie in [0, {num_classes}); got {both.min()}..{both.max()}")
    present = np.unique(labels)
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "balanced_accuracy": float(recall_score(labels, predictions, labels=present, average="macro", zero_division=0)),
        "macro_f1": float(f1_score(labels, predictions, labels=present, average="macro", zero_division=0)),
    }
