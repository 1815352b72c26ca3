"""Clip-level node assignment: IID and Dirichlet label skew (``alpha``) with flwr-datasets'
partitioners, and ``k`` classes per node. Deterministic given ``data.partition_seed`` and the
node count.
"""

from __future__ import annotations

import numpy as np

from feda2v_flwr.config.paths import ConfigError
from feda2v_flwr.config.schema import DataSettings


def assign_samples(labels: list[int], num_partitions: int, data: DataSettings) -> list[list[int]]:
    """Positions (into ``labels``) held by each node, sorted."""
    if data.partitioning == "classes_per_node":
        return _classes_per_node(labels, num_partitions, data)
    from datasets import Dataset
    from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner

    dataset = Dataset.from_dict({"label": labels, "position": list(range(len(labels)))})
    if data.partitioning == "iid":
        dataset = dataset.shuffle(seed=data.partition_seed)  # IidPartitioner cuts contiguous shards
        partitioner = IidPartitioner(num_partitions=num_partitions)
    elif data.partitioning == "dirichlet":
        partitioner = DirichletPartitioner(
            num_partitions=num_partitions,
            partition_by="label",
            alpha=data.dirichlet_alpha,
            min_partition_size=data.min_clips_per_node,
            seed=data.partition_seed,
        )
    else:
        raise ValueError(f"partitioning '{data.partitioning}' is class-level, not clip-level")
    partitioner.dataset = dataset
    try:
        return [sorted(partitioner.load_partition(i)["position"]) for i in range(num_partitions)]
    except ValueError as err:
        raise ConfigError(
            f"data.partitioning 'dirichlet' found no draw giving each of {num_partitions} nodes at least "
            f"data.min_clips_per_node = {data.min_clips_per_node} of {len(labels)} clips ({err}). Raise "
            "data.dirichlet_alpha, lower data.min_clips_per_node, or use fewer nodes."
        ) from None


def check_classes_per_node(k: int, num_partitions: int, num_classes: int) -> None:
    """``classes_per_node: k`` must let every class have a node and every node its k classes."""
    if k > num_classes or num_partitions * k < num_classes:
        change = "lower classes_per_node" if k > num_classes else "raise classes_per_node or the number of nodes"
        raise ConfigError(
            f"data.classes_per_node = {k} with {num_partitions} nodes cannot cover the {num_classes} classes "
            f"(it needs classes_per_node <= classes <= nodes x classes_per_node): {change}"
        )


def _classes_per_node(labels: list[int], num_partitions: int, data: DataSettings) -> list[list[int]]:
    """Every node gets ``k`` consecutive classes of a seeded class order, wrapping around, so every
    class has at least one node when nodes x k >= classes; a class's clips are split evenly among
    its nodes. (flwr-datasets' PathologicalPartitioner may leave classes to nobody.)"""
    classes, k = sorted(set(labels)), data.classes_per_node
    check_classes_per_node(k, num_partitions, len(classes))
    rng = np.random.default_rng(data.partition_seed)
    order = rng.permutation(classes)
    owners: dict[int, list[int]] = {int(c): [] for c in classes}
    for node in range(num_partitions):
        for j in range(k):
            owners[int(order[(node * k + j) % len(classes)])].append(node)
    assigned: list[list[int]] = [[] for _ in range(num_partitions)]
    for label in classes:
        positions = rng.permutation([i for i, value in enumerate(labels) if value == label])
        for share, node in zip(np.array_split(positions, len(owners[label])), owners[label], strict=True):
            assigned[node] += share.tolist()
    return [sorted(a) for a in assigned]
