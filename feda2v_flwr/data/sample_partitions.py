"""Sample-level node assignment with flwr-datasets' partitioners: IID, Dirichlet label skew
(``alpha``), and a fixed number of classes per node (pathological). Deterministic given
``data.partition_seed`` and the node count.
"""

from __future__ import annotations

import logging

from feda2v_flwr.config.schema import DataSettings

log = logging.getLogger(__name__)


def assign_samples(labels: list[int], num_partitions: int, data: DataSettings) -> list[list[int]]:
    """Positions (into ``labels``) held by each node, sorted."""
    from datasets import Dataset, disable_progress_bars
    from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, PathologicalPartitioner

    disable_progress_bars()
    dataset = Dataset.from_dict({"label": labels, "position": list(range(len(labels)))})
    seed = data.partition_seed
    if data.partitioning == "iid":
        dataset = dataset.shuffle(seed=seed)  # IidPartitioner cuts contiguous shards
        partitioner = IidPartitioner(num_partitions=num_partitions)
    elif data.partitioning == "dirichlet":
        partitioner = DirichletPartitioner(
            num_partitions=num_partitions,
            partition_by="label",
            alpha=data.dirichlet_alpha,
            min_partition_size=data.min_clips_per_node,
            seed=seed,
        )
    elif data.partitioning == "classes_per_node":
        partitioner = PathologicalPartitioner(
            num_partitions=num_partitions,
            partition_by="label",
            num_classes_per_partition=data.classes_per_node,
            seed=seed,
        )
    else:
        raise ValueError(f"partitioning '{data.partitioning}' is class-level, not sample-level")
    partitioner.dataset = dataset
    return [sorted(partitioner.load_partition(i)["position"]) for i in range(num_partitions)]
