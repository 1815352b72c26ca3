"""End-to-end: real ``flwr run`` simulations (own FLWR_HOME and SuperLink port) on a small config."""

from __future__ import annotations

import json

import pytest

from conftest import TINY
from feda2v_flwr.launch import run_simulation
from feda2v_flwr.reporting import read_metrics

pytestmark = pytest.mark.slow


def _config_file(tmp_path, cache_dir, **feda2v):
    raw = json.loads(json.dumps(TINY))
    raw["feda2v"].update(feda2v)
    raw["federation"].update(global_rounds=3, local_epochs=2)
    raw["data"]["cache_dir"] = str(cache_dir)
    raw["wandb"] = {"enabled": True, "mode": "offline"}
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(raw))
    return path


def _run(tmp_path, config, overrides, name):
    return run_simulation(
        config=str(config),
        overrides=overrides,
        run_name=name,
        output_dir=tmp_path / "outputs",
        flwr_home=tmp_path / "flwr-home",
        stream=False,
    )


def test_simulation_completes_and_learns(tmp_path, cache_dir):
    # An override with quotes inside travels through Flower's run config intact.
    quoted = 'data.classes=["siren", "rain", "dog", "engine"]; feda2v.prompt_template=a "clear" photo of {label}'
    status, run_dir = _run(tmp_path, _config_file(tmp_path, cache_dir), quoted, "e2e")
    assert status == "finished:completed"
    metrics = read_metrics(run_dir / "metrics.jsonl")
    for round_ in (1, 2, 3):
        phases = {m["phase"] for m in metrics if m["round"] == round_}
        assert {"fit", "generator", "validation", "finetune", "evaluate"} <= phases, (round_, phases)
    evaluations = [m for m in metrics if m["phase"] == "evaluate"]
    assert evaluations[-1]["test_mse"] < evaluations[0]["test_mse"]
    generator = [m["loss"] for m in metrics if m["phase"] == "generator"]
    assert generator[-1] < generator[0]
    assert (run_dir / "checkpoints" / "server_generator_round_3.pt").exists()
    resolved = json.loads((run_dir / "config.json").read_text())
    assert resolved["federation"]["global_rounds"] == 3
    assert resolved["feda2v"]["prompt_template"] == 'a "clear" photo of {label}'
    assert list((run_dir / "wandb").glob("offline-run-*"))
    assert json.loads((run_dir / "summary.json").read_text())["round"] == 3


def test_a_failing_server_is_reported_as_failed(tmp_path, cache_dir):
    config = _config_file(
        tmp_path, cache_dir, generator_load_checkpoint=True, generator_checkpoint_path=str(tmp_path / "none.pt")
    )
    status, _ = _run(tmp_path, config, "federation.global_rounds=1", "fails")
    assert status == "finished:failed"
