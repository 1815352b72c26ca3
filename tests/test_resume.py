"""Resume and determinism, end to end through ``flwr run`` on the tiny config (CPU, full
participation): a stopped-and-resumed run equals an uninterrupted one bit for bit, two runs with
one seed are identical, another seed differs, and a SIGTERM mid-round leaves a resumable run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest
import torch

from conftest import TINY, simulate
from feda2v_flwr.checkpointing.resume import check_resumable, trim_metrics
from feda2v_flwr.checkpointing.run import load_checkpoint
from feda2v_flwr.config.loading import validate_config
from feda2v_flwr.config.paths import PROJECT_ROOT, ConfigError
from feda2v_flwr.reporting import read_metrics

pytestmark = pytest.mark.slow

ROUNDS = 4
# Wall-clock timings, file locations, and encoder passes (the runs share one embedding cache).
VOLATILE = ("_s", "seconds", "path", "timestamp", "encoder_calls")


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    """The tiny config with a checkpoint every round and client generators (their state must
    survive a resume too)."""
    folder = tmp_path_factory.mktemp("resume")
    raw = json.loads(json.dumps(TINY))
    raw["feda2v"].update(generator_checkpoint_frequency=1, generator_training_mode=True)
    raw["federation"].update(global_rounds=ROUNDS, local_epochs=1)
    raw["data"]["cache_dir"] = str(folder / "cache")
    path = folder / "tiny.json"
    path.write_text(json.dumps(raw))
    return path


def _run(tmp_path, config_file, name, overrides="", **options):
    status, run_dir = simulate(tmp_path, config_file, name, overrides, **options)
    assert status == "finished:completed", run_dir
    return run_dir


def _final(run_dir):
    return load_checkpoint(run_dir / "checkpoints" / f"server_generator_round_{ROUNDS}.pt")


def _same_tensors(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_tensors(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same_tensors(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a == b


def _metrics(run_dir) -> list[dict]:
    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if not k.endswith(VOLATILE)}
        return value

    return [clean(m) for m in read_metrics(run_dir / "metrics.jsonl")]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, config_file):
    return _run(tmp_path_factory.mktemp("full"), config_file, "full")


def test_two_rounds_then_a_resume_equal_four_rounds_bit_for_bit(uninterrupted, config_file, tmp_path):
    first = _run(tmp_path, config_file, "split", stop_after_round=2)
    assert not (first / "checkpoints" / "server_generator_round_3.pt").exists()
    assert sorted(p.name for p in (first / "client_state").iterdir())[:2] == ["node_0_round_1.pt", "node_0_round_2.pt"]
    resumed = _run(tmp_path, config_file, "split", resume=str(first))
    assert resumed == first
    full, split = _final(uninterrupted), _final(resumed)
    for key in ("global_adapters", "generator_state", "generator_optimizer_state", "finetune_optimizer_state"):
        assert _same_tensors(full[key], split[key]), key
    assert torch.equal(full["rng_state"], split["rng_state"]) and full["generator_epochs"] == split["generator_epochs"]
    assert _metrics(uninterrupted) == _metrics(resumed)
    # The nodes' own generators and optimizers went on as well.
    for node in (0, 1):
        name = f"client_generator_node{node}_unified_round_{ROUNDS}.pt"
        a = torch.load(uninterrupted / "client_generators" / name, weights_only=True)
        b = torch.load(resumed / "client_generators" / name, weights_only=True)
        assert _same_tensors(a["learner"], b["learner"]), name


def test_another_seed_gives_other_bits(uninterrupted, config_file, tmp_path):
    """Same seed, same bits is shown above: a fresh two-round run, resumed, ends with the
    uninterrupted run's bits. Another seed must change them: the same four-round run, stopped
    after round 2 (the oldest checkpoint the uninterrupted run keeps), with only the seed changed."""
    other = _run(tmp_path, config_file, "other", overrides="training.seed=7", stop_after_round=2)
    same_round = load_checkpoint(uninterrupted / "checkpoints" / "server_generator_round_2.pt")
    changed = load_checkpoint(other / "checkpoints" / "server_generator_round_2.pt")
    assert not _same_tensors(same_round["global_adapters"], changed["global_adapters"])


def test_a_run_killed_by_sigterm_mid_round_resumes_to_the_end(config_file, tmp_path):
    # more rounds than the other tests: tiny rounds take about a second, and on a loaded machine
    # the shutdown after SIGTERM can take longer than two of them
    rounds = 12
    raw = json.loads(config_file.read_text())
    raw["federation"]["global_rounds"] = rounds
    long_config = tmp_path / "long.json"
    long_config.write_text(json.dumps(raw))
    command = [sys.executable, "-m", "feda2v_flwr.launch", "--config", str(long_config)]
    common = ["--output-dir", str(tmp_path / "outputs"), "--flwr-home", str(tmp_path / "flwr-home")]
    env = {**os.environ, "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
    run_dir = tmp_path / "outputs" / "killed"
    process = subprocess.Popen([*command, *common, "--run-name", "killed"], cwd=PROJECT_ROOT, env=env)
    deadline = time.time() + 300
    while not (run_dir / "checkpoints" / "server_generator_round_2.pt").exists():  # then mid round 3
        assert process.poll() is None and time.time() < deadline, "the run ended before round 2's checkpoint"
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) != 0
    assert not _processes_with_flwr_home(tmp_path / "flwr-home")  # SuperLink, simulation, Ray: all stopped
    latest = load_checkpoint(run_dir / "checkpoints" / "server_generator_latest.json")
    assert 2 <= latest["round"] < rounds, "the kill came after the last round: nothing left to resume"
    resumed = subprocess.run([*command, *common, "--resume", str(run_dir)], cwd=PROJECT_ROOT, env=env, timeout=600)
    assert resumed.returncode == 0
    done = [m["round"] for m in read_metrics(run_dir / "metrics.jsonl") if m["phase"] == "round"]
    assert done == list(range(1, rounds + 1))  # each round once: the unfinished one was dropped and rerun


def _processes_with_flwr_home(flwr_home) -> list[str]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if process.environ().get("FLWR_HOME") == str(flwr_home):
                found.append(" ".join(process.info["cmdline"] or []))
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def test_a_changed_architecture_is_refused_naming_the_keys(uninterrupted):
    payload = _final(uninterrupted)
    raw = json.loads(payload["config"])
    raw["federation"]["global_rounds"] = ROUNDS + 2  # more rounds: allowed
    check_resumable(validate_config(raw), payload, uninterrupted)
    raw["feda2v"]["adapter_width"] = 64
    raw["training"]["seed"] = 1
    with pytest.raises(ConfigError, match=r"feda2v.adapter_width \(32 -> 64\), training.seed \(42 -> 1\)"):
        check_resumable(validate_config(raw), payload, uninterrupted)
    raw = json.loads(payload["config"])
    with pytest.raises(ConfigError, match="nothing left to run"):
        check_resumable(validate_config(raw), payload, uninterrupted)


def _without_final_evaluation(run_dir, copy_to):
    """The run folder as a SIGTERM during the last round's evaluation leaves it: the last round
    trained and checkpointed, its evaluation line not yet written."""
    shutil.copytree(run_dir, copy_to)
    lines = (copy_to / "metrics.jsonl").read_text().splitlines()
    phases = [(json.loads(line)["phase"], json.loads(line)["round"]) for line in lines]
    assert phases[-1] == ("evaluate", ROUNDS)
    (copy_to / "metrics.jsonl").write_text("".join(line + "\n" for line in lines[:-1]) + '{"round": 4, "pha')
    return copy_to


def test_a_run_stopped_before_its_final_evaluation_resumes_to_it(uninterrupted, config_file, tmp_path):
    stopped = _without_final_evaluation(uninterrupted, tmp_path / "outputs" / "stopped")
    final = stopped / "checkpoints" / f"server_generator_round_{ROUNDS}.pt"
    written = final.stat().st_mtime_ns
    resumed = _run(tmp_path, config_file, "stopped", resume=str(stopped))
    assert resumed == stopped
    assert _metrics(resumed) == _metrics(uninterrupted)  # the same final evaluation, nothing trained again
    assert final.stat().st_mtime_ns == written
    summary, expected = (json.loads((run / "summary.json").read_text()) for run in (resumed, uninterrupted))
    assert summary["evaluation"] == expected["evaluation"] and summary["last_round"] == ROUNDS
    with pytest.raises(ConfigError, match="nothing left to run"):  # and now it is complete
        check_resumable(validate_config(json.loads(_final(resumed)["config"])), _final(resumed), final)


def test_only_a_missing_final_evaluation_is_resumed_alone(uninterrupted, tmp_path):
    from test_node_count import manager_with

    from feda2v_flwr.server_app import build_strategy

    stopped = _without_final_evaluation(uninterrupted, tmp_path / "stopped")
    config = validate_config(json.loads(_final(uninterrupted)["config"]))
    strategy = build_strategy(config, stopped, resume=str(stopped))
    assert (strategy.recipe.evaluation_only, strategy.recipe.start_round, strategy.recipe.last_round) == (
        True,
        ROUNDS - 1,
        ROUNDS,
    )
    assert strategy.configure_fit(1, strategy.initial_parameters, manager_with(2)) == []
    assert read_metrics(stopped / "metrics.jsonl")[-1]["phase"] != "evaluate"  # the cut-short line is gone
    # a run that never evaluates has nothing left after its last checkpoint
    quiet = config.model_copy(update={"federation": config.federation.model_copy(update={"eval_gap": 0})})
    with pytest.raises(ConfigError, match="nothing left to run"):
        check_resumable(quiet, _final(stopped), stopped / "checkpoints" / f"server_generator_round_{ROUNDS}.pt")


def test_trimming_drops_the_unfinished_rounds(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"round": r, "phase": "fit"}) + "\n" for r in (1, 2, 3, 3)))
    assert trim_metrics(path, 2) == 2
    assert [m["round"] for m in read_metrics(path)] == [1, 2]


def test_resuming_trims_unfinished_rounds_and_carries_node_state_to_a_new_folder(tmp_path, cache_dir):
    from test_checkpoint import write_server_checkpoint

    from conftest import tiny_config
    from feda2v_flwr.checkpointing.nodes import load_client_state, save_client_state
    from feda2v_flwr.server_app import build_strategy

    run = tmp_path / "run"
    checkpoint = write_server_checkpoint(run, cache_dir)  # round 1 of 2
    lines = [json.dumps({"round": r, "phase": p}) for r, p in ((1, "fit"), (1, "round"), (2, "fit"))]
    (run / "metrics.jsonl").write_text("\n".join(lines) + '\n{"round": 2, "pha')  # killed mid-write
    save_client_state(run / "client_state", 0, 1, {"optimizer": b"\x00\x01"}, keep_last=3)
    config = tiny_config(data={"cache_dir": str(cache_dir)})

    with pytest.raises(ConfigError, match="stop-after-round 1 is not after the resumed round 1"):
        build_strategy(config, run, resume=str(run), stop_after_round=1)
    strategy = build_strategy(config, run, resume=str(run))
    assert (strategy.recipe.start_round, strategy.recipe.last_round) == (1, 2)
    assert [(m["round"], m["phase"]) for m in read_metrics(run / "metrics.jsonl")] == [(1, "fit"), (1, "round")]

    other = build_strategy(config, tmp_path / "other", resume=str(checkpoint))
    assert other.recipe.start_round == 1
    restored = load_client_state(tmp_path / "other" / "client_state", 0, before_round=2)
    assert restored == {"optimizer": b"\x00\x01"}


def test_a_checkpoint_from_before_a_new_config_key_still_resumes(uninterrupted):
    payload = dict(load_checkpoint(uninterrupted / "checkpoints" / "server_generator_round_2.pt"))
    raw = json.loads(payload["config"])
    del raw["feda2v"]["transfer_dtype"]  # written by a version without that key
    payload["config"] = json.dumps(raw)
    config = json.loads(_final(uninterrupted)["config"])
    check_resumable(validate_config(config), payload, uninterrupted)
