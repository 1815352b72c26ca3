"""Datasets and partitions: procedurally generated sounds (the offline default), ESC-50 and
audio folders on disk, split per node by class."""

from feda2v_flwr.data.audio_files import read_audio
from feda2v_flwr.data.datasets import DatasetError, DatasetIndex, index_dataset
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
    "DatasetError",
    "DatasetIndex",
    "PartitionData",
    "federation_classes",
    "index_dataset",
    "load_partition",
    "partition_classes",
    "read_audio",
    "synthesize",
]
