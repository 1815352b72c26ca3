"""The Flower-native path: the README's plain ``flwr run .`` (Flower starts its own local
SuperLink), with a private FLWR_HOME and ports; every process it starts is stopped by PID."""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest

from feda2v_flwr.config.paths import PROJECT_ROOT
from feda2v_flwr.processes import flower_binary, flower_env, free_port, marked_processes, stop_marked_processes
from feda2v_flwr.reporting import read_metrics

pytestmark = pytest.mark.slow

FEDERATION = "num-supernodes={} client-resources-num-cpus=1 client-resources-num-gpus=0.0"


@pytest.fixture
def flwr_env(tmp_path):
    """Environment for ``flwr``: private FLWR_HOME and local SuperLink ports, and a launch marker
    inherited by the SuperLink ``flwr run`` starts, its simulation process and Ray's workers."""
    env = flower_env(tmp_path / "flwr-home")
    launch_id = uuid.uuid4().hex
    env.update(
        FEDA2V_LAUNCH_ID=launch_id,
        FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=str(free_port()),
        FLWR_LOCAL_CONTROL_API_PORT=str(free_port()),
        HF_HUB_OFFLINE="1",
        RAY_DEFAULT_OBJECT_STORE_MEMORY_PROPORTION="0.05",
    )
    yield env
    stop_marked_processes(launch_id)
    assert not marked_processes(launch_id), "a process of this launch outlived the test"


def _flwr_run(env: dict, tmp_path, overrides: str, *federation: str) -> tuple[str, str, float]:
    """``flwr run . --stream`` from the project folder as the README shows it (outputs and caches
    under ``tmp_path``); returns (final status from ``flwr ls``, streamed log, seconds)."""
    run_config = (
        f'config="configs/default.json" overrides="{overrides}; data.cache_dir={tmp_path}/cache; wandb.enabled=false" '
        f'output-dir="{tmp_path}/outputs" run-name="plain"'
    )
    command = [flower_binary("flwr"), "run", ".", "--stream", "--run-config", run_config]
    for value in federation:
        command += ["--federation-config", value]
    started = time.monotonic()
    streamed = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.monotonic() - started
    listed = subprocess.run(
        [flower_binary("flwr"), "ls", "--format", "json"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True
    )
    (run,) = json.loads(listed.stdout)["runs"]
    return run["status"], streamed.stdout + streamed.stderr, seconds


def test_plain_flwr_run_completes(flwr_env, tmp_path):
    status, log, _ = _flwr_run(
        flwr_env, tmp_path, "federation.global_rounds=1; data.clips_per_class=10", FEDERATION.format(5)
    )
    assert status == "finished:completed", log[-3000:]
    run_dir = tmp_path / "outputs" / "plain"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["round"] == 1 and 0 <= summary["evaluation"]["test_retrieval_top1"] <= 1
    fits = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [len(m["clients"]) for m in fits if m["phase"] == "fit"] == [5], "every node trained"


def test_plain_flwr_run_with_flowers_default_two_nodes_fails_fast_and_says_why(flwr_env, tmp_path):
    # No --federation-config: Flower simulates 2 SuperNodes while the config asks for 5.
    status, log, _ = _flwr_run(flwr_env, tmp_path, "federation.global_rounds=1")
    assert status == "finished:failed"
    # Fast: before any node trained (no round was configured); a wall-clock bound here failed on a loaded machine.
    metrics = tmp_path / "outputs" / "plain" / "metrics.jsonl"
    assert not metrics.exists() or "fit" not in {m["phase"] for m in read_metrics(metrics)}
    assert "federation.num_clients is 5 but 2 SuperNodes are connected" in log, log[-3000:]
    assert '--federation-config "num-supernodes=5"' in log and "federation.num_clients=2" in log
