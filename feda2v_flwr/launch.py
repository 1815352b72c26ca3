"""``feda2v-sim``: run a FedA2V simulation with ``flwr run`` and report whether it really succeeded.

It validates the config first (errors before anything starts), starts its own simulation
SuperLink (own ``FLWR_HOME`` and port, runtime dependency installation off), submits the run,
streams its log, checks the run status (``flwr run --stream`` exits 0 even on failure), stops
the SuperLink by PID and exits non-zero unless the run finished as completed.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from feda2v_flwr.checkpointing.files import CheckpointError
from feda2v_flwr.checkpointing.resume import check_resumable, run_folder_of
from feda2v_flwr.checkpointing.run import find_checkpoint, load_checkpoint
from feda2v_flwr.config import ConfigError, load_config
from feda2v_flwr.config.loading import pinned_overrides
from feda2v_flwr.config.paths import PROJECT_ROOT
from feda2v_flwr.data.datasets import DatasetError
from feda2v_flwr.deploy.commands import superlink_command, write_connection
from feda2v_flwr.encoders import ModelLoadError
from feda2v_flwr.preflight import preflight
from feda2v_flwr.processes import (
    exit_on_sigterm,
    flower_binary,
    flower_env,
    free_port,
    run_exit_code,
    run_values,
    stop_marked_processes,
    submit_run,
    wait_for_port,
    wait_for_status,
)
from feda2v_flwr.reporting.metrics import read_summary
from feda2v_flwr.training.generator_learner import GeneratorMismatchError

CONNECTION = "feda2v-sim"


def simulation_env(flwr_home: Path) -> dict[str, str]:
    env = flower_env(flwr_home)
    env.update(
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
    ray_address: str = "",
    timeout: float = 7 * 24 * 3600.0,
) -> tuple[str, Path]:
    """Run one simulation to the end. Returns (final status, run directory).

    ``ray_address``: run the virtual clients on an existing Ray cluster (``ray start --head``)
    instead of a Ray instance started for this run. ``timeout``: give up waiting after that
    many seconds (status ``unknown:timeout``; everything started is stopped).
    """
    experiment = load_config(config, overrides)
    flwr_home.mkdir(parents=True, exist_ok=True)
    env = simulation_env(flwr_home)
    if ray_address:  # Flower's `ray.init` connects to it; init-args must then stay unset
        env["RAY_ADDRESS"] = ray_address
    launch_id = env["FEDA2V_LAUNCH_ID"] = uuid.uuid4().hex  # marks every process this launch starts
    port = free_port()
    write_connection(flwr_home, CONNECTION, f"127.0.0.1:{port}")
    log_file = open(flwr_home / "superlink.log", "ab")  # noqa: SIM115 (closed in finally)
    command = superlink_command(host="127.0.0.1", port=port, simulation=True)
    superlink = subprocess.Popen(
        [flower_binary(command[0]), *command[1:]],
        cwd=os.getcwd(),  # relative paths in the config resolve against where the user runs
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_port(port, superlink)
        values = run_values(
            config,
            overrides=overrides,
            run_name=run_name,
            output_dir=str(output_dir),
            resume=resume,
            stop_after_round=stop_after_round,
        )
        federation = (
            f"num-supernodes={experiment.federation.num_clients} "
            f"client-resources-num-cpus={num_cpus_per_client} client-resources-num-gpus={num_gpus_per_client}"
        )
        run_id = submit_run(app_dir, CONNECTION, env, values, federation_config=federation)
        print(f"Submitted run {run_id}; outputs in {output_dir / run_name}", flush=True)
        status = wait_for_status(run_id, CONNECTION, env, timeout=timeout, show_log=stream)
        return status, output_dir / run_name
    finally:
        # the simulation process (ServerApp + Ray) first: it would go on training rounds while the
        # SuperLink shuts down (after a SIGTERM it ran two more rounds on a loaded machine)
        stop_marked_processes(launch_id, keep=superlink.pid)
        superlink.send_signal(signal.SIGTERM)
        try:
            superlink.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(superlink.pid, signal.SIGKILL)
            superlink.wait()
        log_file.close()
        stop_marked_processes(launch_id)


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
        "--ray-address",
        default="",
        metavar="HOST:PORT",
        help="run the clients on an existing Ray cluster (the head's address from `ray start --head`)",
    )
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
        experiment = load_config(config, overrides)
        overrides = pinned_overrides(config, overrides, experiment)  # clip_seconds "auto": measured once, here
        if args.resume:
            _check_resume(config, overrides, args.resume, args.stop_after_round)
        preflight(experiment)  # data, classes, splits, checkpoints: before any Flower process starts
    except (ConfigError, DatasetError, CheckpointError, GeneratorMismatchError, ModelLoadError) as err:
        print(f"feda2v-sim: {err}", file=sys.stderr)
        return 2
    # SIGTERM (a scheduler's kill, `kill`) unwinds like Ctrl-C: the SuperLink is stopped and the
    # last complete checkpoint stays loadable (checkpoints are written atomically).
    signal.signal(signal.SIGTERM, exit_on_sigterm)
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
        ray_address=args.ray_address,
    )
    print(f"\nRun status: {status} after {time.time() - start:.0f} s")
    summary = read_summary(run_dir)
    evaluation = summary.get("evaluation", {})
    if "test_retrieval_top1" in evaluation:
        print(f"Final test retrieval top-1: {evaluation['test_retrieval_top1']:.3f}")
    print(f"Outputs: {run_dir}")
    missing = summary.get("missing_partitions") or []
    return run_exit_code(status, missing, allow_missing=experiment.federation.allow_missing_nodes, where=str(run_dir))


if __name__ == "__main__":
    sys.exit(main())
