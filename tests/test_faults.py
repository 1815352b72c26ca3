"""Client faults through ``flwr run``: a node that raises in every fit, a node whose replies hold
NaN and a node whose adapters are all 1e30 are dropped with their reasons in the metrics; the run
completes every round, the global adapters stay finite, and feda2v-sim exits 3 naming the
partitions that never contributed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import TINY
from feda2v_flwr.checkpointing.run import load_checkpoint
from feda2v_flwr.launch import main as sim_main
from feda2v_flwr.reporting import read_metrics

pytestmark = pytest.mark.slow


def test_raising_nan_and_poisoning_nodes_are_dropped_and_the_run_says_so(tmp_path, cache_dir, capsys):
    raw = json.loads(json.dumps(TINY))
    raw["federation"].update(num_clients=4, global_rounds=2)
    raw["nodes"] = {"1": {"simulate_fault": "raise"}, "2": {"simulate_fault": "nan"}, "3": {"simulate_fault": "huge"}}
    raw["data"]["cache_dir"] = str(cache_dir)
    config = tmp_path / "faulty.json"
    config.write_text(json.dumps(raw))
    common = ["--config", str(config), "--output-dir", str(tmp_path / "outputs"), "--flwr-home", str(tmp_path / "fh")]
    assert sim_main([*common, "--run-name", "faulty"]) == 3
    assert "Partitions [1] never contributed a valid update" in capsys.readouterr().err
    run_dir = tmp_path / "outputs" / "faulty"
    assert json.loads((run_dir / "summary.json").read_text())["missing_partitions"] == [1]
    metrics = read_metrics(run_dir / "metrics.jsonl")
    fits = [m for m in metrics if m["phase"] == "fit"]
    assert [m["round"] for m in fits] == [1, 2]
    for fit in fits:
        # nodes 2 and 3: their adapters are dropped, their class statistics serve the server step
        assert sorted(fit["clients"]) == ["0", "2", "3"]
        assert len(fit["failures"]) == 1 and "simulated fault on node 1" in fit["failures"][0]
        reasons = {d["partition_id"]: d["reason"] for d in fit["dropped"]}
        assert sorted(reasons) == ["2", "3"] and all(r.startswith("adapters dropped") for r in reasons.values())
        assert "NaN" in reasons["2"] and "values up to 1e+30, beyond federation.max_abs_value" in reasons["3"]
    rounds = [m for m in metrics if m["phase"] == "round"]
    assert [(m["num_updates"], m["dropped"], m["adapters_dropped"]) for m in rounds] == [(3, 0, 2)] * 2
    adapters = load_checkpoint(run_dir / "checkpoints" / "server_generator_round_2.pt")["global_adapters"]
    assert all(np.isfinite(t.numpy()).all() and t.abs().max() < 1e6 for t in adapters.values())
