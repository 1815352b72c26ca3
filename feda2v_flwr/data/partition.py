"""Which classes and clips a node holds (disjoint classes, or clip-level IID / Dirichlet /
k classes per node), at most ``max_clips_per_class`` of each, and its train / val / test splits."""

from __future__ import annotations

import difflib
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from feda2v_flwr.config.paths import ConfigError
from feda2v_flwr.config.schema import DataSettings, ExperimentConfig
from feda2v_flwr.data.audio_files import (
    audio_problem,
    embedding_header,
    embedding_identity,
    file_identity,
    read_audio,
    read_embedding,
)
from feda2v_flwr.data.datasets import (
    AudioFile,
    DatasetError,
    DatasetIndex,
    embedding_mismatch,
    file_group,
    index_dataset,
)
from feda2v_flwr.data.procedural import GENERATOR_VERSION, synthesize
from feda2v_flwr.data.sample_partitions import assign_samples
from feda2v_flwr.data.splits import capped_order, fold_splits, group_splits, official_split_indices, split_indices

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Clip:
    """One labelled clip. ``identity`` names it uniquely (cache key); ``load`` gives the wave (the
    (T, D) array for precomputed embeddings); ``source`` is the file it is read from (None for
    synthesised clips)."""

    class_name: str
    identity: str
    load: Callable[[], np.ndarray] = field(compare=False, repr=False)
    source: Path | None = None


@dataclass
class PartitionData:
    """One node's data: its classes, the federation's classes (label order), clips per split."""

    partition_id: int
    classes: list[str]
    federation_classes: list[str]
    splits: dict[str, list[Clip]]

    def count(self, split: str) -> int:
        return len(self.splits[split])


def federation_classes(config: ExperimentConfig) -> list[str]:
    """The run's classes: ``data.classes`` (names or indices) or all of the dataset's; under
    ``partitioning: local`` the names as given (no dataset is read)."""
    if config.data.partitioning == "local":
        return list(dict.fromkeys(str(c) for c in config.data.classes or []))
    return _federation_classes(config.data, index_dataset(config.data))


def class_sizes(config: ExperimentConfig) -> dict[str, int]:
    """Clips of each federation class in the dataset (before any split): the most a node can
    hold of it. ``DatasetError`` when this machine has no copy of the data."""
    index = index_dataset(config.data)
    classes = _federation_classes(config.data, index)
    if index.name == "procedural":
        return dict.fromkeys(classes, config.data.clips_per_class)
    counts = Counter(file.class_name for file in index.files)
    return {name: counts[name] for name in classes}


def partition_classes(config: ExperimentConfig, partition_id: int, num_partitions: int) -> list[str]:
    """By class: class k goes to partition k mod N, unless the node selects its own; then the
    node's ``excluded_classes`` are removed. Sample-level partitionings: the classes it got."""
    if config.data.partitioning != "by_class":
        return load_partition(config, partition_id, num_partitions).classes
    return _partition_classes(config, index_dataset(config.data), partition_id, num_partitions)


def load_partition(config: ExperimentConfig, partition_id: int, num_partitions: int) -> PartitionData:
    """The node's clips per split. Unreadable files are skipped with one warning each."""
    try:
        index = index_dataset(config.data)
    except DatasetError as err:
        raise DatasetError(f"Node {partition_id}: {err}") from None
    split_data = node_split_settings(config, partition_id)
    if config.data.partitioning == "local":
        classes = _local_classes(config, index, partition_id)
        splits, skipped = _file_splits(classes, index.files, index, split_data, partition_id)
    elif config.data.partitioning != "by_class":
        classes, splits, skipped = _sample_level_splits(config, index, partition_id, num_partitions, split_data)
    elif index.name == "procedural":
        classes = _partition_classes(config, index, partition_id, num_partitions)
        splits, skipped = _procedural_splits(classes, config, split_data), 0
    else:
        classes = _partition_classes(config, index, partition_id, num_partitions)
        splits, skipped = _file_splits(classes, index.files, index, split_data, partition_id)
    for class_name in classes:
        if not any(c.class_name == class_name for c in splits["train"]):
            where = {
                "folds": f" in data.train_folds {config.data.train_folds}",
                "official": " in VGGSound's official train split",
            }.get(config.data.split_by, "")
            raise DatasetError(
                f"Node {partition_id}: class '{class_name}' has no readable training clips{where}. Add audio for it, "
                f"or leave it out with nodes.{partition_id}.excluded_classes."
            )
    log.info(
        "Node %d: %d classes of the %s dataset; %d train, %d val, %d test clips; %d unreadable files skipped",
        partition_id,
        len(classes),
        index.name,
        *(len(splits[split]) for split in SPLITS),
        skipped,
    )
    return PartitionData(partition_id, classes, _federation_classes(config.data, index), splits)


def _federation_classes(data: DataSettings, index: DatasetIndex) -> list[str]:
    if data.partitioning == "local":  # each node's folder holds only some: the config names them all
        return list(dict.fromkeys(str(c) for c in data.classes or []))
    if data.classes is None:
        return list(index.classes)
    return list(dict.fromkeys(index.resolve(ref, where="data.classes") for ref in data.classes))


def _partition_classes(
    config: ExperimentConfig, index: DatasetIndex, partition_id: int, num_partitions: int
) -> list[str]:
    all_classes = _federation_classes(config.data, index)
    node = config.node(partition_id)
    if node.selected_classes is not None:
        where = f"Node {partition_id}: selected_classes"
        chosen = [index.resolve(ref, where=where) for ref in node.selected_classes]
        outside = [c for c in chosen if c not in all_classes]
        if outside:
            raise ConfigError(
                f"{where} lists {outside}, which are not among the federation's classes {all_classes}. "
                "Add them to data.classes or select other classes."
            )
    elif num_partitions > len(all_classes):
        raise ConfigError(
            f"Partitioning by class needs at least one class per node: {num_partitions} nodes "
            f"but only {len(all_classes)} classes. Use fewer nodes or more classes."
        )
    else:
        chosen = all_classes[partition_id::num_partitions]
    where = f"Node {partition_id}: excluded_classes"
    excluded = {index.resolve(ref, where=where) for ref in node.excluded_classes}
    classes = [c for c in dict.fromkeys(chosen) if c not in excluded]
    if not classes:
        raise ConfigError(
            f"Node {partition_id} has no classes left: excluded_classes removes all of {chosen}. "
            f"Exclude fewer classes or set nodes.{partition_id}.selected_classes."
        )
    return classes


def node_split_settings(config: ExperimentConfig, partition_id: int) -> DataSettings:
    """The data section with this node's own ``train_ratio`` / ``val_ratio`` / ``split_seed`` /
    ``max_clips_per_class``."""
    node = config.node(partition_id)
    keys = ("train_ratio", "val_ratio", "split_seed", "max_clips_per_class")
    overrides = {k: getattr(node, k) for k in keys if getattr(node, k) is not None}
    if not overrides:
        return config.data
    try:
        return DataSettings.model_validate({**config.data.model_dump(), **overrides})
    except ValueError as err:
        raise ConfigError(f"nodes.{partition_id}: its split settings {overrides} are invalid: {err}") from None


def _procedural_splits(classes: list[str], config: ExperimentConfig, data: DataSettings) -> dict[str, list[Clip]]:
    splits: dict[str, list[Clip]] = {name: [] for name in SPLITS}
    for class_name in classes:
        for split, indices in split_indices(class_name, data.clips_per_class, data).items():
            splits[split] += [_procedural_clip(class_name, i, config) for i in indices]
    return splits


def _procedural_clip(class_name: str, index: int, config: ExperimentConfig) -> Clip:
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


def _local_classes(config: ExperimentConfig, index: DatasetIndex, partition_id: int) -> list[str]:
    """``partitioning: local``: the federation's classes that this node's folder holds."""
    federation = _federation_classes(config.data, index)
    present = {f.class_name for f in index.files if f.path.exists()}  # a CSV may list more than the node holds
    classes = [c for c in federation if c in present]
    unnamed = sorted(present - set(federation))
    if unnamed:
        hints = {u: difflib.get_close_matches(u, federation, n=1) for u in unnamed}
        log.warning(
            "Node %d: its folder has classes that data.classes does not name, left out: %s",
            partition_id,
            ", ".join(f"{u} (did you mean '{h[0]}'?)" if h else u for u, h in hints.items()),
        )
    if not classes:
        raise DatasetError(
            f"Node {partition_id}: its folder ({config.data.root}) holds none of data.classes {federation} "
            f"(it has {list(index.classes)[:10]}). Point this node's data-dir at its share of the data, or fix "
            "the class names."
        )
    return classes


def _sample_level_splits(
    config: ExperimentConfig, index: DatasetIndex, partition_id: int, num_partitions: int, split_data: DataSettings
) -> tuple[list[str], dict[str, list[Clip]], int]:
    """IID / Dirichlet / k-classes-per-node: flwr-datasets assigns clips of every class to nodes;
    each node then splits its clips of each class into train / val / test."""
    data = config.data
    federation = _federation_classes(data, index)
    label = {c: i for i, c in enumerate(federation)}
    if index.name == "procedural":
        items: list[tuple[str, int] | AudioFile] = [(c, i) for c in federation for i in range(data.clips_per_class)]
    else:  # every node partitions the same listing; each probes (and warns about) its own files
        items = [f for f in index.files if f.class_name in label]
    labels = [label[item[0] if isinstance(item, tuple) else item.class_name] for item in items]
    mine = [items[i] for i in assign_samples(labels, num_partitions, data)[partition_id]]
    if index.name == "procedural":
        classes = [c for c in federation if any(item[0] == c for item in mine)]
        splits: dict[str, list[Clip]] = {name: [] for name in SPLITS}
        for class_name in classes:
            numbers = [i for c, i in mine if c == class_name]
            for split, positions in split_indices(class_name, len(numbers), split_data).items():
                splits[split] += [_procedural_clip(class_name, numbers[p], config) for p in positions]
        return classes, splits, 0
    classes = [c for c in federation if any(f.class_name == c for f in mine)]
    splits, skipped = _file_splits(classes, mine, index, split_data, partition_id)
    trained = [c for c in classes if any(clip.class_name == c for clip in splits["train"])]
    if trained != classes:  # e.g. a class whose clips on this node all fell in val/test folds
        log.warning(
            "Node %d: no training clips for %s; they are left out on this node",
            partition_id,
            sorted(set(classes) - set(trained)),
        )
        splits = {s: [c for c in clips if c.class_name in trained] for s, clips in splits.items()}
    return trained, splits, skipped


def _file_splits(
    classes: list[str], files: Sequence[AudioFile], index: DatasetIndex, data: DataSettings, partition_id: int
) -> tuple[dict[str, list[Clip]], int]:
    """Clips per split from the readable ``files`` of ``classes`` (at most ``max_clips_per_class``
    of each class), and how many files were skipped."""
    fold_split = fold_splits(index, data) if data.split_by == "folds" else None
    candidates: dict[str, list[AudioFile]] = {c: [] for c in classes}
    for file in files:
        if file.class_name in candidates and (fold_split is None or file.fold in fold_split):
            candidates[file.class_name].append(file)
    splits: dict[str, list[Clip]] = {name: [] for name in SPLITS}
    skipped = 0
    durations: list[float] = []
    for class_name, group in candidates.items():
        cap = data.max_clips_per_class
        order = range(len(group)) if cap is None else capped_order(class_name, len(group), data)
        kept: list[int] = []
        for position in order:
            if cap is not None and len(kept) == cap:
                break
            problem, seconds = _file_problem(group[position], index)
            if problem is None:
                kept.append(position)
                if seconds is not None:
                    durations.append(seconds)
            else:
                log.warning("Node %d: skipping %s: %s", partition_id, group[position].path, problem)
                skipped += 1
        readable = [group[p] for p in sorted(kept)]  # listing order, so the split only depends on the seeds
        if fold_split is not None:
            for file in readable:
                splits[fold_split[file.fold]].append(_file_clip(file, data))
        elif data.split_by == "official":
            train = [f for f in readable if f.official_split == "train"]
            for split, indices in official_split_indices(class_name, len(train), data).items():
                splits[split] += [_file_clip(train[i], data) for i in indices]
            splits["test"] += [_file_clip(f, data) for f in readable if f.official_split == "test"]
        elif data.split_by == "groups":
            split_of = group_splits(class_name, {file_group(f.path) for f in readable}, data)
            for file in readable:
                splits[split_of[file_group(file.path)]].append(_file_clip(file, data))
        else:
            for split, indices in split_indices(class_name, len(readable), data).items():
                splits[split] += [_file_clip(readable[i], data) for i in indices]
    _warn_if_mostly_padding(durations, data.clip_seconds, partition_id)
    return splits, skipped


def _warn_if_mostly_padding(durations: list[float], clip_seconds: float, partition_id: int) -> None:
    """One warning when a node's clips are much shorter than ``clip_seconds``: every clip is cut or
    zero-padded to that length, so most of what the encoder sees would be silence."""
    if not durations:
        return
    median = float(np.median(durations))
    if median < 0.5 * clip_seconds:
        log.warning(
            "Node %d: its clips last %.2f s (median of %d) but data.clip_seconds is %.1f: about %.0f %% of each "
            'clip is zero padding. Set data.clip_seconds near %.1f, or to "auto" (measured from the files).',
            partition_id,
            median,
            len(durations),
            clip_seconds,
            100 * (1 - median / clip_seconds),
            median,
        )


def _file_problem(file: AudioFile, index: DatasetIndex) -> tuple[str | None, float | None]:
    """(why ``file`` cannot be used, so it is skipped, or None; its duration in seconds, None for
    embeddings), from its header only. A precomputed array of another shape than the dataset's is a
    ``DatasetError``: the dataset must be fixed."""
    if index.embedding_shape is None:
        return audio_problem(file.path)
    try:
        shape, dtype = embedding_header(file.path)
    except ValueError as err:
        return str(err), None
    if shape != index.embedding_shape or not np.issubdtype(dtype, np.floating):
        raise DatasetError(embedding_mismatch(file.path, shape, dtype, index))
    return None, None


def _file_clip(file: AudioFile, data: DataSettings) -> Clip:
    if data.dataset == "precomputed":
        return Clip(file.class_name, embedding_identity(file.path), partial(read_embedding, file.path), file.path)
    return Clip(
        class_name=file.class_name,
        identity=file_identity(file.path, sample_rate=data.sample_rate, seconds=data.clip_seconds),
        load=partial(read_audio, file.path, sample_rate=data.sample_rate, seconds=data.clip_seconds),
        source=file.path,
    )
