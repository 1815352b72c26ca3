"""IID, Dirichlet and k-classes-per-node partitions (flwr-datasets) over procedural and file data."""

from __future__ import annotations

from collections import Counter

import pytest

from conftest import FOLDER_CLASSES, tiny_config, write_clip
from feda2v_flwr.config.paths import ConfigError
from feda2v_flwr.data.partition import SPLITS, load_partition, partition_classes


def _identities(config, nodes: int) -> list[set[str]]:
    return [
        {clip.identity for split in SPLITS for clip in load_partition(config, pid, nodes).splits[split]}
        for pid in range(nodes)
    ]


@pytest.mark.parametrize("mode", ["iid", "dirichlet", "classes_per_node"])
def test_every_clip_goes_to_exactly_one_node_deterministically(mode):
    config = tiny_config(data={"partitioning": mode, "clips_per_class": 12}, federation={"num_clients": 3})
    owned = _identities(config, 3)
    assert sum(len(o) for o in owned) == len(set().union(*owned)) == 4 * 12  # disjoint and complete
    assert owned == _identities(config, 3)  # same seed, same partition
    reseeded = tiny_config(
        data={"partitioning": mode, "clips_per_class": 12, "partition_seed": 7}, federation={"num_clients": 3}
    )
    assert _identities(reseeded, 3) != owned


def test_iid_nodes_see_every_class_and_dirichlet_skews_them():
    iid = tiny_config(data={"partitioning": "iid", "clips_per_class": 20})
    assert all(partition_classes(iid, pid, 2) == ["siren", "rain", "dog", "engine"] for pid in range(2))
    skewed = tiny_config(data={"partitioning": "dirichlet", "dirichlet_alpha": 0.1, "clips_per_class": 20})
    shares = []
    for pid in range(2):
        counts = Counter(c.class_name for split in SPLITS for c in load_partition(skewed, pid, 2).splits[split])
        shares.append(max(counts.values()) / sum(counts.values()))
    assert max(shares) > 0.5  # one class dominates a node (IID would give ~0.25)


def test_classes_per_node_limits_each_nodes_classes():
    config = tiny_config(
        data={"partitioning": "classes_per_node", "classes_per_node": 2}, federation={"num_clients": 2}
    )
    assert all(len(partition_classes(config, pid, 2)) <= 2 for pid in range(2))


def test_dirichlet_over_audio_files(tmp_path):
    root = tmp_path / "sounds"
    for k, name in enumerate(FOLDER_CLASSES):
        for i in range(6):
            write_clip(root / name / f"{name}_{i}.wav", seed=10 * k + i)
    config = tiny_config(
        data={"dataset": "audiofolder", "root": str(root), "classes": None, "partitioning": "dirichlet"}
    )
    files = [
        {c.source.name for split in SPLITS for c in load_partition(config, pid, 2).splits[split]} for pid in range(2)
    ]
    assert not files[0] & files[1] and len(files[0] | files[1]) == 6 * len(FOLDER_CLASSES)


def test_nodes_cannot_choose_classes_under_sample_level_partitioning():
    with pytest.raises(ConfigError, match="only data.partitioning 'by_class' honours"):
        tiny_config(data={"partitioning": "iid"}, nodes={"0": {"selected_classes": ["dog"]}})


def test_classes_per_node_covers_every_class_or_says_why_it_cannot():
    config = tiny_config(
        data={"partitioning": "classes_per_node", "classes_per_node": 2}, federation={"num_clients": 3}
    )
    per_node = [partition_classes(config, pid, 3) for pid in range(3)]
    assert all(len(c) == 2 for c in per_node) and set().union(*per_node) == {"siren", "rain", "dog", "engine"}
    too_few = tiny_config(data={"partitioning": "classes_per_node", "classes_per_node": 1})
    with pytest.raises(ConfigError, match="cannot cover the 4 classes"):
        load_partition(too_few, 0, 2)


@pytest.mark.filterwarnings("ignore:The specified min_partition_size")
def test_an_impossible_dirichlet_draw_names_the_keys_to_change():
    config = tiny_config(data={"partitioning": "dirichlet", "min_clips_per_node": 30, "clips_per_class": 10})
    with pytest.raises(ConfigError, match="data.dirichlet_alpha.*data.min_clips_per_node"):
        load_partition(config, 0, 2)
