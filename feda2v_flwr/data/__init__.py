"""Datasets and partitions: procedurally generated sounds (the offline default), ESC-50, VEGAS,
VGGSound, audio folders and precomputed embeddings on disk, split per node by class or by clip."""

from feda2v_flwr.data.audio_files import read_audio
from feda2v_flwr.data.datasets import VEGAS_CLASSES, DatasetError, DatasetIndex, index_dataset
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
    "VEGAS_CLASSES",
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
