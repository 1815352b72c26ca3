"""Adapter aggregation modes: ``avg`` (weighted by examples), ``avg_unweighted``, ``none``, and
the Byzantine-robust ``median`` and ``trimmed_mean`` (coordinate-wise, Yin et al., "Byzantine-robust
distributed learning: towards optimal statistical rates", ICML 2018), which ignore example counts.

``kd`` starts from ``avg`` and then distils in the server step (``feda2v_flwr/server/distillation.py``),
because it needs the server generator's samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

AGGREGATION_MODES = ("avg", "avg_unweighted", "none", "median", "trimmed_mean")


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


def coordinate_median(states: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Coordinate-wise median (Yin et al., "Byzantine-robust distributed learning: towards optimal
    statistical rates", ICML 2018): each number is the median of the nodes' numbers."""
    if not states:
        raise ValueError("Nothing to aggregate")
    return {
        key: np.median(np.stack([s[key].astype(np.float64) for s in states]), axis=0).astype(first.dtype)
        for key, first in states[0].items()
    }


def trimmed_mean(states: Sequence[dict[str, np.ndarray]], trim_fraction: float) -> dict[str, np.ndarray]:
    """Coordinate-wise trimmed mean (Yin et al. 2018): per number, drop the ``floor(trim_fraction
    * n)`` largest and as many smallest of the n nodes' values and average the rest."""
    if not states:
        raise ValueError("Nothing to aggregate")
    n = len(states)
    cut = int(np.floor(trim_fraction * n))
    if n - 2 * cut < 1:
        raise ValueError(f"trim_fraction {trim_fraction} leaves no value of {n} nodes")
    result = {}
    for key, first in states[0].items():
        values = np.sort(np.stack([s[key].astype(np.float64) for s in states]), axis=0)  # (n, *shape)
        result[key] = values[cut : n - cut].mean(axis=0).astype(first.dtype)
    return result


def aggregate_adapters(
    mode: str,
    states: Sequence[dict[str, np.ndarray]],
    num_examples: Sequence[int],
    current: dict[str, np.ndarray],
    *,
    trim_fraction: float = 0.2,
) -> dict[str, np.ndarray]:
    """The new global adapters. ``none`` (standalone) keeps ``current``: clients keep their own."""
    if mode == "avg":
        return weighted_average(states, num_examples)
    if mode == "avg_unweighted":
        return weighted_average(states, [1.0] * len(states))
    if mode == "median":
        return coordinate_median(states)
    if mode == "trimmed_mean":
        return trimmed_mean(states, trim_fraction)
    if mode == "none":
        return {k: v.copy() for k, v in current.items()}
    raise ValueError(f"Unknown adapter_aggregation_mode '{mode}'. Allowed: {AGGREGATION_MODES}")
