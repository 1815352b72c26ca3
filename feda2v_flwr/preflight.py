"""Checks that need the data or the checkpoints but no Flower process. ``feda2v-sim`` runs them
before it starts a SuperLink, so a mistake costs seconds and one line instead of a Ray start-up
and a traceback in every node's log."""

from __future__ import annotations

from feda2v_flwr.checkpointing.run import load_checkpoint, saved_adapters
from feda2v_flwr.config import ExperimentConfig
from feda2v_flwr.data.datasets import DatasetError
from feda2v_flwr.data.partition import SPLITS, PartitionData, load_partition, node_split_settings
from feda2v_flwr.encoders import audio_embed_dim, target_slots
from feda2v_flwr.server.checks import (
    adapter_checkpoint_file,
    check_client_generators,
    checked_classes,
    generator_checkpoint_file,
    new_trainer,
)
from feda2v_flwr.server.trainer_state import load_generator
from feda2v_flwr.training.adapters import build_model


def preflight(config: ExperimentConfig) -> None:
    """Raise (``ConfigError``, ``DatasetError``, ``CheckpointError``, ``GeneratorMismatchError``)
    with one sentence saying what to fix, for every problem found before training: the data root,
    the classes and each node's share of them, readable training clips and non-empty val / test
    splits on every node, and the checkpoints the run starts from."""
    classes = checked_classes(config)
    num_clients = config.federation.num_clients
    if config.data.partitioning != "local":  # "local": each machine reads its own folder, not this one
        for partition_id in range(num_clients):
            check_splits(config, load_partition(config, partition_id, num_clients))
    check_checkpoints(config, classes)


def check_splits(config: ExperimentConfig, partition: PartitionData) -> None:
    """Every class of a by-class partition (every node under clip-level partitionings) has test
    clips, and val clips unless the user asked for none (``val_ratio`` 0, or no ``val_folds``):
    an empty split would report NaN or skip the generator's validation without a word."""
    data = node_split_settings(config, partition.partition_id)
    node = partition.partition_id
    wants_val = bool(data.val_folds) if data.split_by == "folds" else data.val_ratio > 0
    groups = partition.classes if config.data.partitioning == "by_class" else [None]
    for class_name in groups:
        counts = {
            split: sum(class_name is None or c.class_name == class_name for c in partition.splits[split])
            for split in SPLITS
        }
        what = f"Node {node}" + (f", class '{class_name}'" if class_name else "")
        numbers = ", ".join(f"{counts[s]} {s}" for s in SPLITS)
        if counts["test"] == 0:
            raise DatasetError(
                f"{what}: no test clips ({numbers}): add clips, or lower data.train_ratio / data.val_ratio "
                f"(now {data.train_ratio} / {data.val_ratio}) so that some are left for testing"
            )
        if counts["val"] == 0 and wants_val:
            fix = (
                f"list folds with clips in data.val_folds (now {data.val_folds}), or empty it"
                if data.split_by == "folds"
                else f"raise data.val_ratio (now {data.val_ratio}), or set it to 0"
            )
            raise DatasetError(
                f"{what}: no val clips ({numbers}), so the server generator could not be validated: add clips, "
                f"{fix} to run without validation"
            )


def check_checkpoints(config: ExperimentConfig, classes: list[str]) -> None:
    """The checkpoints the run starts from exist and fit this run's adapters and generator."""
    f = config.feda2v
    if f.adapter_load_checkpoint or f.generator_load_checkpoint:
        slots = target_slots(f)
        in_dim = audio_embed_dim(config)
        if f.adapter_load_checkpoint:
            path = adapter_checkpoint_file(f)
            saved_adapters(load_checkpoint(path), build_model(config, slots, in_dim).state_dict(), path)
        if f.generator_load_checkpoint:
            path = generator_checkpoint_file(f)
            load_generator(new_trainer(config, slots, in_dim), load_checkpoint(path), source=str(path))
    check_client_generators(config, classes)
