"""Named tensors <-> Flower ndarrays + a JSON manifest, and validation of client replies."""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from feda2v_flwr.training.statistics import ClassStats, Mixture

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


def largest_transferable(max_abs_value: float, dtype: str) -> float:
    """The bound on values the federation sends: ``federation.max_abs_value``, and no more than
    float16 holds when it travels in float16 (a larger global value would reach the nodes as inf)."""
    return min(max_abs_value, float(np.finfo(np.float16).max)) if dtype == "float16" else max_abs_value


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
        if s.samples is not None:
            named.append((base + "samples", s.samples))
        if s.mixture is not None:
            m = s.mixture
            named += [(base + "mixture_weights", m.weights), (base + "mixture_means", m.means)]
            named += [(base + "mixture_stds", m.stds)]
    arrays = [np.ascontiguousarray(a, dtype=np.float32 if _is_count(n) else dtype) for n, a in named]
    manifest = [
        {"name": n, "shape": list(a.shape), "dtype": str(a.dtype)} for (n, _), a in zip(named, arrays, strict=True)
    ]
    return arrays, json.dumps(manifest)


def _is_count(name: str) -> bool:
    return name.endswith(("/count", "/val_count"))


@dataclass
class ClientUpdate:
    """One node's accepted reply. ``adapter_state`` is None when only its adapters failed the
    value checks (``adapter_problem`` says why): its class statistics still serve the server step."""

    partition_id: int
    num_examples: int
    adapter_state: dict[str, np.ndarray] | None
    stats: dict[str, ClassStats]
    metrics: dict
    adapter_problem: str | None = None


# Clips of one class a node can hold when the server cannot count them (no copy of the data):
# more than any audio dataset has (VGGSound: about 200 000 clips in all).
UNKNOWN_CLASS_SIZE = 10_000_000


@dataclass(frozen=True)
class ExpectedUpdate:
    """What every reply of this federation must hold, and the bounds on its values.

    ``statistics_shape``: (L, D) of every audio mean / std. ``class_sizes``: the most clips a
    node can hold of each class (its count in the dataset; None: unknown, ``UNKNOWN_CLASS_SIZE``).
    ``max_abs_value``: the largest magnitude any tensor value may have (counts aside).
    ``components``: K of ``feda2v.statistics_components`` (K > 1: every class has its mixture).
    ``samples``: N of a node's generator samples per class (``synthetic_source: clients``; a class
    whose generator cannot make them has none), 0 when none may be sent.
    """

    adapter_shapes: dict[str, tuple[int, ...]]
    slot_shapes: dict[str, tuple[int, ...]]
    statistics_shape: tuple[int, int]
    classes: list[str]
    max_abs_value: float
    class_sizes: dict[str, int] | None = None
    transfer_dtype: str = "float32"  # of every tensor but the counts (always float32)
    components: int = 1
    samples: int = 0

    def class_size(self, name: str) -> int:
        return self.class_sizes[name] if self.class_sizes is not None else UNKNOWN_CLASS_SIZE


def decode_update(
    arrays: list[np.ndarray], manifest_json: object, expected: ExpectedUpdate
) -> tuple[dict[str, np.ndarray] | None, dict[str, ClassStats], str | None]:
    """Inverse of ``encode_update``, checking every manifest field, tensor, shape and value
    against ``expected``: (adapters, class statistics, adapter problem). Raises ``PayloadError``
    naming the first problem, except when the only problems are values of adapter tensors
    (non-finite or beyond the bound): then the adapters are None and the problem is returned."""
    manifest = _manifest(manifest_json, len(arrays))
    named = {}
    adapter_problem = None
    for (name, shape, dtype), array in zip(manifest, arrays, strict=True):
        if not isinstance(array, np.ndarray):
            raise PayloadError(f"{name}: a {type(array).__name__}, not an array")
        if tuple(array.shape) != shape:
            raise PayloadError(f"{name}: shape {array.shape} != manifest {list(shape)}")
        wanted = "float32" if _is_count(name) else expected.transfer_dtype
        if str(array.dtype) != wanted or dtype != wanted:
            raise PayloadError(f"{name}: dtype {array.dtype} (manifest: {str(dtype)[:20]}), expected {wanted}")
        problem = _value_problem(name, array, expected.max_abs_value)
        if problem and name.startswith(ADAPTER_PREFIX):
            adapter_problem = adapter_problem or problem
        elif problem:
            raise PayloadError(problem)
        named[name] = array.astype(np.float32, copy=False)  # aggregation runs in float32

    adapters = {k[len(ADAPTER_PREFIX) :]: v for k, v in named.items() if k.startswith(ADAPTER_PREFIX)}
    if set(adapters) != set(expected.adapter_shapes):
        missing, extra = set(expected.adapter_shapes) - set(adapters), set(adapters) - set(expected.adapter_shapes)
        raise PayloadError(f"adapter tensors differ: missing {sorted(missing)[:3]}, unexpected {sorted(extra)[:3]}")
    for key, shape in expected.adapter_shapes.items():
        if adapters[key].shape != shape:
            raise PayloadError(f"adapter {key}: shape {adapters[key].shape} != {shape}")
    stats = _decode_stats(named, expected)
    return (None if adapter_problem else adapters), stats, adapter_problem


def _value_problem(name: str, array: np.ndarray, max_abs_value: float) -> str | None:
    if not np.isfinite(array).all():
        return f"{name}: contains NaN or Inf (float16 overflows beyond +-65504)"
    if not _is_count(name) and array.size and float(np.abs(array).max()) > max_abs_value:
        return f"{name}: values up to {np.abs(array).max():.3g}, beyond federation.max_abs_value {max_abs_value:g}"
    return None


MAX_MANIFEST_ENTRIES = 100_000


def _manifest(manifest_json: object, arrivals: int) -> list[tuple[str, tuple[int, ...], str]]:
    """The manifest as (name, shape, dtype) triples, every field checked."""
    if not isinstance(manifest_json, str):
        raise PayloadError(f"the manifest is a {type(manifest_json).__name__}, not a JSON string")
    try:
        manifest = json.loads(manifest_json)
    except (ValueError, RecursionError) as err:
        raise PayloadError(f"unreadable manifest: {str(err)[:200]}") from None
    if not isinstance(manifest, list) or len(manifest) > MAX_MANIFEST_ENTRIES:
        raise PayloadError(f"the manifest is not a list of at most {MAX_MANIFEST_ENTRIES} entries")
    if len(manifest) != arrivals:
        raise PayloadError(f"manifest lists {len(manifest)} tensors but {arrivals} arrived")
    entries = []
    for position, entry in enumerate(manifest):
        if not isinstance(entry, dict) or set(entry) != {"name", "shape", "dtype"}:
            raise PayloadError(f"manifest entry {position} is not an object with exactly name, shape and dtype")
        name, shape, dtype = entry["name"], entry["shape"], entry["dtype"]
        if not isinstance(name, str) or not name.startswith((ADAPTER_PREFIX, STATS_PREFIX)) or len(name) > 1024:
            raise PayloadError(f"manifest entry {position}: name {str(name)[:60]!r} is not adapter/... or stats/...")
        if not isinstance(shape, list) or len(shape) > 8 or not all(_whole(d) and d >= 0 for d in shape):
            raise PayloadError(f"{name}: manifest shape {str(shape)[:60]} is not a list of sizes")
        if not isinstance(dtype, str):
            raise PayloadError(f"{name}: manifest dtype {str(dtype)[:40]!r} is not a string")
        entries.append((name, tuple(shape), dtype))
    if len({name for name, _, _ in entries}) != len(entries):
        raise PayloadError("the manifest names a tensor twice")
    return entries


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _decode_stats(named: dict[str, np.ndarray], expected: ExpectedUpdate) -> dict[str, ClassStats]:
    fields = {f"slot_mean/{slot}": shape for slot, shape in expected.slot_shapes.items()}
    fields.update(count=(1,), audio_mean=expected.statistics_shape, audio_std=expected.statistics_shape)
    if expected.components > 1:
        k = expected.components
        fields.update(mixture_weights=(k,), mixture_means=(k, *expected.statistics_shape))
        fields.update(mixture_stds=(k, *expected.statistics_shape))
    optional = {"val_count": (1,), "val_audio_mean": expected.statistics_shape}
    if expected.samples:
        optional["samples"] = (expected.samples, *expected.statistics_shape)
    by_class: dict[str, dict[str, np.ndarray]] = {}
    for key, array in named.items():
        if not key.startswith(STATS_PREFIX):
            continue
        name = next((c for c in expected.classes if key.startswith(f"{STATS_PREFIX}{c}/")), None)
        if name is None:
            raise PayloadError(f"statistics for unknown class '{key[len(STATS_PREFIX) :].split('/')[0]}'")
        by_class.setdefault(name, {})[key[len(STATS_PREFIX) + len(name) + 1 :]] = array
    stats = {}
    for name, values in sorted(by_class.items()):
        missing = sorted(set(fields) - set(values))
        unexpected = sorted(set(values) - set(fields) - set(optional))
        if missing or unexpected:
            raise PayloadError(f"class '{name}': missing statistics {missing}, unexpected {unexpected}")
        if len({"val_count", "val_audio_mean"} & set(values)) == 1:
            raise PayloadError(f"class '{name}': val_count and val_audio_mean come together")
        for field_name, shape in {**fields, **optional}.items():
            if field_name in values and values[field_name].shape != shape:
                raise PayloadError(f"class '{name}': {field_name} shape {values[field_name].shape} != {shape}")
        if (values["audio_std"] < 0).any() or ("mixture_stds" in values and (values["mixture_stds"] < 0).any()):
            raise PayloadError(f"class '{name}': a negative audio std")
        mixture = _mixture(values, name)
        size = expected.class_size(name)
        count = _clip_count(values["count"], name, "count", size)
        val_count = _clip_count(values["val_count"], name, "val_count", size) if "val_count" in values else 0
        slot_means = {slot: values[f"slot_mean/{slot}"] for slot in expected.slot_shapes}
        stats[name] = ClassStats(
            count,
            slot_means,
            values["audio_mean"],
            values["audio_std"],
            val_count,
            values.get("val_audio_mean"),
            mixture=mixture,
            samples=values.get("samples"),
        )
    return stats


def _mixture(values: dict[str, np.ndarray], name: str) -> Mixture | None:
    if "mixture_weights" not in values:
        return None
    weights = values["mixture_weights"]
    if (weights < 0).any() or abs(float(weights.sum()) - 1.0) > 1e-2:  # float16 transfer rounds them
        raise PayloadError(f"class '{name}': mixture weights {weights.tolist()[:4]} are not >= 0 with sum 1")
    return Mixture(weights / weights.sum(), values["mixture_means"], values["mixture_stds"])


def _clip_count(array: np.ndarray, name: str, field_name: str, most: int) -> int:
    value = float(array[0])
    if value != int(value) or not 1 <= value <= most:
        raise PayloadError(f"class '{name}': {field_name} {value:g} is not a whole number in 1..{most}")
    return int(value)
