"""feda2v-sim's exit code from the run's status and summary (the run itself is faked here; the
end-to-end faulty-node run is in tests/test_faults.py)."""

from __future__ import annotations

import json

import pytest

from feda2v_flwr import launch


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
