"""How one class's clips split into train / val / test: seeded permutations cut by the ratios,
whole groups (recordings of one source) kept on one side, the official training clips' val share,
the folds of a dataset's metadata, and the order ``max_clips_per_class`` tries files in."""

from __future__ import annotations

from feda2v_flwr.config.schema import DataSettings
from feda2v_flwr.data.datasets import DatasetError, DatasetIndex
from feda2v_flwr.seeding import clip_cap_rng, split_rng


def split_indices(class_name: str, n: int, data: DataSettings) -> dict[str, list[int]]:
    """Deterministic train/val/test indices of one class's ``n`` clips (a seeded permutation)."""
    order = split_rng(data.split_seed, class_name).permutation(n).tolist()
    n_train = max(1, round(data.train_ratio * n))
    n_val = round(data.val_ratio * n)
    return {
        "train": order[:n_train],
        "val": order[n_train : n_train + n_val],
        "test": order[n_train + n_val :],
    }


def group_splits(class_name: str, groups: set[str], data: DataSettings) -> dict[str, str]:
    """Group -> split of one class's groups (``split_by: "groups"``): the ratios split the sorted
    groups as :func:`split_indices` splits clips."""
    ordered = sorted(groups)
    indices = split_indices(class_name, len(ordered), data)
    return {ordered[i]: split for split, positions in indices.items() for i in positions}


def official_split_indices(class_name: str, n: int, data: DataSettings) -> dict[str, list[int]]:
    """Train/val indices of one class's ``n`` official training clips: ``val_ratio`` of them
    (seeded like :func:`split_indices`, at least one clip left to train) become val."""
    order = split_rng(data.split_seed, class_name).permutation(n).tolist()
    n_val = min(round(data.val_ratio * n), max(0, n - 1))
    return {"train": order[n_val:], "val": order[:n_val]}


def capped_order(class_name: str, n: int, data: DataSettings) -> list[int]:
    """The order in which a class's ``n`` files are tried when ``max_clips_per_class`` caps them:
    a permutation seeded by ``split_seed`` and the class (another stream than the split's)."""
    return clip_cap_rng(data.split_seed, class_name).permutation(n).tolist()


def fold_splits(index: DatasetIndex, data: DataSettings) -> dict[int, str]:
    """fold -> split name from ``data.{train,val,test}_folds``; every listed fold must exist."""
    listed = {"train": data.train_folds, "val": data.val_folds, "test": data.test_folds}
    present = {file.fold for file in index.files}
    for split, folds in listed.items():
        absent = sorted(set(folds) - present)
        if absent:
            raise DatasetError(
                f"data.{split}_folds lists fold(s) {absent}, which the {index.name} metadata does not have "
                f"(its folds: {sorted(f for f in present if f is not None)})."
            )
    return {fold: split for split, folds in listed.items() for fold in folds}
