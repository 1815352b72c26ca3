"""Client faults through ``flwr run``: a node that raises in every fit and a node whose replies
hold NaN are dropped with their reasons in the metrics; the run completes every round and the
global adapters stay finite."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import TINY, simulate
from feda2v_flwr.checkpoint import load_checkpoint
from feda2v_flwr.reporting import read_metrics

pytestmark = pytest.mark.slow


def test_a_raising_node_and_a_nan_node_are_dropped_and_the_run_completes(tmp_path, cache_dir):
    raw = json.loads(json.dumps(TINY))
    raw["federation"].update(num_clients=4, global_rounds=2, min_fit_clients=2)
    raw["nodes"] = {"1": {"simulate_fault": "raise"}, "2": {"simulate_fault": "nan"}}
    raw["data"]["cache_dir"] = str(cache_dir)
    config = tmp_path / "faulty.json"
    config.write_text(json.dumps(raw))
    status, run_dir = simulate(tmp_path, config, "faulty")
    assert status == "finished:completed"
    metrics = read_metrics(run_dir / "metrics.jsonl")
    fits = [m for m in metrics if m["phase"] == "fit"]
    assert [m["round"] for m in fits] == [1, 2]
    for fit in fits:
        assert sorted(fit["clients"]) == ["0", "3"]
        assert len(fit["failures"]) == 1 and "simulated fault on node 1" in fit["failures"][0]
        assert [d["partition_id"] for d in fit["dropped"]] == ["2"] and "NaN" in fit["dropped"][0]["reason"]
    rounds = [m for m in metrics if m["phase"] == "round"]
    assert [(m["num_updates"], m["dropped"], m["failures"]) for m in rounds] == [(2, 1, 1), (2, 1, 1)]
    adapters = load_checkpoint(run_dir / "checkpoints" / "server_generator_round_2.pt")["global_adapters"]
    assert all(np.isfinite(t.numpy()).all() for t in adapters.values())
