"""The server's checks that need no training: the federation's classes and each node's share,
the checkpoints a run starts from, the client generators' setup. ``feda2v-sim`` runs them (with
the per-node data checks of ``feda2v_flwr.preflight``) before any Flower process starts; the
recipe runs them again when the ServerApp starts."""

from __future__ import annotations

import logging
from pathlib import Path

from feda2v_flwr.config import ExperimentConfig, resolve_run_path
from feda2v_flwr.config.schema import FedA2VSettings, unused_settings
from feda2v_flwr.data.datasets import DatasetError
from feda2v_flwr.data.partition import federation_classes, partition_classes
from feda2v_flwr.data.sample_partitions import check_classes_per_node
from feda2v_flwr.server.generator_trainer import ServerGeneratorTrainer
from feda2v_flwr.training.adapters import build_model
from feda2v_flwr.training.client_generators import check_client_generator_setup

log = logging.getLogger(__name__)


def server_classes(config: ExperimentConfig) -> list[str]:
    """The federation's classes. The server needs no copy of the data when ``data.classes``
    names them all (a deployment's server machine): then they are taken as given, in that order."""
    named = config.data.classes
    try:
        return federation_classes(config)  # under partitioning 'local': data.classes, read nothing
    except DatasetError:
        if not named or not all(isinstance(c, str) for c in named):
            raise
        log.info("No copy of the dataset on the server: the federation's classes are data.classes %s", named)
        return list(dict.fromkeys(named))


def check_node_classes(config: ExperimentConfig, classes: list[str]) -> None:
    """Every node's class choice (``selected_classes`` / ``excluded_classes``, round robin) and
    the k-classes-per-node arithmetic, checked on the server before any training: a mistake fails
    here, naming the node, not in every node's fit round after round. The class choices are
    skipped when the server has no copy of the data."""
    data, num_clients = config.data, config.federation.num_clients
    if data.partitioning == "classes_per_node":
        check_classes_per_node(data.classes_per_node, num_clients, len(classes))
    if data.partitioning != "by_class":
        return  # the nodes draw clip-level partitions themselves
    try:
        for partition_id in range(num_clients):
            partition_classes(config, partition_id, num_clients)
    except DatasetError:
        return


def checked_classes(config: ExperimentConfig) -> list[str]:
    """The federation's classes after the checks that need no training: keys the run ignores
    (one warning each) and each node's share of the classes."""
    for sentence in unused_settings(config):
        log.warning(sentence)
    classes = server_classes(config)
    check_node_classes(config, classes)
    return classes


def adapter_checkpoint_file(f: FedA2VSettings) -> Path:
    """The checkpoint ``adapter_load_checkpoint`` starts the global adapters from."""
    return resolve_run_path(f.adapter_checkpoint_path or f.generator_checkpoint_path or "")


def generator_checkpoint_file(f: FedA2VSettings) -> Path:
    """The checkpoint ``generator_load_checkpoint`` starts the server generator from."""
    return resolve_run_path(f.generator_checkpoint_path or "")


def new_trainer(config: ExperimentConfig, slots: tuple, in_dim: int, device: str = "cpu") -> ServerGeneratorTrainer:
    return ServerGeneratorTrainer(
        config=config,
        adapters=build_model(config, slots, in_dim),
        input_dim=in_dim,
        slot_shapes={s.name: s.shape for s in slots},
        device=device,
    )


def check_client_generators(config: ExperimentConfig, classes: list[str]) -> None:
    """Client generator mistakes (classes, groups, pretrained files) fail on the server before
    any training, not in every client's fit."""
    f = config.feda2v
    if f.client_generators:
        pretrained = resolve_run_path(f.pretrained_generator_path) if f.pretrained_generator_path else None
        check_client_generator_setup(config, pretrained, classes)
