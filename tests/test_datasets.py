"""ESC-50 and audio-folder datasets, on fixtures written here: classes, splits, node selection,
bad files and bad paths, and real wav files encoded end to end."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile

from conftest import FILE_RATE, FOLDER_CLASSES, tiny_config, write_clip
from feda2v_flwr.config import ConfigError
from feda2v_flwr.data import DatasetError, federation_classes, load_partition, partition_classes, read_audio
from feda2v_flwr.training.task import ClientTask

ESC50_CLASSES = {0: "dog", 1: "rooster", 2: "rain"}  # target order is not alphabetical


@pytest.fixture
def esc50_root(tmp_path: Path) -> Path:
    """3 classes x 5 folds x 2 clips, named like the official files ({fold}-{source}-{take}-{target}.wav)."""
    root = tmp_path / "ESC-50"
    lines = ["filename,fold,target,category,esc10,src_file,take"]
    for target, category in ESC50_CLASSES.items():
        for fold in range(1, 6):
            for take in "AB":
                name = f"{fold}-{100 + target}-{take}-{target}.wav"
                write_clip(root / "audio" / name, seed=100 * target + 10 * fold + "AB".index(take))
                lines.append(f"{name},{fold},{target},{category},False,{100 + target},{take}")
    (root / "meta").mkdir()
    (root / "meta" / "esc50.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def folder_root(tmp_path: Path) -> Path:
    """4 classes x 6 clips (wav, one flac, one ogg per class) and a file that is not audio."""
    root = tmp_path / "sounds"
    for k, name in enumerate(FOLDER_CLASSES):
        for i, ext in enumerate(["wav", "wav", "wav", "wav", "flac", "ogg"]):
            write_clip(root / name / f"{name}_{i}.{ext}", seed=10 * k + i)
    (root / "cat" / "notes.txt").write_text("not audio")
    return root


@pytest.fixture
def propagating_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    """caplog listens on the root logger; ``setup_logging`` may have stopped propagation."""
    monkeypatch.setattr(logging.getLogger("feda2v_flwr"), "propagate", True)


def esc50(root: Path, **data) -> dict:
    return {"data": {"dataset": "esc50", "root": str(root), "classes": None, **data}}


def folder(root: Path, **data) -> dict:
    return {"data": {"dataset": "audiofolder", "root": str(root), "classes": None, **data}}


def split_files(partition, split: str) -> list[str]:
    return sorted(clip.source.name for clip in partition.splits[split])


def test_esc50_classes_follow_target_and_folds_are_the_splits(esc50_root):
    config = tiny_config(**esc50(esc50_root, split_by="folds", train_folds=[1, 2, 3], val_folds=[4], test_folds=[5]))
    assert federation_classes(config) == ["dog", "rooster", "rain"]
    data = load_partition(config, 0, 1)
    assert (data.count("train"), data.count("val"), data.count("test")) == (18, 6, 6)
    for split, folds in {"train": {"1", "2", "3"}, "val": {"4"}, "test": {"5"}}.items():
        assert {name.split("-")[0] for name in split_files(data, split)} == folds
    unused = load_partition(tiny_config(**esc50(esc50_root, split_by="folds", val_folds=[], test_folds=[4])), 0, 1)
    assert (unused.count("train"), unused.count("val"), unused.count("test")) == (18, 0, 6)  # fold 5 unused


def test_ratio_split_is_the_default_and_deterministic(esc50_root):
    config = tiny_config(**esc50(esc50_root))
    data = load_partition(config, 0, 1)
    assert (data.count("train"), data.count("val"), data.count("test")) == (3 * 7, 3 * 1, 3 * 2)
    again = load_partition(config, 0, 1)
    assert [c.identity for c in again.splits["val"]] == [c.identity for c in data.splits["val"]]
    ids = {split: {c.identity for c in clips} for split, clips in data.splits.items()}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    reseeded = load_partition(tiny_config(**esc50(esc50_root, split_seed=7)), 0, 1)
    assert split_files(reseeded, "test") != split_files(data, "test")


def test_folds_must_exist_and_only_esc50_has_folds(esc50_root, folder_root):
    with pytest.raises(DatasetError, match=r"train_folds lists fold\(s\) \[6\].*its folds: \[1, 2, 3, 4, 5\]"):
        load_partition(tiny_config(**esc50(esc50_root, split_by="folds", train_folds=[6])), 0, 1)
    with pytest.raises(ConfigError, match="must not share a fold"):
        tiny_config(**esc50(esc50_root, split_by="folds", train_folds=[1, 2], val_folds=[2]))
    with pytest.raises(ConfigError, match="split_by 'folds' needs ESC-50's folds"):
        tiny_config(**folder(folder_root, split_by="folds"))


def test_audiofolder_classes_are_the_sorted_folders_with_every_audio_format(folder_root):
    config = tiny_config(**folder(folder_root))
    assert federation_classes(config) == list(FOLDER_CLASSES)
    data = load_partition(config, 0, 1)
    clips = [c for split in data.splits.values() for c in split]
    assert len(clips) == 4 * 6  # notes.txt is not a clip
    assert {c.source.suffix for c in clips} == {".wav", ".flac", ".ogg"}


def test_nodes_select_and_exclude_classes_by_name_and_by_index(folder_root, esc50_root):
    nodes = {"0": {"selected_classes": ["dog", 0]}, "1": {"excluded_classes": [3]}}
    config = tiny_config(nodes=nodes, **folder(folder_root))
    assert partition_classes(config, 0, 2) == ["dog", "bell"]  # index 0 = first sorted folder
    assert partition_classes(config, 1, 2) == ["cat"]  # round robin gives cat and siren; siren (3) excluded
    assert load_partition(config, 1, 2).classes == ["cat"]
    # ESC-50 indices are the csv's target (2 = rain), not positions in a sorted list (2 = rooster).
    by_target = tiny_config(nodes={"0": {"selected_classes": [2], "excluded_classes": []}}, **esc50(esc50_root))
    assert partition_classes(by_target, 0, 1) == ["rain"]
    restricted = tiny_config(**{"data": {**folder(folder_root)["data"], "classes": ["siren", 1]}})
    assert federation_classes(restricted) == ["siren", "cat"]
    assert load_partition(restricted, 0, 1).federation_classes == ["siren", "cat"]


def test_unknown_or_unusable_classes_fail_naming_node_and_class(folder_root):
    with pytest.raises(ConfigError, match="Node 1: selected_classes lists 'unicorn'.*Available"):
        load_partition(tiny_config(nodes={"1": {"selected_classes": ["unicorn"]}}, **folder(folder_root)), 1, 2)
    with pytest.raises(ConfigError, match=r"Node 0: excluded_classes lists class index 9.*0\.\.3"):
        load_partition(tiny_config(nodes={"0": {"excluded_classes": [9]}}, **folder(folder_root)), 0, 2)
    with pytest.raises(ConfigError, match=r"data.classes lists 'dgo'.*Did you mean 'dog'"):
        federation_classes(tiny_config(**{"data": {**folder(folder_root)["data"], "classes": ["dgo"]}}))
    outside = {"data": {**folder(folder_root)["data"], "classes": ["cat", "dog"]}}
    with pytest.raises(ConfigError, match=r"Node 0: selected_classes lists \['bell'\].*federation's classes"):
        load_partition(tiny_config(nodes={"0": {"selected_classes": ["bell"]}}, **outside), 0, 2)
    with pytest.raises(ConfigError, match="Node 0 has no classes left"):
        load_partition(
            tiny_config(nodes={"0": {"selected_classes": ["cat"], "excluded_classes": ["cat"]}}, **outside), 0, 2
        )


@pytest.mark.parametrize("partitioning", ["by_class", "iid"])
def test_a_corrupt_file_is_skipped_with_one_warning_naming_it(folder_root, caplog, propagating_logs, partitioning):
    corrupt = folder_root / "cat" / "x.wav"
    corrupt.write_bytes(np.random.default_rng(0).bytes(3000))
    with caplog.at_level(logging.INFO, logger="feda2v_flwr"):
        data = load_partition(tiny_config(**folder(folder_root, partitioning=partitioning)), 0, 1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(corrupt) in warnings[0]
    assert sum(c.class_name == "cat" for split in data.splits.values() for c in split) == 6
    assert any("1 unreadable files skipped" in r.getMessage() for r in caplog.records)


def test_clip_level_partitions_with_fold_splits_drop_classes_without_training_clips(esc50_root):
    config = tiny_config(
        **esc50(esc50_root, partitioning="iid", split_by="folds", train_folds=[1], val_folds=[2], test_folds=[3, 4, 5])
    )
    for pid in range(4):
        data = load_partition(config, pid, 4)
        assert data.classes and all(any(c.class_name == k for c in data.splits["train"]) for k in data.classes)


def test_a_class_without_readable_training_clips_fails_naming_node_and_class(folder_root):
    (folder_root / "empty").mkdir()
    (folder_root / "empty" / "broken.wav").write_bytes(b"RIFF nonsense")
    config = tiny_config(nodes={"1": {"selected_classes": ["empty"]}}, **folder(folder_root))
    with pytest.raises(DatasetError, match="Node 1: class 'empty' has no readable training clips"):
        load_partition(config, 1, 2)


def test_a_missing_or_wrong_root_fails_saying_what_layout_is_expected(tmp_path, esc50_root):
    with pytest.raises(
        DatasetError, match=r"Node 0: data.root .*nope is not a directory.*holds audio/\*\.wav and meta/esc50\.csv"
    ):
        load_partition(tiny_config(**esc50(tmp_path / "nope")), 0, 1)
    with pytest.raises(ConfigError, match=r"set data.root to the folder that holds one sub-folder of .* per class"):
        federation_classes(tiny_config(data={"dataset": "audiofolder", "classes": None}))
    (esc50_root / "meta" / "esc50.csv").rename(esc50_root / "meta" / "other.csv")
    with pytest.raises(DatasetError, match=r"esc50\.csv does not exist.*official ESC-50 release"):
        federation_classes(tiny_config(**esc50(esc50_root)))
    with pytest.raises(ConfigError, match="dataset is 'procedural'"):
        tiny_config(data={"root": str(tmp_path)})


def test_a_relative_root_resolves_against_the_launch_directory(folder_root, monkeypatch):
    monkeypatch.chdir(folder_root.parent)
    assert federation_classes(tiny_config(**folder(Path(folder_root.name)))) == list(FOLDER_CLASSES)


def test_read_audio_mixes_to_mono_resamples_and_fits_the_clip_length(tmp_path):
    path = tmp_path / "tone.wav"
    t = np.arange(FILE_RATE // 2) / FILE_RATE  # 0.5 s
    soundfile.write(path, np.stack([0.6 * np.sin(2 * np.pi * 440 * t), np.zeros_like(t)], axis=1), FILE_RATE)
    wave = read_audio(path, sample_rate=16000, seconds=1.0)
    assert wave.shape == (16000,) and wave.dtype == np.float32
    np.testing.assert_array_equal(wave[8100:], 0)  # padded after 0.5 s
    spectrum = np.abs(np.fft.rfft(wave[:8000]))
    assert abs(np.argmax(spectrum) * 16000 / 8000 - 440) <= 2  # still 440 Hz after resampling
    assert 0.28 < np.abs(wave[:8000]).max() < 0.32  # the silent channel halves the level
    assert read_audio(path, sample_rate=16000, seconds=0.25).shape == (4000,)


def test_clip_identity_names_path_size_mtime_rate_and_length(folder_root):
    config = tiny_config(**folder(folder_root))
    clip = load_partition(config, 0, 1).splits["train"][0]
    path = clip.source
    assert str(path) in clip.identity and f"size{path.stat().st_size}" in clip.identity
    assert clip.identity.endswith("/sr16000/dur1.0")
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 10**9))
    touched = load_partition(config, 0, 1).splits["train"][0]
    assert touched.identity != clip.identity and touched.class_name == clip.class_name
    longer = load_partition(tiny_config(**folder(folder_root, clip_seconds=2.0)), 0, 1).splits["train"][0]
    assert longer.identity != touched.identity


def test_client_task_encodes_real_audio_files(folder_root, cache_dir):
    task = ClientTask(tiny_config(**folder(folder_root)), 0, 2, cache_dir)
    assert task.partition.classes == ["bell", "dog"]
    emb, labels = task.split("train")
    assert emb.shape[0] == labels.shape[0] == task.partition.count("train") == 2 * 4
    assert emb.shape[2] == 48 and emb.shape[1] > 1 and np.isfinite(emb.numpy()).all()
    assert sorted(set(labels.tolist())) == [0, 2]  # labels index the federation's classes
    assert task.cache.encoder.calls == 8


def test_a_file_with_a_readable_header_but_a_damaged_body_is_skipped_at_encoding(
    folder_root, cache_dir, caplog, propagating_logs
):
    damaged = folder_root / "cat" / "cat_4.flac"
    raw = bytearray(damaged.read_bytes())
    raw[200:] = np.random.default_rng(1).bytes(len(raw) - 200)  # keep the header, break the frames
    damaged.write_bytes(bytes(raw))
    config = tiny_config(**folder(folder_root, cache_dir=str(cache_dir), train_ratio=0.99, val_ratio=0.0))
    task = ClientTask(config, 0, 1, cache_dir)
    with caplog.at_level(logging.WARNING, logger="feda2v_flwr"):
        emb, labels = task.split("train")
    assert any(str(damaged) in r.getMessage() for r in caplog.records)
    assert len(labels) == len(emb) == len(task.partition.splits["train"]) - 1


def test_a_node_can_have_its_own_split_ratios_and_seed():
    config = tiny_config(nodes={"1": {"train_ratio": 0.5, "val_ratio": 0.2, "split_seed": 7}})
    default, own = load_partition(config, 0, 2), load_partition(config, 1, 2)
    assert {s: default.count(s) for s in ("train", "val", "test")} == {"train": 14, "val": 2, "test": 4}
    assert {s: own.count(s) for s in ("train", "val", "test")} == {"train": 10, "val": 4, "test": 6}
    bad = tiny_config(nodes={"0": {"train_ratio": 0.9, "val_ratio": 0.2}})
    with pytest.raises(ConfigError, match="nodes.0: its split settings"):
        load_partition(bad, 0, 2)
