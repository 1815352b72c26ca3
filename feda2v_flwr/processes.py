"""Starting, finding and stopping Flower processes (shared by the simulation launcher,
``feda2v-deploy`` and the loopback deployments)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil


def flower_env(flwr_home: Path | None = None) -> dict[str, str]:
    """This environment's Flower binaries first, runtime dependency installation and update
    checks off (the SuperLink would otherwise build a venv per run and fetch CUDA torch)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1", FLWR_DISABLE_UPDATE_CHECK="1")
    if flwr_home is not None:
        env["FLWR_HOME"] = str(flwr_home)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 60.0) -> None:
    """Until something listens on ``port`` of 127.0.0.1 (``process`` dying first is an error)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{Path(str(process.args[0])).name} exited early with code {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise RuntimeError(f"{Path(str(process.args[0])).name} did not open port {port} within {timeout:.0f} s")


def flower_binary(name: str) -> str:
    """This environment's copy of a Flower command (the one beside the running Python) if any."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or name)


def marked_processes(launch_id: str) -> list[psutil.Process]:
    """The live processes (zombies left out) whose environment carries ``FEDA2V_LAUNCH_ID=launch_id``."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("FEDA2V_LAUNCH_ID") == launch_id and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def stop_marked_processes(launch_id: str, timeout: float = 30.0, keep: int | None = None) -> None:
    """Stop every process whose environment carries ``FEDA2V_LAUNCH_ID=launch_id`` except ``keep``
    (SIGTERM, then SIGKILL after ``timeout``): after an interrupted run the SuperLink's simulation
    process, its Ray workers and SuperExecs outlive it."""
    mine = [process for process in marked_processes(launch_id) if process.pid not in (os.getpid(), keep)]
    for process in mine:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(mine, timeout=timeout)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


def run_values(
    config: str,
    *,
    overrides: str = "",
    run_name: str = "",
    output_dir: str = "",
    resume: str = "",
    stop_after_round: int = 0,
) -> dict:
    """The ServerApp's run config (``[tool.flwr.app.config]`` in pyproject.toml) for one run."""
    return {
        "config": config,
        "overrides": overrides,
        "run-name": run_name,
        "output-dir": output_dir,
        "resume": resume,
        "stop-after-round": stop_after_round,
    }


def submit_run(
    app_dir: Path, connection: str, env: dict[str, str], values: dict, *, federation_config: str = ""
) -> str:
    """``flwr run`` of the app with ``values`` as its run config; returns the run id."""
    # A TOML file, not "k=v" pairs: flwr's pair parser cannot carry quotes inside values.
    run_config = Path(env["FLWR_HOME"]) / f"run-config-{values.get('run-name') or uuid.uuid4().hex}.toml"
    run_config.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items()))
    command = [
        flower_binary("flwr"),
        "run",
        str(app_dir),
        connection,
        "--format",
        "json",
        "--run-config",
        str(run_config),
    ]
    if federation_config:
        command += ["--federation-config", federation_config]
    submitted = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    try:
        return str(json.loads(submitted.stdout)["run-id"])
    except (json.JSONDecodeError, KeyError):
        raise RuntimeError(f"flwr run did not start a run:\n{submitted.stdout}\n{submitted.stderr}") from None


def wait_for_status(
    run_id: str,
    connection: str,
    env: dict[str, str],
    *,
    timeout: float = 7 * 24 * 3600.0,
    show_log: bool = False,
    log_lines: list[str] | None = None,
) -> str:
    """Wait for the run to end and return its final status (``finished:completed``,
    ``finished:failed``...). Blocks on ``flwr log --stream`` (printed when ``show_log``; its lines
    appended to ``log_lines`` when given), which returns when the run ends, then reads the status
    with ``flwr ls`` (a CLI process per poll costs about a CPU-second, so polls are spaced out)."""
    deadline = time.time() + timeout
    if not _stream_log(run_id, connection, env, timeout=timeout, show_log=show_log, log_lines=log_lines):
        return "unknown:timeout"
    pause = 0.5
    while time.time() < deadline:
        listed = subprocess.run(
            [flower_binary("flwr"), "ls", connection, "--run-id", run_id, "--format", "json"],
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
        time.sleep(pause)
        pause = min(2 * pause, 10.0)
    return "unknown:timeout"


def _stream_log(
    run_id: str, connection: str, env: dict[str, str], *, timeout: float, show_log: bool, log_lines: list[str] | None
) -> bool:
    """``flwr log --stream`` until the run ends (False: ``timeout`` came first). Its lines go to
    this process's stdout when ``show_log`` and into ``log_lines`` when given."""
    command = [flower_binary("flwr"), "log", run_id, connection, "--stream"]
    # stderr joins the captured log; uncaptured, it is shown or dropped as before
    stderr = subprocess.STDOUT if log_lines is not None else (None if show_log else subprocess.DEVNULL)
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)

    def tee() -> None:
        for line in process.stdout:
            if log_lines is not None:
                log_lines.append(line.rstrip("\n"))
            if show_log:
                print(line, end="", flush=True)

    reader = threading.Thread(target=tee, daemon=True)
    reader.start()
    try:
        process.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        return False
    finally:
        if process.poll() is None:  # timed out, or Ctrl-C / SIGTERM: stop following the log now
            process.kill()
            process.wait()
        reader.join(timeout=10)


def run_exit_code(status: str, missing: list[int], *, allow_missing: bool, where: str) -> int:
    """The launchers' exit status: 1 unless the run finished as completed, 3 when partitions never
    contributed a valid update (unless ``federation.allow_missing_nodes``), else 0."""
    if status != "finished:completed":
        return 1
    if missing and not allow_missing:
        print(
            f"Partitions {missing} never contributed a valid update (their failures and dropped replies are in "
            f"the metrics.jsonl of {where}): exit 3. Set federation.allow_missing_nodes to accept such runs.",
            file=sys.stderr,
        )
        return 3
    return 0


def exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM handler: unwind like Ctrl-C, so ``finally`` blocks stop the processes started."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up short
    sys.exit(128 + signum)
