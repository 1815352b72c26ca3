"""Datasets and partitions (the offline default: procedurally generated sounds)."""

from feda2v_flwr.data.partition import (
    SPLITS,
    Clip,
    PartitionData,
    federation_classes,
    load_partition,
    partition_classes,
)
from feda2v_flwr.data.procedural import SOUND_CLASSES, synthesize

__all__ = [
    "SOUND_CLASSES",
    "SPLITS",
    "Clip",
    "PartitionData",
    "federation_classes",
    "load_partition",
    "partition_classes",
    "synthesize",
]
