"""feda2v-sim's and feda2v-deploy's exit codes from the run's status and missing partitions (the
run itself is faked here; the end-to-end faulty-node runs are in tests/test_faults.py and, for
the streamed log, the hang drill of tests/test_deployment_faults.py)."""

from __future__ import annotations

import json

import pytest

from feda2v_flwr import launch
from feda2v_flwr.deploy import cli as deploy_cli
from feda2v_flwr.reporting.metrics import missing_partitions_line


@pytest.mark.parametrize(
    ("status", "missing", "allow", "code"),
    [
        ("finished:completed", [], False, 0),
        ("finished:completed", [1], False, 3),
        ("finished:completed", [1], True, 0),
        ("finished:failed", [], False, 1),
    ],
)
def test_exit_code(tmp_path, monkeypatch, capsys, status, missing, allow, code):
    def fake_run(**kwargs):
        run_dir = kwargs["output_dir"] / kwargs["run_name"]
        run_dir.mkdir(parents=True)
        summary = {"evaluation": {"test_retrieval_top1": 0.5}, "missing_partitions": missing}
        (run_dir / "summary.json").write_text(json.dumps(summary))
        return status, run_dir

    monkeypatch.setattr(launch, "run_simulation", fake_run)
    options = ["--output-dir", str(tmp_path), "--run-name", "r", "--flwr-home", str(tmp_path / "fh")]
    if allow:
        options += ["--set", "federation.allow_missing_nodes=true"]
    assert launch.main(options) == code
    if code == 3:
        assert "Partitions [1] never contributed a valid update" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("status", "missing", "allow", "code"),
    [
        ("finished:completed", [], False, 0),
        ("finished:completed", [0, 2], False, 3),
        ("finished:completed", [0, 2], True, 0),
        ("finished:failed", [], False, 1),
    ],
)
def test_deploy_run_exit_code_reads_missing_partitions_from_the_server_log(
    tmp_path, monkeypatch, capsys, status, missing, allow, code
):
    """``feda2v-deploy run`` has no summary.json (it is on the server machine): the missing
    partitions come from the streamed server log, in the words the strategy logs them."""

    def fake_wait(run_id, connection, env, *, timeout, show_log, log_lines):
        log_lines += ["INFO :      Round 2/2 | 1 ok, 1 failed | 3.0 s | up 0.1 MB/node"]
        if missing:
            log_lines.append("WARNING :   " + missing_partitions_line(missing))
        return status

    monkeypatch.setattr(deploy_cli, "submit_run", lambda *args: "42")
    monkeypatch.setattr(deploy_cli, "wait_for_status", fake_wait)
    options = ["run", "--superlink", "127.0.0.1:9093", "--flwr-home", str(tmp_path / "fh"), "--run-name", "r"]
    if allow:
        options += ["--set", "federation.allow_missing_nodes=true"]
    assert deploy_cli.main(options) == code
    if code == 3:
        assert "Partitions [0, 2] never contributed a valid update" in capsys.readouterr().err
