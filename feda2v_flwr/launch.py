"""``feda2v-sim``: run a FedA2V simulation with ``flwr run`` and report whether it really succeeded.

It validates the config first (errors before anything starts), starts its own simulation
SuperLink (own ``FLWR_HOME`` and port, runtime dependency installation off), submits the run,
streams its log, checks the run status (``flwr run --stream`` exits 0 even on failure), stops
the SuperLink by PID and exits non-zero unless the run finished as completed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil

from feda2v_flwr.checkpoint import CheckpointError, find_checkpoint, load_checkpoint
from feda2v_flwr.config import ConfigError, load_config
from feda2v_flwr.config.loading import PROJECT_ROOT
from feda2v_flwr.resume import check_resumable, run_folder_of

CONNECTION = "feda2v-sim"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"flower-superlink exited early with code {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise RuntimeError(f"flower-superlink did not open port {port} within {timeout:.0f} s")


def _bin(name: str) -> str:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or name)


def simulation_env(flwr_home: Path) -> dict[str, str]:
    env = dict(os.environ)
    # The SuperLink starts flower-superexec / flwr-simulation by name: use this environment's copies.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(
        FLWR_HOME=str(flwr_home),
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        FLWR_DISABLE_UPDATE_CHECK="1",
        HF_HUB_OFFLINE="1",
        RAY_DEFAULT_OBJECT_STORE_MEMORY_PROPORTION=env.get("RAY_DEFAULT_OBJECT_STORE_MEMORY_PROPORTION", "0.05"),
        RAY_DEDUP_LOGS=env.get("RAY_DEDUP_LOGS", "0"),
        TOKENIZERS_PARALLELISM="false",
    )
    return env


def run_simulation(
    *,
    config: str,
    overrides: str,
    run_name: str,
    output_dir: Path,
    flwr_home: Path,
    num_cpus_per_client: int = 1,
    num_gpus_per_client: float = 0.0,
    app_dir: Path = PROJECT_ROOT,
    stream: bool = True,
    resume: str = "",
    stop_after_round: int = 0,
) -> tuple[str, Path]:
    """Run one simulation to the end. Returns (final status, run directory)."""
    experiment = load_config(config, overrides)
    flwr_home.mkdir(parents=True, exist_ok=True)
    env = simulation_env(flwr_home)
    launch_id = env["FEDA2V_LAUNCH_ID"] = uuid.uuid4().hex  # marks every process this launch starts
    port = _free_port()
    (flwr_home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        f'address = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    log_file = open(flwr_home / "superlink.log", "ab")  # noqa: SIM115 (closed in finally)
    superlink = subprocess.Popen(
        [
            _bin("flower-superlink"),
            "--insecure",
            "--simulation",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--database",
            ":flwr-in-memory:",
            "--disable-runtime-dependency-installation",
        ],
        cwd=os.getcwd(),  # relative paths in the config resolve against where the user runs
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_for_port(port, superlink)
        values = {
            "config": config,
            "overrides": overrides,
            "run-name": run_name,
            "output-dir": str(output_dir),
            "resume": resume,
            "stop-after-round": stop_after_round,
        }
        # A TOML file, not "k=v" pairs: flwr's pair parser cannot carry quotes inside values.
        run_config = flwr_home / f"run-config-{run_name}.toml"
        run_config.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items()))
        federation = (
            f"num-supernodes={experiment.federation.num_clients} "
            f"client-resources-num-cpus={num_cpus_per_client} client-resources-num-gpus={num_gpus_per_client}"
        )
        submitted = subprocess.run(
            [
                _bin("flwr"),
                "run",
                str(app_dir),
                CONNECTION,
                "--format",
                "json",
                "--run-config",
                str(run_config),
                "--federation-config",
                federation,
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        try:
            run_id = str(json.loads(submitted.stdout)["run-id"])
        except (json.JSONDecodeError, KeyError):
            raise RuntimeError(f"flwr run did not start a run:\n{submitted.stdout}\n{submitted.stderr}") from None
        print(f"Submitted run {run_id}; outputs in {output_dir / run_name}", flush=True)
        if stream:
            subprocess.run([_bin("flwr"), "log", run_id, CONNECTION, "--stream"], env=env, check=False)
        status = _wait_for_status(run_id, env)
        return status, output_dir / run_name
    finally:
        # the simulation process (ServerApp + Ray) first: it would go on training rounds while the
        # SuperLink shuts down (after a SIGTERM it ran two more rounds on a loaded machine)
        _stop_leftovers(launch_id, keep=superlink.pid)
        superlink.send_signal(signal.SIGTERM)
        try:
            superlink.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(superlink.pid, signal.SIGKILL)
            superlink.wait()
        log_file.close()
        _stop_leftovers(launch_id)


def _stop_leftovers(launch_id: str, timeout: float = 30.0, keep: int | None = None) -> None:
    """After an interrupted run the SuperLink's simulation process and its Ray workers outlive
    it: stop every process this launch started but ``keep`` (SIGTERM, then SIGKILL after
    ``timeout``)."""
    mine = []
    for process in psutil.process_iter():
        try:
            if process.pid not in (os.getpid(), keep) and process.environ().get("FEDA2V_LAUNCH_ID") == launch_id:
                mine.append(process)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    for process in mine:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(mine, timeout=timeout)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


def _wait_for_status(run_id: str, env: dict[str, str], timeout: float = 7200.0) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        listed = subprocess.run(
            [_bin("flwr"), "ls", CONNECTION, "--run-id", run_id, "--format", "json"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        try:
            status = json.loads(listed.stdout)["runs"][0]["status"]
        except (json.JSONDecodeError, KeyError, IndexError):
            status = "unknown"
        if status.startswith("finished"):
            return status
        time.sleep(1.0)
    return "unknown:timeout"


def _exit_on_sigterm(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up short
    sys.exit(128 + signum)


def _resumed_run_folder(resume: Path) -> Path | None:
    """The run folder a resume path belongs to (it, or a checkpoint file / folder inside it)."""
    resume = resume.resolve()
    if (resume / "config.json").is_file() and (resume / "metrics.jsonl").exists():
        return resume
    return run_folder_of(find_checkpoint(resume)) if resume.exists() else None


def _check_resume(config: str, overrides: str, resume: str, stop_after_round: int) -> None:
    """The resume mistakes the ServerApp would refuse, refused here before anything starts."""
    experiment = load_config(config, overrides)
    path = find_checkpoint(Path(resume).resolve())
    payload = load_checkpoint(path)
    check_resumable(experiment, payload, path)
    if stop_after_round and stop_after_round <= payload["round"]:
        raise ConfigError(
            f"--stop-after-round {stop_after_round} is not after the checkpoint's round {payload['round']}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="feda2v-sim", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", help="experiment JSON (project-relative ok; default configs/default.json, or the resumed run's)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override any JSON key (repeatable), e.g. --set federation.global_rounds=3",
    )
    parser.add_argument("--run-name", default="", help="run folder name (default: config name + time)")
    parser.add_argument("--output-dir", default="outputs", help="where run folders are written")
    parser.add_argument("--flwr-home", default=".flwr-home", help="Flower state for this launcher")
    parser.add_argument("--num-cpus-per-client", type=int, default=1)
    parser.add_argument("--num-gpus-per-client", type=float, default=0.0)
    parser.add_argument(
        "--resume",
        metavar="RUN_OR_CHECKPOINT",
        default="",
        help="continue a stopped run: its folder (outputs/<run>: same folder, its config.json) or a checkpoint",
    )
    parser.add_argument(
        "--stop-after-round", type=int, default=0, help="end this session after that round (checkpointed)"
    )
    args = parser.parse_args(argv)

    config, run_name, output_dir = args.config, args.run_name, Path(args.output_dir)
    resumed_run = _resumed_run_folder(Path(args.resume)) if args.resume else None
    if resumed_run is not None:  # continue in the run's own folder, with its own config
        config = config or str(resumed_run / "config.json")
        if not run_name:
            run_name, output_dir = resumed_run.name, resumed_run.parent
    config = config or "configs/default.json"
    overrides = "; ".join(args.set)
    run_name = run_name or f"{Path(config).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        load_config(config, overrides)
        if args.resume:
            _check_resume(config, overrides, args.resume, args.stop_after_round)
    except (ConfigError, CheckpointError) as err:
        print(err, file=sys.stderr)
        return 2
    # SIGTERM (a scheduler's kill, `kill`) unwinds like Ctrl-C: the SuperLink is stopped and the
    # last complete checkpoint stays loadable (checkpoints are written atomically).
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    start = time.time()
    status, run_dir = run_simulation(
        config=config,
        overrides=overrides,
        run_name=run_name,
        output_dir=output_dir.resolve(),
        flwr_home=Path(args.flwr_home).resolve(),
        num_cpus_per_client=args.num_cpus_per_client,
        num_gpus_per_client=args.num_gpus_per_client,
        resume=str(Path(args.resume).resolve()) if args.resume else "",
        stop_after_round=args.stop_after_round,
    )
    print(f"\nRun status: {status} after {time.time() - start:.0f} s")
    summary = run_dir / "summary.json"
    if summary.exists():
        evaluation = json.loads(summary.read_text()).get("evaluation", {})
        if "test_retrieval_top1" in evaluation:
            print(f"Final test retrieval top-1: {evaluation['test_retrieval_top1']:.3f}")
    print(f"Outputs: {run_dir}")
    return 0 if status == "finished:completed" else 1


if __name__ == "__main__":
    sys.exit(main())
