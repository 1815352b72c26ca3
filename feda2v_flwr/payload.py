"""Named tensors <-> Flower ndarrays + a JSON manifest, and validation of client replies."""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from feda2v_flwr.training.statistics import ClassStats

ADAPTER_PREFIX = "adapter/"
STATS_PREFIX = "stats/"


class PayloadError(ValueError):
    """A reply that must not be aggregated; the message is the logged reason."""


def module_to_ndarrays(module: nn.Module) -> list[np.ndarray]:
    return [t.detach().cpu().numpy().copy() for t in module.state_dict().values()]


def ndarrays_to_module(module: nn.Module, arrays: list[np.ndarray]) -> None:
    keys = list(module.state_dict())
    if len(keys) != len(arrays):
        raise PayloadError(f"Expected {len(keys)} adapter tensors, got {len(arrays)}")
    module.load_state_dict(OrderedDict((k, torch.from_numpy(np.asarray(a))) for k, a in zip(keys, arrays, strict=True)))


TRANSFER_DTYPES = (np.float32, np.float16)


def for_transfer(arrays: list[np.ndarray], dtype: str) -> list[np.ndarray]:
    """``arrays`` in the configured transfer precision (``feda2v.transfer_dtype``)."""
    return [np.ascontiguousarray(a, dtype=dtype) for a in arrays]


def encode_update(
    adapter_state: dict[str, np.ndarray], stats: dict[str, ClassStats], dtype: str = "float32"
) -> tuple[list[np.ndarray], str]:
    """Flatten adapters and per-class statistics into ndarrays plus a manifest (JSON). Tensors
    travel as ``dtype``; clip counts always as float32 (float16 is exact only up to 2048)."""
    named: list[tuple[str, np.ndarray]] = [(ADAPTER_PREFIX + k, v) for k, v in adapter_state.items()]
    for name, s in sorted(stats.items()):
        base = f"{STATS_PREFIX}{name}/"
        named.append((base + "count", np.array([s.count], dtype=np.float32)))
        named += [(f"{base}slot_mean/{slot}", m) for slot, m in sorted(s.slot_means.items())]
        named += [(base + "audio_mean", s.audio_mean), (base + "audio_std", s.audio_std)]
        if s.val_audio_mean is not None:
            named += [
                (base + "val_count", np.array([s.val_count], dtype=np.float32)),
                (base + "val_audio_mean", s.val_audio_mean),
            ]
    arrays = [np.ascontiguousarray(a, dtype=np.float32 if _is_count(n) else dtype) for n, a in named]
    manifest = [
        {"name": n, "shape": list(a.shape), "dtype": str(a.dtype)} for (n, _), a in zip(named, arrays, strict=True)
    ]
    return arrays, json.dumps(manifest)


def _is_count(name: str) -> bool:
    return name.endswith(("/count", "/val_count"))


@dataclass
class ClientUpdate:
    partition_id: int
    num_examples: int
    adapter_state: dict[str, np.ndarray]
    stats: dict[str, ClassStats]
    metrics: dict


def decode_update(
    arrays: list[np.ndarray],
    manifest_json: str,
    *,
    adapter_shapes: dict[str, tuple[int, ...]],
    known_classes: list[str],
    slot_shapes: dict[str, tuple[int, ...]],
) -> tuple[dict[str, np.ndarray], dict[str, ClassStats]]:
    """Inverse of ``encode_update``; raises ``PayloadError`` on anything suspicious."""
    try:
        manifest = json.loads(manifest_json)
    except (TypeError, json.JSONDecodeError) as err:
        raise PayloadError(f"unreadable manifest: {err}") from None
    if len(manifest) != len(arrays):
        raise PayloadError(f"manifest lists {len(manifest)} tensors but {len(arrays)} arrived")
    named = {}
    for entry, array in zip(manifest, arrays, strict=True):
        if tuple(array.shape) != tuple(entry["shape"]):
            raise PayloadError(f"{entry['name']}: shape {array.shape} != manifest {entry['shape']}")
        if array.dtype not in TRANSFER_DTYPES or str(array.dtype) != entry.get("dtype"):
            raise PayloadError(f"{entry['name']}: dtype {array.dtype}, expected float32 or float16 as in the manifest")
        if not np.isfinite(array).all():
            raise PayloadError(f"{entry['name']}: contains NaN or Inf (float16 overflows beyond +-65504)")
        named[entry["name"]] = array.astype(np.float32, copy=False)  # aggregation runs in float32

    adapters = {k[len(ADAPTER_PREFIX) :]: v for k, v in named.items() if k.startswith(ADAPTER_PREFIX)}
    if set(adapters) != set(adapter_shapes):
        missing, extra = set(adapter_shapes) - set(adapters), set(adapters) - set(adapter_shapes)
        raise PayloadError(f"adapter tensors differ: missing {sorted(missing)[:3]}, unexpected {sorted(extra)[:3]}")
    for key, shape in adapter_shapes.items():
        if adapters[key].shape != shape:
            raise PayloadError(f"adapter {key}: shape {adapters[key].shape} != {shape}")
    return adapters, _decode_stats(named, known_classes, slot_shapes)


def _decode_stats(named: dict[str, np.ndarray], known: list[str], slot_shapes: dict) -> dict[str, ClassStats]:
    classes = sorted({k.split("/")[1] for k in named if k.startswith(STATS_PREFIX)})
    stats = {}
    for name in classes:
        if name not in known:
            raise PayloadError(f"statistics for unknown class '{name}'")
        base = f"{STATS_PREFIX}{name}/"
        try:
            slot_means = {slot: named[f"{base}slot_mean/{slot}"] for slot in slot_shapes}
            mean, std = named[base + "audio_mean"], named[base + "audio_std"]
            count = int(named[base + "count"][0])
        except KeyError as err:
            raise PayloadError(f"class '{name}': missing statistic {err}") from None
        for slot, shape in slot_shapes.items():
            if slot_means[slot].shape != shape:
                raise PayloadError(f"class '{name}': slot mean {slot} shape {slot_means[slot].shape} != {shape}")
        if mean.shape != std.shape or mean.ndim != 2 or count < 1 or (std < 0).any():
            raise PayloadError(f"class '{name}': inconsistent audio statistics")
        val_mean = named.get(base + "val_audio_mean")
        val_count = int(named[base + "val_count"][0]) if val_mean is not None else 0
        stats[name] = ClassStats(count, slot_means, mean, std, val_count, val_mean)
    return stats
