"""Deployment fault drills on loopback, as Flower's own reconnection tests do them: a SuperNode
crashed mid-round and restarted, a node that hangs past ``federation.round_timeout``, and a
SuperLink crashed and restarted on its persisted state. Real processes (subprocess isolation),
each started and stopped by PID; every wait is bounded."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_deployment import _config_file

from feda2v_flwr.deploy.loopback import CONNECTION, LoopbackDeployment
from feda2v_flwr.processes import marked_processes
from feda2v_flwr.reporting import read_metrics
from feda2v_flwr.reporting.metrics import reported_missing_partitions

# drill: scripts/test.sh runs these beside the other tests (they mostly wait on Flower's timeouts).
pytestmark = [pytest.mark.slow, pytest.mark.drill]


def _wait(condition: Callable[[], bool], what: str, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting {timeout:.0f} s for {what}"
        time.sleep(0.05)


def _metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return read_metrics(path) if path.exists() else []


def _in_background(deployment: LoopbackDeployment, config: Path, run_name: str) -> tuple[threading.Thread, dict]:
    """Submit a run and wait for its end on a thread (the test meanwhile breaks things)."""
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(outcome=deployment.run(config, run_name=run_name)))
    thread.start()
    return thread, result


def _contributors(metrics: list[dict], server_round: int) -> list[int]:
    (fit,) = [m for m in metrics if m["phase"] == "fit" and m["round"] == server_round]
    return sorted(c["partition_id"] for c in fit["clients"].values())


def test_a_supernode_killed_mid_round_is_left_out_and_rejoins_when_restarted(tmp_path, cache_dir):
    config = _config_file(tmp_path, cache_dir, global_rounds=2, min_fit_clients=1)
    with LoopbackDeployment(tmp_path / "kill", nodes=2, cache_dir=cache_dir) as deployment:
        node_log = deployment.logs / "supernode-1-1.log"
        thread, result = _in_background(deployment, config, "kill")
        run_dir = deployment.workdir / "outputs" / "kill"
        _wait(lambda: "Receiving: train message" in node_log.read_text(errors="replace"), "node 1's first fit")
        deployment.crash(deployment.supernodes[1])  # SIGKILL mid-round: no goodbye to the SuperLink
        # the SuperLink notices the missing heartbeats (Flower: 2 x 30 s), the round ends without it
        _wait(lambda: any(m["phase"] == "round" for m in _metrics(run_dir)), "round 1 without node 1")
        deployment.start_supernode(1, name="node-1-restarted")
        thread.join(timeout=600)
        assert not thread.is_alive()
    assert result["outcome"] == ("finished:completed", run_dir)
    metrics = _metrics(run_dir)
    first = next(m for m in metrics if m["phase"] == "fit" and m["round"] == 1)
    assert _contributors(metrics, 1) == [0]
    assert len(first["failures"]) == 1 and "Node Unavailable" in first["failures"][0]
    assert _contributors(metrics, 2) == [0, 1]  # the restarted node took partition 1 back
    assert json.loads((run_dir / "summary.json").read_text())["missing_partitions"] == []
    assert not marked_processes(deployment.marker)


def test_a_node_that_hangs_is_counted_failed_at_the_round_timeout(tmp_path, cache_dir):
    # a timeout well above a round's 15-30 s here (each message starts a ClientApp process)
    config = _config_file(tmp_path, cache_dir, global_rounds=1, min_fit_clients=1, round_timeout=60.0, eval_gap=0)
    raw = json.loads(config.read_text())
    raw["nodes"] = {"1": {"simulate_fault": "hang"}}
    config.write_text(json.dumps(raw))
    server_log: list[str] = []
    with LoopbackDeployment(tmp_path / "hang", nodes=2, cache_dir=cache_dir) as deployment:
        status, run_dir = deployment.run(config, run_name="hang", timeout=600, log_lines=server_log)
    assert status == "finished:completed"
    metrics = _metrics(run_dir)
    rounds = [m for m in metrics if m["phase"] == "round"]
    assert [(m["round"], m["num_updates"], m["failures"]) for m in rounds] == [(1, 1, 1)]
    assert _contributors(metrics, 1) == [0]
    # Ended by the timeout: not before it, and before node 1's hang (2 x round_timeout) could end.
    assert 60.0 <= rounds[0]["fit_round_s"] < 2 * 60.0
    (fit,) = [m for m in metrics if m["phase"] == "fit"]
    assert "Message Unavailable" in fit["failures"][0]  # its message expired at the timeout
    assert json.loads((run_dir / "summary.json").read_text())["missing_partitions"] == [1]
    # what `feda2v-deploy run` reads from the streamed log, where it has no summary.json (exit 3)
    assert reported_missing_partitions(server_log) == [1]
    assert not marked_processes(deployment.marker)


def test_a_superlink_restarted_on_its_database_lets_the_run_resume_with_nothing_lost(tmp_path, cache_dir):
    config = _config_file(tmp_path, cache_dir, global_rounds=2)
    state = tmp_path / "superlink-state"
    with LoopbackDeployment(tmp_path / "link", nodes=2, cache_dir=cache_dir, state_dir=state) as deployment:
        thread, result = _in_background(deployment, config, "link")
        run_dir = deployment.workdir / "outputs" / "link"
        checkpoint = run_dir / "checkpoints" / "server_generator_round_1.pt"
        _wait(checkpoint.exists, "round 1's checkpoint")
        nodes_before = _node_ids(deployment)
        deployment.restart_superlink()  # SIGKILL, then the same port and state.db
        thread.join(timeout=120)
        assert result["outcome"][0] == "finished:failed"  # its ServerApp died with the SuperLink
        assert _node_ids(deployment) == nodes_before  # the nodes reconnected under their persisted ids
        status, _ = deployment.run(config, run_name="link", resume=str(run_dir), timeout=600)
    assert status == "finished:completed"
    metrics = _metrics(run_dir)
    assert [m["round"] for m in metrics if m["phase"] == "round"] == [1, 2]  # each once
    assert _contributors(metrics, 2) == [0, 1]
    assert (run_dir / "checkpoints" / "server_generator_round_2.pt").exists()
    assert [m["round"] for m in metrics if m["phase"] == "evaluate"][-1] == 2
    assert not marked_processes(deployment.marker)


def _node_ids(deployment: LoopbackDeployment) -> list[str]:
    listed = deployment.flwr("supernode", "list", CONNECTION, "--format", "json")
    assert listed.returncode == 0, listed.stderr
    return sorted(node["node-id"] for node in json.loads(listed.stdout)["nodes"] if node["status"] == "online")
