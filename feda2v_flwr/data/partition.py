"""Which classes and clips a node holds: non-IID (disjoint classes) partitions and splits."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from feda2v_flwr.config.schema import ExperimentConfig
from feda2v_flwr.data.procedural import GENERATOR_VERSION, SOUND_CLASSES, synthesize

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Clip:
    """One labelled clip. ``identity`` names it uniquely (cache key); ``load`` gives the wave."""

    class_name: str
    identity: str
    load: Callable[[], np.ndarray] = field(compare=False, repr=False)


@dataclass
class PartitionData:
    partition_id: int
    classes: list[str]
    federation_classes: list[str]
    splits: dict[str, list[Clip]]

    def count(self, split: str) -> int:
        return len(self.splits[split])


def federation_classes(config: ExperimentConfig) -> list[str]:
    classes = config.data.classes or list(SOUND_CLASSES)
    unknown = [c for c in classes if c not in SOUND_CLASSES]
    if unknown:
        raise ValueError(
            f"data.classes lists {unknown}, which the '{config.data.dataset}' dataset does not have. "
            f"Available: {list(SOUND_CLASSES)}"
        )
    return list(classes)


def partition_classes(config: ExperimentConfig, partition_id: int, num_partitions: int) -> list[str]:
    """Disjoint class sets: class k goes to partition k mod N, unless the node selects its own."""
    all_classes = federation_classes(config)
    selected = config.node(partition_id).selected_classes
    if selected is not None:
        missing = [c for c in selected if c not in all_classes]
        if missing:
            raise ValueError(
                f"Node {partition_id}: selected_classes {missing} are not in the federation's classes {all_classes}"
            )
        return list(selected)
    if num_partitions > len(all_classes):
        raise ValueError(
            f"Partitioning by class needs at least one class per node: {num_partitions} nodes "
            f"but only {len(all_classes)} classes. Use fewer nodes or more classes."
        )
    return all_classes[partition_id::num_partitions]


def split_indices(class_name: str, config: ExperimentConfig) -> dict[str, list[int]]:
    """Deterministic train/val/test indices of one class's clips."""
    n = config.data.clips_per_class
    rng = np.random.default_rng(config.data.split_seed + zlib.crc32(class_name.encode()))
    order = rng.permutation(n).tolist()
    n_train = max(1, round(config.data.train_ratio * n))
    n_val = round(config.data.val_ratio * n)
    return {
        "train": order[:n_train],
        "val": order[n_train : n_train + n_val],
        "test": order[n_train + n_val :],
    }


def procedural_clip(class_name: str, index: int, config: ExperimentConfig) -> Clip:
    data = config.data
    identity = (
        f"{GENERATOR_VERSION}/{class_name}/{index}/seed{config.training.seed}"
        f"/sr{data.sample_rate}/dur{data.clip_seconds}"
    )
    return Clip(
        class_name=class_name,
        identity=identity,
        load=lambda: synthesize(
            class_name,
            index,
            seed=config.training.seed,
            sample_rate=data.sample_rate,
            seconds=data.clip_seconds,
        ),
    )


def load_partition(config: ExperimentConfig, partition_id: int, num_partitions: int) -> PartitionData:
    classes = partition_classes(config, partition_id, num_partitions)
    splits: dict[str, list[Clip]] = {name: [] for name in SPLITS}
    for class_name in classes:
        for split, indices in split_indices(class_name, config).items():
            splits[split] += [procedural_clip(class_name, i, config) for i in indices]
    for class_name in classes:
        if not any(c.class_name == class_name for c in splits["train"]):
            raise ValueError(f"Node {partition_id}: class '{class_name}' has no training clips")
    return PartitionData(partition_id, classes, federation_classes(config), splits)
