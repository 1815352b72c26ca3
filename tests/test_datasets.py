"""ESC-50 and audio-folder datasets, on fixtures written here: classes, splits, node selection,
bad files and bad paths, and real wav files encoded end to end."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile

from conftest import FILE_RATE, FOLDER_CLASSES, tiny_config, write_clip
from feda2v_flwr.config import ConfigError, load_config
from feda2v_flwr.config.loading import pinned_overrides
from feda2v_flwr.data import (
    VEGAS_CLASSES,
    DatasetError,
    federation_classes,
    load_partition,
    partition_classes,
    read_audio,
)
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
    with pytest.raises(DatasetError, match=r"set data.root to the folder that holds one sub-folder of .* per class"):
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


VEGAS_ON_DISK = ("dog", "helicopter", "water_flowing")  # VEGAS indices 2, 5, 9


@pytest.fixture
def vegas_root(tmp_path: Path) -> Path:
    """3 of the 10 VEGAS classes x 5 clips in <class>/audios/, with the prototype's extra files
    (video_info.csv, img/, videos/) and a folder that is not a VEGAS class."""
    root = tmp_path / "VEGAS"
    for k, name in enumerate(VEGAS_ON_DISK):
        for i in range(5):
            write_clip(root / name / "audios" / f"{name}_{i:03d}.wav", seed=10 * k + i)
        (root / name / "video_info.csv").write_text("video_id,start,end\n")
        (root / name / "img").mkdir()
        (root / name / "videos").mkdir()
    (root / "cat").mkdir()
    return root


def test_vegas_classes_keep_their_fixed_indices_and_other_folders_are_ignored(vegas_root, caplog, propagating_logs):
    config = tiny_config(data={"dataset": "vegas", "root": str(vegas_root), "classes": None})
    with caplog.at_level(logging.WARNING, logger="feda2v_flwr"):
        data = load_partition(config, 0, 1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "['cat']" in warnings[0] and "not VEGAS classes" in warnings[0]
    assert data.classes == list(VEGAS_ON_DISK) and data.federation_classes == list(VEGAS_ON_DISK)
    assert sum(data.count(split) for split in ("train", "val", "test")) == 3 * 5  # csv, img/, videos/ are no clips
    by_index = tiny_config(
        nodes={"0": {"selected_classes": [9, 2]}, "1": {"selected_classes": [5]}},
        data={"dataset": "vegas", "root": str(vegas_root), "classes": None},
    )
    assert partition_classes(by_index, 0, 2) == ["water_flowing", "dog"]
    assert partition_classes(by_index, 1, 2) == ["helicopter"]
    chainsaw = tiny_config(
        nodes={"0": {"selected_classes": [1]}}, data={"dataset": "vegas", "root": str(vegas_root), "classes": None}
    )
    with pytest.raises(ConfigError, match=r"class index 1, but the 'vegas' dataset's class indices are \[2, 5, 9\]"):
        partition_classes(chainsaw, 0, 1)


def test_vegas_skips_a_corrupt_clip_naming_it_and_needs_a_class_folder(vegas_root, tmp_path, caplog, propagating_logs):
    corrupt = vegas_root / "dog" / "audios" / "dog_999.wav"
    corrupt.write_bytes(b"RIFF this is not audio")
    config = tiny_config(data={"dataset": "vegas", "root": str(vegas_root), "classes": ["dog"]})
    with caplog.at_level(logging.WARNING, logger="feda2v_flwr"):
        data = load_partition(config, 0, 1)
    assert any(str(corrupt) in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert sum(data.count(split) for split in ("train", "val", "test")) == 5
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "music").mkdir()
    with pytest.raises(DatasetError, match=r"none of the VEGAS class folders.*<root>/<class>/audios/\*\.wav"):
        federation_classes(tiny_config(data={"dataset": "vegas", "root": str(tmp_path / "empty"), "classes": None}))


VGGSOUND_ROWS = [  # youtube_id, start_seconds, label, split; the label with a comma is quoted
    ("a1", 30, "dog barking", "train"),
    ("a2", 0, "dog barking", "train"),
    ("a3", 10, "dog barking", "train"),
    ("a4", 20, "dog barking", "train"),
    ("a5", 40, "dog barking", "test"),
    ("b1", 5, "male speech, man speaking", "train"),
    ("b2", 15, "male speech, man speaking", "train"),
    ("b3", 25, "male speech, man speaking", "train"),
    ("b4", 35, "male speech, man speaking", "train"),
    ("b5", 45, "male speech, man speaking", "test"),
    ("b6", 55, "male speech, man speaking", "test"),
    ("c1", 1, "airplane", "train"),  # every airplane clip is missing: airplane keeps its index, no clips
    ("m1", 7, "dog barking", "train"),
    ("m2", 8, "male speech, man speaking", "test"),
]
VGGSOUND_MISSING = {"c1", "m1", "m2"}


@pytest.fixture
def vggsound_root(tmp_path: Path) -> Path:
    root = tmp_path / "vggsound"
    lines = []
    for k, (youtube_id, start, label, split) in enumerate(VGGSOUND_ROWS):
        lines.append(
            f'{youtube_id},{start},"{label}",{split}' if "," in label else f"{youtube_id},{start},{label},{split}"
        )
        if youtube_id not in VGGSOUND_MISSING:
            ext = "flac" if youtube_id == "b2" else "wav"
            write_clip(root / split / "audios" / f"{youtube_id}_{start:06d}.{ext}", seed=k)
    (root / "vggsound.csv").write_text("\n".join(lines) + "\n")
    return root


def vggsound(root: Path, **data) -> dict:
    return {"data": {"dataset": "vggsound", "root": str(root), "classes": None, **data}}


def test_vggsound_reads_the_official_csv_and_summarises_missing_clips_in_one_warning(
    vggsound_root, caplog, propagating_logs
):
    with caplog.at_level(logging.WARNING, logger="feda2v_flwr"):
        data = load_partition(tiny_config(**vggsound(vggsound_root)), 0, 1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "3 of the 14 clips listed in vggsound.csv have no audio file" in warnings[0]
    assert "train/audios/c1_000001.wav" in warnings[0]
    assert data.classes == ["dog barking", "male speech, man speaking"]  # sorted; airplane has no clips
    assert sum(data.count(split) for split in ("train", "val", "test")) == 11
    assert any(c.source.suffix == ".flac" for split in data.splits.values() for c in split)
    # Indices are positions among all the csv's sorted labels: airplane 0, dog barking 1, male speech 2.
    by_index = tiny_config(nodes={"0": {"selected_classes": [2]}}, **vggsound(vggsound_root))
    assert partition_classes(by_index, 0, 1) == ["male speech, man speaking"]


def test_vggsound_official_split_keeps_the_test_clips_and_draws_val_from_train(vggsound_root):
    config = tiny_config(**vggsound(vggsound_root, split_by="official", val_ratio=0.25))
    data = load_partition(config, 0, 1)
    assert split_files(data, "test") == ["a5_000040.wav", "b5_000045.wav", "b6_000055.wav"]
    assert (data.count("train"), data.count("val")) == (6, 2)  # 4 official train clips per class, 1 to val
    train_ids = {name.split("_")[0] for name in split_files(data, "train") + split_files(data, "val")}
    assert train_ids == {"a1", "a2", "a3", "a4", "b1", "b2", "b3", "b4"}
    assert split_files(load_partition(config, 0, 1), "val") == split_files(data, "val")
    with pytest.raises(ConfigError, match="split_by 'official' needs VGGSound"):
        tiny_config(**folder(vggsound_root, split_by="official"))


def test_vggsound_metadata_errors_name_the_line(vggsound_root):
    (vggsound_root / "vggsound.csv").write_text("a1,30,dog barking,train\na2,zero,dog barking,train\n")
    with pytest.raises(DatasetError, match=r"vggsound.csv, line 2: start_seconds must be an integer"):
        federation_classes(tiny_config(**vggsound(vggsound_root)))
    (vggsound_root / "vggsound.csv").write_text("a1,30,male speech, man speaking,train\n")
    with pytest.raises(DatasetError, match=r"line 1: expected 4 fields .* Quote labels that contain commas"):
        federation_classes(tiny_config(**vggsound(vggsound_root)))
    (vggsound_root / "vggsound.csv").unlink()
    with pytest.raises(DatasetError, match=r"vggsound.csv does not exist.*<root>/<split>/audios/"):
        federation_classes(tiny_config(**vggsound(vggsound_root)))


def all_files(partition) -> list[str]:
    return sorted(clip.source.name for split in partition.splits.values() for clip in split)


def test_max_clips_per_class_is_a_seeded_choice_of_readable_clips_before_the_split(folder_root):
    capped = tiny_config(**folder(folder_root, max_clips_per_class=4, train_ratio=0.5, val_ratio=0.25))
    data = load_partition(capped, 0, 1)
    for class_name in FOLDER_CLASSES:
        assert sum(c.class_name == class_name for split in data.splits.values() for c in split) == 4
    assert (data.count("train"), data.count("val"), data.count("test")) == (4 * 2, 4 * 1, 4 * 1)
    assert all_files(load_partition(capped, 0, 1)) == all_files(data)  # deterministic
    reseeded = load_partition(tiny_config(**folder(folder_root, max_clips_per_class=4, split_seed=3)), 0, 1)
    assert all_files(reseeded) != all_files(data)
    # A corrupt file is never one of the chosen clips: the next readable one takes its place.
    broken = [name for name in all_files(data) if name.startswith("bell")][:2]
    for name in broken:
        (folder_root / "bell" / name).write_bytes(b"RIFF broken")
    again = all_files(load_partition(capped, 0, 1))
    assert len(again) == 4 * 4 and not set(broken) & set(again)
    # A node's own cap wins; above the class size it keeps every clip.
    nodes = {"0": {"max_clips_per_class": 2}, "1": {"max_clips_per_class": 50}}
    per_node = tiny_config(nodes=nodes, **folder(folder_root, max_clips_per_class=4))
    assert len(all_files(load_partition(per_node, 0, 2))) == 2 * 2  # bell and dog
    assert len(all_files(load_partition(per_node, 1, 2))) == 2 * 6  # cat and siren


def test_max_clips_per_class_applies_to_vegas_and_clip_level_partitions(vegas_root):
    config = tiny_config(data={"dataset": "vegas", "root": str(vegas_root), "classes": None, "max_clips_per_class": 3})
    assert len(all_files(load_partition(config, 0, 1))) == 3 * 3
    iid = tiny_config(
        data={
            "dataset": "vegas",
            "root": str(vegas_root),
            "classes": None,
            "max_clips_per_class": 1,
            "partitioning": "iid",
        }
    )
    for pid in range(2):
        data = load_partition(iid, pid, 2)
        assert len(all_files(data)) == len(data.classes)  # at most one clip per class on each node


def test_max_clips_per_class_needs_files_on_disk():
    with pytest.raises(ConfigError, match="set clips_per_class instead"):
        tiny_config(data={"max_clips_per_class": 5})
    with pytest.raises(ConfigError, match=r"nodes \['1'\] set max_clips_per_class"):
        tiny_config(nodes={"1": {"max_clips_per_class": 5}})


@pytest.mark.parametrize("name", ["vegas_10n_1c_standalone", "vegas_10n_1c_avg"])
def test_the_vegas_recipes_give_each_of_10_nodes_one_class_capped_at_400_clips(name, tmp_path):
    for k, class_name in enumerate(VEGAS_CLASSES):
        for i in range(2):
            write_clip(tmp_path / class_name / "audios" / f"{i}.wav", seed=10 * k + i)
    config = load_config(f"configs/{name}.json", {"data.root": str(tmp_path)})
    assert (config.federation.num_clients, config.data.max_clips_per_class) == (10, 400)
    assert config.feda2v.audio_encoder == "ast" and config.feda2v.target_profile == "flux"
    assert [partition_classes(config, pid, 10) for pid in range(10)] == [[c] for c in VEGAS_CLASSES]


def test_local_partitioning_uses_each_nodes_own_folder_under_one_label_order(folder_root, tmp_path):
    """Deployment: node 0's machine holds two classes, node 1's the other two (its data-dir)."""
    shares = {0: FOLDER_CLASSES[:2], 1: FOLDER_CLASSES[2:]}
    for node, classes in shares.items():
        for name in classes:
            (tmp_path / f"node-{node}").mkdir(exist_ok=True)
            os.symlink(folder_root / name, tmp_path / f"node-{node}" / name)
    named = list(reversed(FOLDER_CLASSES))  # the config's order is the label order, not the folders'
    for node, classes in shares.items():
        config = tiny_config(**folder(tmp_path / f"node-{node}", partitioning="local", classes=named))
        partition = load_partition(config, node, 2)
        assert partition.classes == [c for c in named if c in classes]
        assert partition.federation_classes == named
        assert {clip.class_name for clip in partition.splits["train"]} == set(classes)
        assert sum(partition.count(split) for split in ("train", "val", "test")) == 6 * len(classes)
    stranger = tiny_config(**folder(tmp_path / "node-0", partitioning="local", classes=named[:2]))
    with pytest.raises(DatasetError, match="holds none of data.classes"):
        load_partition(stranger, 0, 2)
    with pytest.raises(ConfigError, match="needs data.classes to name every class"):
        tiny_config(**folder(folder_root, partitioning="local", classes=None))


def test_mp3_clips_are_read_and_a_truncated_wav_is_skipped(folder_root, caplog, propagating_logs):
    rate = 22050
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)
    for number in range(2):
        soundfile.write(folder_root / "bell" / f"tone{number}.mp3", tone, rate, format="MP3")
    truncated = folder_root / "bell" / "cut.wav"
    soundfile.write(truncated, tone[:8], rate)  # 8 samples: a broken download, not a clip
    with caplog.at_level(logging.INFO, logger="feda2v_flwr"):
        data = load_partition(tiny_config(**folder(folder_root)), 0, 1)
    sources = {c.source.name for split in data.splits.values() for c in split if c.class_name == "bell"}
    assert {"tone0.mp3", "tone1.mp3"} <= sources and "cut.wav" not in sources
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert str(truncated) in warning and "8 samples (0.4 ms), shorter than 0.05 s" in warning
    mp3 = next(c for split in data.splits.values() for c in split if c.source.suffix == ".mp3")
    wave = mp3.load()
    assert wave.shape == (16000,) and np.abs(wave).max() > 0.1  # resampled to 16 kHz, cut to 1 s


def test_clips_much_shorter_than_clip_seconds_get_one_warning_with_the_padding(folder_root, caplog, propagating_logs):
    with caplog.at_level(logging.INFO, logger="feda2v_flwr"):
        load_partition(tiny_config(**folder(folder_root, clip_seconds=5.0)), 0, 1)  # the clips last 1 s
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "clips last 1.00 s (median of 24) but data.clip_seconds is 5.0: about 80 % of each clip" in warning
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="feda2v_flwr"):
        load_partition(tiny_config(**folder(folder_root, clip_seconds=1.0)), 0, 1)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_auto_clip_seconds_measures_the_federation_classes_clips(folder_root, tmp_path, caplog, propagating_logs):
    soundfile.write(folder_root / "bell" / "long.wav", np.zeros(int(2.5 * FILE_RATE)), FILE_RATE)
    soundfile.write(folder_root / "dog" / "short.wav", np.zeros(FILE_RATE // 4), FILE_RATE)
    raw = {**folder(folder_root, clip_seconds="auto"), "federation": {"num_clients": 2}}
    config_file = tmp_path / "auto.json"
    config_file.write_text(json.dumps(raw))
    with caplog.at_level(logging.INFO, logger="feda2v_flwr"):
        assert load_config(config_file).data.clip_seconds == 2.5  # the longest clip
    assert "data.clip_seconds 'auto': 2.50 s (percentile 100 of 26 readable clips)" in caplog.text
    assert load_config(config_file, "data.auto_clip_percentile=50").data.clip_seconds == 1.0  # 24 of 26 last 1 s
    only_dogs = load_config(config_file, {"data.classes": ["dog", "cat"]}).data.clip_seconds
    assert only_dogs == 1.0  # bell's long clip is not a federation class
    assert load_config(config_file, measure=False).data.clip_seconds == "auto"
    # the launchers measure once and hand every process the number
    assert pinned_overrides(str(config_file), "", load_config(config_file)) == "data.clip_seconds=2.5"
    fixed = "data.clip_seconds=3"
    assert pinned_overrides(str(config_file), fixed, load_config(config_file, fixed)) == fixed
    data = load_partition(load_config(config_file), 0, 2)
    assert data.splits["train"][0].load().shape == (int(2.5 * 16000),)


def test_auto_clip_seconds_needs_audio_files_it_can_read(tmp_path):
    config_file = tmp_path / "auto.json"
    config_file.write_text(json.dumps({"data": {"clip_seconds": "auto"}}))
    with pytest.raises(ConfigError, match="'procedural' dataset has none to measure. Give data.clip_seconds"):
        load_config(config_file)
    config_file.write_text(json.dumps(folder(tmp_path / "not-here", clip_seconds="auto")))
    with pytest.raises(ConfigError, match="which this machine cannot read: .*Give data.clip_seconds in seconds"):
        load_config(config_file)
    with pytest.raises(ConfigError, match="data.clip_seconds"):
        tiny_config(data={"clip_seconds": "longest"})
