"""Deployment on loopback: a real SuperLink and SuperNodes (insecure; TLS + node authentication),
the refusals, and a simulation on an existing Ray cluster. Every process is stopped by PID and
checked gone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import TINY, simulate
from feda2v_flwr.deploy.cli import main as deploy_main
from feda2v_flwr.deploy.loopback import CONNECTION, LoopbackDeployment
from feda2v_flwr.processes import flower_binary, free_port, marked_processes, stop_marked_processes
from feda2v_flwr.reporting import read_metrics

pytestmark = pytest.mark.slow


def _config_file(tmp_path, cache_dir, **federation):
    """The tiny config with its cache in ``cache_dir`` and ``federation`` settings changed."""
    raw = json.loads(json.dumps(TINY))
    raw["data"]["cache_dir"] = str(cache_dir)
    raw["federation"].update(federation)
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(raw))
    return path


def _assert_trained_on_both_nodes(status, run_dir):
    assert status == "finished:completed"
    metrics = read_metrics(run_dir / "metrics.jsonl")
    fits = [m for m in metrics if m["phase"] == "fit"]
    assert [m["round"] for m in fits] == [1, 2]
    for fit in fits:  # the partition ids came from each SuperNode's --node-config
        assert sorted(c["partition_id"] for c in fit["clients"].values()) == [0, 1]
    rounds = [m for m in metrics if m["phase"] == "round"]
    assert all(m["num_updates"] == 2 and m["fit_round_s"] > 0 for m in rounds)
    assert (run_dir / "checkpoints" / "server_generator_round_2.pt").exists()


def test_insecure_deployment_completes(tmp_path, cache_dir):
    # process isolation: the Docker topology (SuperExecs run the ServerApp and each node's ClientApps)
    workdir = tmp_path / "insecure"
    with LoopbackDeployment(workdir, nodes=2, cache_dir=cache_dir, isolation="process") as deployment:
        status, run_dir = deployment.run(_config_file(tmp_path, cache_dir), run_name="insecure", timeout=600)
        assert all(p.poll() is None for p in [*deployment.supernodes, *deployment.superexecs])
        assert len(deployment.superexecs) == 3
    _assert_trained_on_both_nodes(status, run_dir)
    assert run_dir.parent == workdir / "outputs"
    assert not marked_processes(deployment.marker)


def test_tls_with_node_authentication_completes(tmp_path, cache_dir):
    """The user's path: register keys and submit the run with ``feda2v-deploy``; state on disk."""
    workdir, state = tmp_path / "tls", tmp_path / "tls" / "superlink-state"
    with LoopbackDeployment(
        workdir, nodes=2, tls=True, node_auth=True, cache_dir=cache_dir, start_nodes=False, state_dir=state
    ) as deployment:
        assert "Uvicorn running on https://" in (deployment.logs / "superlink.log").read_text()
        assert (state / "state.db").exists()
        common = ["--superlink", deployment.address, "--ca", str(deployment.certs.ca)]
        common += ["--flwr-home", str(deployment.flwr_home)]
        for partition_id in range(2):
            assert deploy_main(["register", str(deployment.certs.node_public_key(partition_id)), *common]) == 0
            deployment.start_supernode(partition_id)
        listed = deployment.flwr("supernode", "list", CONNECTION, "--format", "json")
        assert listed.returncode == 0, listed.stderr
        code = deploy_main(
            ["run", *common, "--config", str(_config_file(tmp_path, cache_dir)), "--run-name", "tls"]
            + ["--output-dir", str(workdir / "outputs"), "--no-stream", "--timeout", "600"]
        )
    assert code == 0
    _assert_trained_on_both_nodes("finished:completed", workdir / "outputs" / "tls")
    assert not marked_processes(deployment.marker)


def test_unregistered_node_and_plain_http_are_refused(tmp_path):
    with LoopbackDeployment(tmp_path / "refusals", nodes=2, tls=True, node_auth=True, start_nodes=False) as deployment:
        registered = deployment.register(deployment.certs.node_public_key(0))
        assert "registered successfully" in registered.stdout
        # node 1's key was never registered: the SuperLink refuses to activate it
        stranger = deployment.start_supernode(1, name="unregistered")
        assert stranger.wait(timeout=90) != 0
        assert "Failed to activate SuperNode" in (deployment.logs / "unregistered.log").read_text()
        # a SuperNode dialling the TLS port over plain HTTP never connects and gives up
        plain = deployment.start_supernode(0, plain_http=True, max_retries=2, name="plain-http")
        assert plain.wait(timeout=120) != 0
        assert "Connection attempt failed" in (deployment.logs / "plain-http.log").read_text()
        # nor does the flwr CLI over plain HTTP
        (deployment.flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "plain"\n\n[superlink.plain]\naddress = "{deployment.address}"\ninsecure = true\n'
        )
        refused = json.loads(deployment.flwr("ls", "plain", "--format", "json").stdout)
        assert refused["success"] is False and "unavailable" in refused["error-message"].lower()
    assert not marked_processes(deployment.marker)


def test_simulation_runs_on_an_existing_ray_cluster(tmp_path, cache_dir):
    marker = f"ray-cluster-{time.time_ns()}"
    port = free_port()
    temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # Ray's socket paths must stay under 108 bytes
    head = [flower_binary("ray"), "start", "--head", "--num-cpus", "2", "--port", str(port)]
    head += ["--temp-dir", str(temp_dir), "--include-dashboard", "false", "--disable-usage-stats"]
    try:
        started = subprocess.run(
            head,
            env={**os.environ, "FEDA2V_LAUNCH_ID": marker},  # the cluster's daemons carry the marker
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert started.returncode == 0, started.stdout + started.stderr
        status, run_dir = simulate(tmp_path, _config_file(tmp_path, cache_dir), "ray", ray_address=f"127.0.0.1:{port}")
        assert status == "finished:completed"
        assert read_metrics(run_dir / "metrics.jsonl")[-1]["phase"] == "evaluate"
        # the ClientApps ran as actors of that cluster: their worker logs are in its session folder
        worker_logs = (temp_dir / "session_latest" / "logs").glob("worker-*.out")
        actors = [path for path in worker_logs if ":actor_name:ClientAppActor" in path.read_text(errors="replace")]
        assert len(actors) >= 1
    finally:
        stop_marked_processes(marker, timeout=20)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not marked_processes(marker)
