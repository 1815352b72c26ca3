"""feda2v-sim's pre-flight: setups that cannot work fail in seconds, with one line and exit 2,
before any Flower process starts."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY, tiny_config, write_clip
from feda2v_flwr import launch
from feda2v_flwr.config.schema import unused_settings
from feda2v_flwr.data.datasets import DatasetError
from feda2v_flwr.data.partition import Clip, PartitionData
from feda2v_flwr.preflight import check_splits


@pytest.fixture
def no_flower(monkeypatch):
    """Starting the simulation is a test failure: pre-flight must have stopped the run."""

    def refuse(**kwargs):
        raise AssertionError("a SuperLink would have started")

    monkeypatch.setattr(launch, "run_simulation", refuse)


def _sim(tmp_path: Path, capsys, **sections) -> tuple[int, str, float]:
    raw = json.loads(json.dumps(TINY))
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    config = tmp_path / "setup.json"
    config.write_text(json.dumps(_without_clips_per_class(raw)))
    started = time.monotonic()
    code = launch.main(["--config", str(config), "--output-dir", str(tmp_path / "out"), "--flwr-home", str(tmp_path)])
    return code, capsys.readouterr().err.strip(), time.monotonic() - started


def _folder(root: Path, clips: dict[str, int]) -> Path:
    for k, (name, count) in enumerate(clips.items()):
        for i in range(count):
            write_clip(root / name / f"{i}.wav", seed=10 * k + i)
    return root


def _folder_data(root: Path) -> dict:
    return {"dataset": "audiofolder", "root": str(root), "classes": None}


def _without_clips_per_class(raw: dict) -> dict:
    """TINY sets clips_per_class, which only the procedural dataset reads (a warning otherwise)."""
    if raw["data"].get("dataset", "procedural") != "procedural":
        raw["data"].pop("clips_per_class", None)
    return raw


def _assert_one_line(code, err, seconds, words):
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("feda2v-sim: ") and words in err, err
    assert seconds < 10, f"pre-flight took {seconds:.1f} s"


def test_a_missing_data_root_fails_at_once(tmp_path, capsys, no_flower):
    _assert_one_line(*_sim(tmp_path, capsys, data=_folder_data(tmp_path / "absent")), "is not a directory")


def test_more_nodes_than_classes_fails_at_once(tmp_path, capsys, no_flower):
    _assert_one_line(*_sim(tmp_path, capsys, federation={"num_clients": 5}), "5 nodes but only 4 classes")


def test_an_empty_test_split_names_node_class_and_numbers(tmp_path, capsys, no_flower):
    root = _folder(tmp_path / "sounds", {"bell": 6, "cat": 6, "dog": 1, "siren": 6})
    result = _sim(tmp_path, capsys, data=_folder_data(root))
    _assert_one_line(*result, "Node 0, class 'dog': no test clips (1 train, 0 val, 0 test)")


def test_an_empty_val_split_fails_unless_val_ratio_is_zero(tmp_path, capsys, no_flower, monkeypatch):
    root = _folder(tmp_path / "sounds", {"bell": 3, "cat": 3})
    result = _sim(tmp_path, capsys, data=_folder_data(root))
    _assert_one_line(*result, "no val clips (2 train, 0 val, 1 test)")
    assert "set it to 0 to run without validation" in result[1]
    started = []
    monkeypatch.setattr(launch, "run_simulation", lambda **kwargs: started.append(kwargs) or ("finished:failed", root))
    code, _, _ = _sim(tmp_path, capsys, data={**_folder_data(root), "val_ratio": 0.0})
    assert started and code == 1  # pre-flight passed; the (fake) run is what failed


def test_a_class_with_only_unreadable_files_fails_at_once(tmp_path, capsys, no_flower):
    root = _folder(tmp_path / "sounds", {"bell": 6, "cat": 6})
    (root / "owl").mkdir()
    for i in range(3):
        (root / "owl" / f"{i}.wav").write_bytes(np.random.default_rng(i).bytes(2000))
    _assert_one_line(*_sim(tmp_path, capsys, data=_folder_data(root)), "class 'owl' has no readable training clips")


def test_a_sound_setup_passes_pre_flight(tmp_path, capsys, monkeypatch):
    started = []
    monkeypatch.setattr(
        launch, "run_simulation", lambda **kwargs: started.append(kwargs) or ("finished:failed", tmp_path)
    )
    code, err, seconds = _sim(tmp_path, capsys)
    assert started and code == 1 and "feda2v-sim:" not in err and seconds < 10


def test_keys_that_do_not_apply_get_one_warning_each(tmp_path, capsys):
    root = _folder(tmp_path / "sounds", {"bell": 6, "cat": 6})
    config = tiny_config(data={**_folder_data(root), "clips_per_class": 12, "dirichlet_alpha": 0.1})
    assert unused_settings(config) == [
        "data.clips_per_class is set but only applies to the procedural dataset, which synthesises its clips; "
        "this run (audiofolder, partitioning by_class, split_by ratio) ignores it",
        "data.dirichlet_alpha is set but only applies to data.partitioning 'dirichlet'; "
        "this run (audiofolder, partitioning by_class, split_by ratio) ignores it",
    ]
    assert unused_settings(tiny_config()) == []


def _partition(counts: dict[str, int]) -> PartitionData:
    clip = Clip("dog", "dog-0", lambda: np.zeros(1))
    return PartitionData(0, ["dog"], ["dog"], {split: [clip] * n for split, n in counts.items()})


@pytest.mark.parametrize(
    ("data", "fails"),
    [
        ({"split_by": "folds", "val_folds": []}, None),
        ({"split_by": "folds", "val_folds": [4]}, "list folds with clips in data.val_folds (now [4]), or empty it"),
        ({"val_ratio": 0.0}, None),
        ({"val_ratio": 0.1}, "raise data.val_ratio (now 0.1), or set it to 0"),
    ],
)
def test_an_empty_val_split_is_refused_only_where_val_clips_were_asked_for(data, fails):
    dataset = {"dataset": "esc50", "root": "ESC-50", "classes": None} if data.get("split_by") else {}
    config = tiny_config(data={**dataset, **data})
    no_val = _partition({"train": 5, "val": 0, "test": 2})
    if fails is None:
        check_splits(config, no_val)
    else:
        with pytest.raises(DatasetError, match=re.escape(fails)):
            check_splits(config, no_val)


def test_auto_clip_seconds_is_measured_once_and_passed_to_the_run(tmp_path, capsys, monkeypatch):
    started = []
    monkeypatch.setattr(
        launch, "run_simulation", lambda **kwargs: started.append(kwargs) or ("finished:failed", tmp_path)
    )
    root = _folder(tmp_path / "sounds", {"bell": 6, "cat": 6})
    code, err, _ = _sim(tmp_path, capsys, data={**_folder_data(root), "clip_seconds": "auto"})
    assert code == 1 and "feda2v-sim:" not in err, err
    assert started[0]["overrides"] == "data.clip_seconds=1.0"  # the fixture's clips last 1 s
