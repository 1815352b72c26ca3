"""SPEC 8, bad input: each row fails with a message that says what is wrong and where.

Rows tested elsewhere, not repeated here (each asserts the message):

| SPEC 8 row | file | test |
|---|---|---|
| unknown key | test_config.py | test_unknown_key_names_the_closest_valid_key |
| unknown key in a node | test_config.py | test_unknown_key_inside_a_node_section |
| bad value, range | test_config.py | test_bad_value_names_key_path_and_allowed_values |
| missing dataset dir | test_datasets.py | test_a_missing_or_wrong_root_fails_saying_what_layout_is_expected |
| class not in dataset | test_datasets.py | test_unknown_or_unusable_classes_fail_naming_node_and_class |
| empty class | test_datasets.py | test_a_class_without_readable_training_clips_fails_naming_node_and_class |
| any config at all | test_config_fuzz.py | (all: a config or a readable ConfigError) |

Here: wrong types, the missing dataset dir seen by the server before training, and checkpoints
(truncated, not ours, a generator of another type), each through the path a run takes.
"""

from __future__ import annotations

import pytest
import torch
from test_checkpoint import write_server_checkpoint

from conftest import tiny_config
from feda2v_flwr.checkpointing.files import CheckpointError
from feda2v_flwr.checkpointing.run import load_checkpoint
from feda2v_flwr.config import ConfigError, validate_config
from feda2v_flwr.data.datasets import DatasetError
from feda2v_flwr.server_app import build_strategy
from feda2v_flwr.training.generator_learner import GeneratorMismatchError


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"federation": {"global_rounds": "three"}},
            "federation.global_rounds: Input should be a valid integer; got 'three'",
        ),
        (
            {"feda2v": {"generator_augmentation": "maybe"}},
            "feda2v.generator_augmentation: Input should be a valid boolean",
        ),
        ({"feda2v": {"ast": {"model": 7}}}, "feda2v.ast.model: Input should be a valid string; got 7"),
        (
            {"nodes": {"1": {"selected_classes": ["dog", 1.5]}}},
            "nodes.1.selected_classes[1]: must be a string or an integer; got 1.5",
        ),
        ({"data": {"train_folds": "1,2"}}, "data.train_folds: Input should be a valid list; got '1,2'"),
        ({"feda2v": ["use_generator"]}, "feda2v: must be a section (a JSON object of keys); got ['use_generator']"),
        ([{"feda2v": {}}], "config must hold a JSON object with the sections feda2v, federation, training, nodes"),
    ],
)
def test_a_wrong_type_names_the_key_path_and_what_is_allowed(raw, message):
    with pytest.raises(ConfigError) as err:
        validate_config(raw)
    assert message in str(err.value)


def test_a_missing_dataset_dir_stops_the_server_before_training(tmp_path, cache_dir):
    missing = tmp_path / "ESC-50-master"
    config = tiny_config(data={"dataset": "esc50", "root": str(missing), "classes": None, "cache_dir": str(cache_dir)})
    with pytest.raises(DatasetError, match=rf"data.root {missing} is not a directory.*meta/esc50\.csv"):
        build_strategy(config, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.fixture(scope="module")
def vae_checkpoint(tmp_path_factory, cache_dir):
    return write_server_checkpoint(tmp_path_factory.mktemp("bad-input") / "vae", cache_dir)


def _loading(path, cache_dir, **feda2v):
    return tiny_config(
        feda2v={"generator_load_checkpoint": True, "generator_checkpoint_path": str(path), **feda2v},
        data={"cache_dir": str(cache_dir)},
    )


def test_a_checkpoint_cut_in_half_is_an_error_naming_the_file_never_a_fresh_start(tmp_path, vae_checkpoint, cache_dir):
    truncated = tmp_path / "server_generator_round_1.pt"
    data = vae_checkpoint.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"Checkpoint {truncated} is corrupt or truncated"):
        load_checkpoint(truncated)
    with pytest.raises(CheckpointError, match=rf"Checkpoint {truncated} is corrupt or truncated"):
        build_strategy(_loading(truncated, cache_dir), tmp_path / "run")


def test_a_file_that_is_not_a_feda2v_checkpoint_is_named(tmp_path, cache_dir):
    foreign = tmp_path / "weights.pt"
    torch.save([torch.zeros(2), torch.ones(3)], foreign)
    with pytest.raises(CheckpointError, match=rf"{foreign} is not a feda2v checkpoint of format version 2"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match=rf"{foreign} is not a feda2v checkpoint"):
        build_strategy(_loading(foreign, cache_dir), tmp_path / "run")


def test_a_generator_of_another_type_fails_before_training(tmp_path, vae_checkpoint, cache_dir):
    pointer = vae_checkpoint.parent / "server_generator_latest.json"
    with pytest.raises(
        GeneratorMismatchError,
        match=rf"{pointer} holds a 'vae' generator but this run is configured with generator_type 'gan'",
    ):
        build_strategy(_loading(pointer, cache_dir, generator_type="gan"), tmp_path / "gan")
    assert not (tmp_path / "gan" / "metrics.jsonl").exists()
