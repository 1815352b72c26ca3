"""Everything a node sends is checked before the server uses it: metric types and sizes, the
evaluation's values, and which Flower node may speak for which partition.

A reply that fails a check is dropped with the reason (logged and in ``metrics.jsonl``); nothing
a node sends may raise out of the strategy's hooks. The tensors themselves are checked by
``feda2v_flwr.payload.decode_update``.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from flwr.common import Code, EvaluateRes, FitRes, parameters_to_ndarrays
from flwr.server.client_proxy import ClientProxy

from feda2v_flwr.config.schema import ExperimentConfig
from feda2v_flwr.data.datasets import DatasetError
from feda2v_flwr.data.partition import class_sizes, partition_classes
from feda2v_flwr.encoders import statistics_shape
from feda2v_flwr.payload import UNKNOWN_CLASS_SIZE, ClientUpdate, ExpectedUpdate, PayloadError, decode_update

log = logging.getLogger(__name__)

MAX_METRICS = 256  # names per reply
MAX_NAME_LENGTH = 128
MAX_NUMBER = 1e15  # any numeric metric; specific ones are bounded tighter below
# The only metrics that may be strings, with their longest allowed length (characters).
FIT_STRINGS = {"manifest": 4_000_000, "classes": 65_536}
EVALUATE_STRINGS = {"image_labels": 1_000_000, "image_predictions": 1_000_000}


def checked_metrics(metrics: object, strings: dict[str, int]) -> dict[str, float | int | str]:
    """``metrics`` if every name is a short string and every value a finite number (or, for the
    names in ``strings``, a string no longer than allowed); else ``PayloadError``."""
    if not isinstance(metrics, Mapping):  # a dict, or Flower's ConfigRecord
        raise PayloadError(f"metrics are a {type(metrics).__name__}, not a mapping")
    if len(metrics) > MAX_METRICS:
        raise PayloadError(f"{len(metrics)} metrics (at most {MAX_METRICS})")
    for name, value in metrics.items():
        if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH:
            raise PayloadError(
                f"metric name {str(name)[:40]!r} is not a string of at most {MAX_NAME_LENGTH} characters"
            )
        if name in strings:
            if not isinstance(value, str) or len(value) > strings[name]:
                size = len(value) if isinstance(value, str | bytes) else type(value).__name__
                raise PayloadError(
                    f"metric {name}: expected a string of at most {strings[name]} characters, got {size}"
                )
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise PayloadError(f"metric {name}: a {type(value).__name__}, expected a number")
        elif not math.isfinite(value) or abs(value) > MAX_NUMBER:
            raise PayloadError(f"metric {name}: {value!r} is not a finite number within +-{MAX_NUMBER:g}")
    return dict(metrics)


def integer_metric(metrics: dict, name: str, low: int, high: int) -> int:
    """The metric ``name`` as an int in ``low..high`` (a whole float is accepted), else ``PayloadError``."""
    value = metrics.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value) or not low <= value <= high:
        raise PayloadError(f"{name} is {str(value)[:40]}, expected an integer in {low}..{high}")
    return int(value)


# Evaluation metrics with a known range, by name ending.
_RANGES = {"retrieval_top1": (0.0, 1.0), "cosine": (-1.0 - 1e-4, 1.0 + 1e-4), "mse": (0.0, MAX_NUMBER)}
_IMAGE_RATES = ("image_accuracy", "image_balanced_accuracy", "image_macro_f1")


def check_evaluation(metrics: dict, *, num_classes: int, max_examples: int) -> None:
    """The values of one node's (already type-checked) evaluation: example counts, rates in
    [0, 1], cosines in [-1, 1], MSE >= 0, picture labels that are class indices."""
    for split in ("val", "test"):
        integer_metric(metrics, f"{split}_examples", 0, max_examples)
    for name, value in metrics.items():
        for ending, (low, high) in _RANGES.items():
            if name.startswith(("val_", "test_")) and ending in name and not low <= value <= high:
                raise PayloadError(f"{name} is {value!r}, outside [{low:g}, {high:g}]")
    pictures = ("image_count", "image_labels", "image_predictions")
    if not any(name in metrics for name in pictures):
        return
    count = integer_metric(metrics, "image_count", 0, max_examples)
    for name in _IMAGE_RATES:
        if name in metrics and not 0.0 <= metrics[name] <= 1.0:
            raise PayloadError(f"{name} is {metrics[name]!r}, outside [0, 1]")
    for name in ("image_labels", "image_predictions"):
        if count and name not in metrics:
            raise PayloadError(f"image_count is {count} but {name} is missing")
        labels = class_indices(metrics.get(name, ""), num_classes, name)
        if len(labels) != count:
            raise PayloadError(f"{name} holds {len(labels)} labels for image_count {count}")


def class_indices(text: object, num_classes: int, name: str) -> np.ndarray:
    """Comma-separated class indices (``images.drawing.encode_labels``), each in 0..num_classes-1."""
    try:
        values = np.array([int(v) for v in str(text).split(",") if v], dtype=np.int64)
    except ValueError:
        raise PayloadError(f"{name} is not comma-separated class indices") from None
    if values.size and (values.min() < 0 or values.max() >= num_classes):
        raise PayloadError(f"{name} holds a class index outside 0..{num_classes - 1}")
    return values


@dataclass
class PartitionOwners:
    """Which Flower node speaks for which partition (partition ids are self-reported metrics).

    A partition is bound to the first node that claims it alone. While that node is connected,
    another node's claim is refused; once it is gone (a restarted SuperNode comes back under a
    new node id) a single new claimant takes over, logged. Several nodes claiming one unbound
    partition in the same round are all refused, whatever order their replies arrived in, and a
    node bound to one partition cannot speak for another.
    """

    owners: dict[int, str] = field(default_factory=dict)

    def admit(self, claims: list[tuple[str, int]], connected: set[str] | None) -> tuple[dict[int, str], list[str]]:
        """One round's claims (node id, partition id) -> (reason per refused claim index, notes
        on partitions that changed node). ``connected``: the node ids connected this round (None:
        unknown; bound nodes are then taken to be connected)."""
        refused: dict[int, str] = {}
        notes: list[str] = []
        by_partition: dict[int, list[int]] = defaultdict(list)
        for index, (_, partition) in enumerate(claims):
            by_partition[partition].append(index)
        for partition, indices in by_partition.items():
            owner = self.owners.get(partition)
            if owner is not None and connected is not None and owner not in connected:
                owner = None  # its node is gone: the partition is free again
            eligible = [i for i in indices if owner is None or claims[i][0] == owner]
            for index in indices:
                node = claims[index][0]
                elsewhere = [p for p, n in self.owners.items() if n == node and p != partition]
                if elsewhere:
                    refused[index] = f"node {node} speaks for partition {elsewhere[0]}, not {partition}"
                elif index not in eligible:
                    refused[index] = f"partition {partition} belongs to node {owner}, which is still connected"
                elif len(eligible) > 1:
                    who = sorted({claims[i][0] for i in eligible})
                    who_text = f"nodes {', '.join(who)}" if len(who) > 1 else f"node {who[0]}"
                    refused[index] = (
                        f"{len(eligible)} replies from {who_text} claim partition {partition}: none is used"
                    )
            admitted = [claims[i][0] for i in indices if i not in refused]
            if admitted and self.owners.get(partition) != admitted[0]:
                if partition in self.owners:
                    notes.append(f"partition {partition}: node {admitted[0]} takes over from {self.owners[partition]}")
                self.owners[partition] = admitted[0]
        return refused, notes


class ReplyChecker:
    """The strategy's gate: decodes and checks one round's fit replies and evaluations, binds
    partitions to nodes, and says why each refused one was dropped."""

    def __init__(
        self,
        config: ExperimentConfig,
        classes: list[str],
        adapter_shapes: dict[str, tuple[int, ...]],
        slot_shapes: dict[str, tuple[int, ...]],
    ):
        self.config, self.classes = config, classes
        try:  # under "local" each machine holds its own share: the server's folder says nothing of theirs
            sizes: dict[str, int] | None = class_sizes(config) if config.data.partitioning != "local" else None
        except DatasetError:  # no copy of the data on this server: counts are bounded generically
            sizes = None
        self.expected = ExpectedUpdate(
            adapter_shapes=adapter_shapes,
            slot_shapes=slot_shapes,
            statistics_shape=statistics_shape(config),
            classes=classes,
            max_abs_value=config.federation.max_abs_value,
            class_sizes=sizes,
            transfer_dtype=config.feda2v.transfer_dtype,
            components=config.feda2v.statistics_components,
            samples=config.feda2v.synthetic_samples_per_class if config.feda2v.synthetic_source == "clients" else 0,
        )
        self.max_examples = sum(sizes.values()) if sizes is not None else UNKNOWN_CLASS_SIZE
        self.owners = PartitionOwners()
        self.connected: set[str] | None = None  # node ids connected when the round was configured
        self._owned: dict[int, set[str]] = {}

    def fit_updates(self, results: list[tuple[ClientProxy, FitRes]]) -> tuple[list[ClientUpdate], list[dict]]:
        """The replies that pass every check and whose node may speak for their partition, and a
        record (node, partition, reason) for each one dropped. Nothing a node sends raises here."""
        kept: list[tuple[str, ClientUpdate]] = []
        dropped = []
        for proxy, res in results:
            try:
                kept.append((str(proxy.cid), self._update(res)))
            except Exception as err:  # noqa: BLE001 (a check missed it: still the node's fault, not the run's)
                dropped.append(_dropped(proxy.cid, res, _reason(err)))
        refused, notes = self.owners.admit([(node, u.partition_id) for node, u in kept], self.connected)
        for note in notes:
            log.info(note)
        for index, reason in sorted(refused.items()):
            node, update = kept[index]
            dropped.append(_dropped(node, update.partition_id, reason))
        accepted = [u for i, (_, u) in enumerate(kept) if i not in refused]
        for index, (node, update) in enumerate(kept):
            if index not in refused and update.adapter_problem:
                reason = f"adapters dropped, class statistics kept: {update.adapter_problem}"
                dropped.append({**_dropped(node, update.partition_id, reason), "part": "adapters"})
        return accepted, _in_partition_order(dropped)

    def evaluations(self, results: list[tuple[ClientProxy, EvaluateRes]]) -> tuple[list[dict], list[dict]]:
        """The metrics of the evaluations that pass every check, from nodes that may speak for
        their partition, and a record for each one dropped."""
        kept: list[tuple[str, int, dict]] = []
        dropped = []
        for proxy, res in results:
            try:
                metrics = checked_metrics(res.metrics, EVALUATE_STRINGS)
                check_evaluation(metrics, num_classes=len(self.classes), max_examples=self.max_examples)
                kept.append((str(proxy.cid), self._partition(metrics), metrics))
            except Exception as err:  # noqa: BLE001
                dropped.append(_dropped(proxy.cid, res, _reason(err)))
        refused, notes = self.owners.admit([(node, pid) for node, pid, _ in kept], self.connected)
        for note in notes:
            log.info(note)
        for index, reason in sorted(refused.items()):
            dropped.append(_dropped(kept[index][0], kept[index][1], reason))
        accepted = sorted(((pid, m) for i, (_, pid, m) in enumerate(kept) if i not in refused), key=lambda pm: pm[0])
        return [m for _, m in accepted], _in_partition_order(dropped)  # sums independent of arrival order

    def _update(self, res: FitRes) -> ClientUpdate:
        if res.status.code != Code.OK:
            raise PayloadError(f"status {res.status.code.name}: {str(res.status.message)[:200]}")
        metrics = checked_metrics(res.metrics, FIT_STRINGS)
        pid = self._partition(metrics)
        if "manifest" not in metrics:
            raise PayloadError("no manifest")
        arrays = parameters_to_ndarrays(res.parameters)
        adapters, stats, adapter_problem = decode_update(arrays, metrics.pop("manifest"), self.expected)
        counted = sum(s.count for s in stats.values())
        if isinstance(res.num_examples, bool) or not isinstance(res.num_examples, int) or res.num_examples != counted:
            raise PayloadError(f"num_examples is {str(res.num_examples)[:40]}; its class statistics count {counted}")
        if counted < 1:
            raise PayloadError("no class statistics")
        foreign = sorted(set(stats) - self._owned_classes(pid))
        if foreign:
            raise PayloadError(f"statistics for classes {foreign} that partition {pid} does not hold")
        return ClientUpdate(pid, res.num_examples, adapters, stats, metrics, adapter_problem)

    def _partition(self, metrics: dict) -> int:
        return integer_metric(metrics, "partition_id", 0, self.config.federation.num_clients - 1)

    def _owned_classes(self, partition_id: int) -> set[str]:
        """The classes a partition may report: its by-class share (computed from the config and
        the dataset index, once); any federation class under clip-level partitionings, whose
        assignment only the nodes compute."""
        if self.config.data.partitioning != "by_class":
            return set(self.classes)
        if partition_id not in self._owned:
            try:
                num_clients = self.config.federation.num_clients
                self._owned[partition_id] = set(partition_classes(self.config, partition_id, num_clients))
            except DatasetError:  # no copy of the data on this server: the nodes' claims stand
                self._owned[partition_id] = set(self.classes)
        return self._owned[partition_id]


def _in_partition_order(dropped: list[dict]) -> list[dict]:
    """Drop records ordered by the partition they claimed (then reason), not by arrival."""
    return sorted(dropped, key=lambda d: (d["partition_id"], d["reason"]))


def _reason(err: Exception) -> str:
    return str(err) if isinstance(err, PayloadError) else f"unreadable reply ({type(err).__name__}: {str(err)[:300]})"


def _dropped(node: object, res_or_partition: FitRes | EvaluateRes | int, reason: str) -> dict:
    """Log a dropped reply; its record for metrics.jsonl."""
    if isinstance(res_or_partition, int):
        partition = str(res_or_partition)
    else:
        metrics = res_or_partition.metrics
        partition = str(metrics.get("partition_id", "?"))[:20] if isinstance(metrics, Mapping) else "?"
    log.warning("Dropped the reply of node %s (partition %s): %s", node, partition, reason)
    return {"node": str(node), "partition_id": partition, "reason": reason[:500]}
