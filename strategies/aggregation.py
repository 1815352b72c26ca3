"""Adapter aggregation modes: ``avg`` (weighted by examples), ``avg_unweighted``, ``none``.

``kd`` starts from ``avg`` and then distils in the server step (``strategies/distillation.py``),
because it needs the server generator's samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

AGGREGATION_MODES = ("avg", "avg_unweighted", "none")


def weighted_average(states: Sequence[dict[str, np.ndarray]], weights: Sequence[float]) -> dict[str, np.ndarray]:
    """sum_i w_i * x_i / sum_i w_i per tensor, accumulated in float64 in the given order."""
    if not states:
        raise ValueError("Nothing to aggregate")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError("Aggregation weights must sum to a positive number")
    result = {}
    for key, first in states[0].items():
        acc = np.zeros(first.shape, dtype=np.float64)
        for state, weight in zip(states, weights, strict=True):
            acc += float(weight) * state[key].astype(np.float64)
        result[key] = (acc / total).astype(first.dtype)
    return result


def aggregate_adapters(
    mode: str,
    states: Sequence[dict[str, np.ndarray]],
    num_examples: Sequence[int],
    current: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """The new global adapters. ``none`` (standalone) keeps ``current``: clients keep their own."""
    if mode == "avg":
        return weighted_average(states, num_examples)
    if mode == "avg_unweighted":
        return weighted_average(states, [1.0] * len(states))
    if mode == "none":
        return {k: v.copy() for k, v in current.items()}
    raise ValueError(f"Unknown adapter_aggregation_mode '{mode}'. Allowed: {AGGREGATION_MODES}")
