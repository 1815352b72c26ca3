"""Checkpoints written by an earlier version keep loading: one file of each kind in
``tests/fixtures/checkpoints/`` (written by the commit named in ``WRITTEN_BY``, with ``make.py``
there), read by today's code the way a run reads them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from feda2v_flwr.checkpoint_cli import main as checkpoint_main
from feda2v_flwr.checkpointing.files import CheckpointError
from feda2v_flwr.checkpointing.nodes import load_client_generator, load_client_state
from feda2v_flwr.checkpointing.run import load_checkpoint
from feda2v_flwr.config import validate_config
from feda2v_flwr.server_app import build_strategy
from feda2v_flwr.training.task import ClientTask

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "checkpoints"


@pytest.fixture
def saved(tmp_path, cache_dir):
    """The fixture files in a scratch folder, and the config they were written with (two rounds,
    so one is left to run; this session's cache)."""
    folder = tmp_path / "saved"
    shutil.copytree(FIXTURES, folder)
    raw = json.loads(load_checkpoint(folder / "run.pt")["config"])
    raw["federation"]["global_rounds"] = 2
    raw["data"]["cache_dir"] = str(cache_dir)
    return folder, validate_config(raw)


def test_a_run_checkpoint_of_the_earlier_version_resumes(tmp_path, saved):
    folder, config = saved
    payload = load_checkpoint(folder / "run.pt")
    strategy = build_strategy(config, tmp_path / "resumed", resume=folder / "run.pt")
    recipe = strategy.recipe
    assert recipe.start_round == 1 and recipe.last_round == 2
    for key, tensor in payload["global_adapters"].items():
        np.testing.assert_array_equal(recipe.state[key], tensor.numpy())
    assert recipe.trainer.learner is not None
    assert recipe.trainer.learner.epochs_done == payload["generator_epochs"] > 0


def test_a_node_state_and_a_client_generator_of_the_earlier_version_train_on(saved):
    folder, config = saved
    state_dir = folder / "client_state"
    state_dir.mkdir()
    shutil.copy(folder / "node_state.pt", state_dir / "node_0_round_1.pt")
    blobs = load_client_state(state_dir, 0, before_round=2)
    assert set(blobs) == {"optimizer", "local_adapters", "generators"}
    task = ClientTask(config, 0, config.federation.num_clients, config.data.cache_dir)
    arrays = task.initial_arrays()
    resumed = task.fit(arrays, 2, blobs["optimizer"], blobs["local_adapters"], generator_state=blobs["generators"])
    assert resumed.generator_state is not None and resumed.num_examples > 0
    generator = load_client_generator(folder / "client_generator.pt")
    assert generator["classes"] == ["siren", "dog"] and generator["round"] == 1
    fresh = task.fit(arrays, 2, None, None, pretrained_path=folder / "client_generator.pt")
    assert fresh.generator_state is not None


@pytest.mark.parametrize(
    ("name", "kind"), [("run.pt", "run"), ("node_state.pt", "node_state"), ("client_generator.pt", "client_generator")]
)
def test_feda2v_checkpoint_describes_every_kind(saved, capsys, name, kind):
    folder, _ = saved
    assert checkpoint_main([str(folder / name), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["kind"] == kind and summary["round"] == 1
    assert checkpoint_main([str(folder / name)]) == 0
    assert capsys.readouterr().out.startswith(("kind ", "file "))


def test_a_truncated_file_of_any_kind_is_one_error_naming_it(saved, capsys):
    folder, _ = saved
    for name, what in (("run.pt", "Checkpoint"), ("client_generator.pt", "Generator checkpoint")):
        cut = folder / f"cut-{name}"
        cut.write_bytes((folder / name).read_bytes()[:1000])
        reader = load_checkpoint if name == "run.pt" else load_client_generator
        with pytest.raises(CheckpointError, match=rf"{what} .*cut-{name} is corrupt or truncated"):
            reader(cut)
        assert checkpoint_main([str(cut)]) == 2
        assert "is corrupt or truncated" in capsys.readouterr().err
