"""Client-side training: adapters, evaluation metrics, per-class statistics."""

from feda2v_flwr.training.adapters import (
    build_model,
    evaluate_adapters,
    make_optimizers,
    predict,
    train_adapters,
)
from feda2v_flwr.training.statistics import ClassStats, class_statistics

__all__ = [
    "ClassStats",
    "build_model",
    "class_statistics",
    "evaluate_adapters",
    "make_optimizers",
    "predict",
    "train_adapters",
]
