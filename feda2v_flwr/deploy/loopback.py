"""A whole deployment on one machine: a SuperLink and N SuperNodes on free local ports.

The processes are the real ones (``feda2v-deploy superlink`` / ``supernode``, which become
``flower-superlink`` / ``flower-supernode`` with the flags of ``commands.py``), so a loopback
run exercises what a multi-machine deployment runs, TLS and node authentication included.
Every process carries a marker in its environment and all are stopped by PID when the
deployment closes, children (SuperExecs, ClientApps) included.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

from feda2v_flwr.config.paths import PROJECT_ROOT
from feda2v_flwr.deploy.certs import CertificateFiles, make_certificates
from feda2v_flwr.deploy.commands import superexec_command, write_connection
from feda2v_flwr.processes import (
    flower_binary,
    flower_env,
    free_port,
    run_values,
    stop_marked_processes,
    submit_run,
    wait_for_port,
    wait_for_status,
)

CONNECTION = "loopback"


class LoopbackDeployment:
    """``with LoopbackDeployment(workdir, nodes=2, tls=True, node_auth=True) as deployment:
    status, run_dir = deployment.run(config_file)``. Files: ``workdir/{certs,logs,flwr-home}``;
    the SuperLink (and so the ServerApp) runs in ``workdir``.

    The SuperLink and SuperNodes are started with ``feda2v-deploy superlink`` / ``supernode``,
    which become the Flower processes (same PID). ``isolation="process"``: the Docker topology,
    with a ``flower-superexec`` for the ServerApp and one per SuperNode for its ClientApps.
    ``state_dir``: the SuperLink keeps its state (runs, registered nodes) in a file there.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        nodes: int,
        tls: bool = False,
        node_auth: bool = False,
        cache_dir: Path | None = None,
        start_nodes: bool = True,
        isolation: str = "subprocess",
        state_dir: Path | None = None,
    ):
        if node_auth and not tls:
            raise ValueError("SuperNode authentication needs TLS")
        self.workdir = workdir.resolve()
        self.nodes, self.tls, self.node_auth = nodes, tls, node_auth
        self.cache_dir, self.start_nodes = cache_dir, start_nodes
        self.isolation, self.state_dir = isolation, state_dir
        self.flwr_home = self.workdir / "flwr-home"
        self.logs = self.workdir / "logs"
        self.certs: CertificateFiles | None = None
        self.marker = uuid.uuid4().hex
        self.port = 0
        self.superlink: subprocess.Popen | None = None
        self.serverapp_executor: subprocess.Popen | None = None
        self.supernodes: list[subprocess.Popen] = []
        self.superexecs: list[subprocess.Popen] = []
        self._log_files: list = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = flower_env(self.flwr_home)
        env["FEDA2V_LAUNCH_ID"] = self.marker
        return env

    def _start(self, name: str, command: list[str], *, node: bool = False) -> subprocess.Popen:
        """``node``: a SuperNode or its SuperExec, whose ClientApps share this machine's cores with
        the other nodes (on their own machine they would use them all): torch gets its share."""
        self.logs.mkdir(parents=True, exist_ok=True)
        log_file = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 (closed in close())
        self._log_files.append(log_file)
        env = self.env()
        if node:
            env["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // self.nodes))
        return subprocess.Popen(
            [flower_binary(command[0]), *command[1:]],
            cwd=self.workdir,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def __enter__(self) -> LoopbackDeployment:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> None:
        if self.tls:
            self.certs = make_certificates(self.workdir / "certs", names=["127.0.0.1"], nodes=self.nodes, force=True)
        self.port = free_port()
        self._start_superlink()
        write_connection(self.flwr_home, CONNECTION, self.address, self.certs.ca if self.certs else None)
        if self.start_nodes:
            for partition_id in range(self.nodes):
                if self.node_auth:
                    self.register(self.certs.node_public_key(partition_id))
                self.start_supernode(partition_id)

    def _start_superlink(self) -> None:
        command = ["feda2v-deploy", "superlink", "--host", "127.0.0.1", "--port", str(self.port)]
        command += ["--isolation", self.isolation]
        if self.certs:
            command += ["--certs", str(self.certs.directory)] + ["--node-auth"] * self.node_auth
        if self.state_dir:
            command += ["--state-dir", str(self.state_dir)]
        self.superlink = self._start("superlink", command)
        wait_for_port(self.port, self.superlink)
        if self.isolation == "process":  # the ServerApp's SuperExec; the SuperLink's API is TLS when it is
            serverapp = superexec_command(appio_address=self.address, ca=self.certs.ca if self.certs else None)
            self.serverapp_executor = self._start("superexec-serverapp", serverapp)
            self.superexecs.append(self.serverapp_executor)

    def crash(self, process: subprocess.Popen) -> None:
        """Fault drills: SIGKILL ``process`` and everything it started (its process group: a
        SuperNode's SuperExec and ClientApps, the SuperLink's ServerApp), as a power cut would."""
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def restart_superlink(self) -> None:
        """Crash the SuperLink and start it again on the same port (and ``state_dir``: the state
        it persisted); the SuperNodes reconnect by themselves."""
        if self.superlink is not None:
            self.crash(self.superlink)
        if self.serverapp_executor is not None:  # process isolation: the ServerApp's SuperExec goes too
            self.crash(self.serverapp_executor)
        self._start_superlink()

    def register(self, public_key: Path) -> subprocess.CompletedProcess:
        registered = self.flwr("supernode", "register", str(public_key), CONNECTION)
        if registered.returncode != 0:
            raise RuntimeError(f"registering {public_key} failed:\n{registered.stdout}\n{registered.stderr}")
        return registered

    def start_supernode(
        self,
        partition_id: int,
        *,
        key: Path | None = None,
        plain_http: bool = False,
        max_retries: int | None = None,
        name: str = "",
    ) -> subprocess.Popen:
        """SuperNode ``partition_id``; with node authentication its own key unless ``key`` is given.
        ``plain_http``: dial without TLS even when the SuperLink has it (must be refused)."""
        tls = self.certs is not None and not plain_http
        if key is None and self.node_auth and tls:
            key = self.certs.node_key(partition_id)
        port = free_port()
        command = ["feda2v-deploy", "supernode", "--superlink", self.address, "--port", str(port)]
        command += ["--partition-id", str(partition_id), "--num-partitions", str(self.nodes)]
        command += ["--isolation", self.isolation]
        if self.cache_dir:
            command += ["--cache-dir", str(self.cache_dir)]
        if tls:
            command += ["--ca", str(self.certs.ca)] + (["--key", str(key)] if key else [])
        if max_retries is not None:
            command += ["--max-retries", str(max_retries)]
        name = name or f"supernode-{partition_id}-{len(self.supernodes)}"
        process = self._start(name, command, node=True)
        self.supernodes.append(process)
        if self.isolation == "process":  # this node's ClientApps run in its own SuperExec
            wait_for_port(port, process)
            executor = superexec_command(appio_address=f"127.0.0.1:{port}")
            self.superexecs.append(self._start(f"superexec-{name}", executor, node=True))
        return process

    def flwr(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """A ``flwr`` CLI command against this deployment's SuperLink."""
        return subprocess.run(
            [flower_binary("flwr"), *args], env=self.env(), capture_output=True, text=True, timeout=timeout, check=False
        )

    def run(
        self,
        config: str | Path,
        *,
        overrides: str = "",
        run_name: str = "loopback",
        output_dir: Path | None = None,
        timeout: float = 1800.0,
        stream: bool = False,
        resume: str = "",
        log_lines: list[str] | None = None,
    ) -> tuple[str, Path]:
        """Submit the FedA2V app and wait for the end (``stream``: print the server's log as it
        goes; ``resume``: a run folder or checkpoint to go on from; ``log_lines``: collects the
        server's log); returns (final status, run folder)."""
        output_dir = (output_dir or self.workdir / "outputs").resolve()
        values = run_values(
            str(config), overrides=overrides, run_name=run_name, output_dir=str(output_dir), resume=resume
        )
        run_id = submit_run(PROJECT_ROOT, CONNECTION, self.env(), values)
        if stream:
            print(f"Run {run_id}; SuperLink and SuperNode logs in {self.logs}", flush=True)
        status = wait_for_status(run_id, CONNECTION, self.env(), timeout=timeout, show_log=stream, log_lines=log_lines)
        return status, output_dir / run_name

    def close(self) -> None:
        """Stop the SuperExecs and SuperNodes, then the SuperLink, then anything they left (by PID)."""
        processes = [*self.superexecs, *self.supernodes, self.superlink]
        for process in processes:
            if process is not None and process.poll() is None:
                process.terminate()
        deadline = time.time() + 20
        for process in processes:
            if process is None:
                continue
            try:
                process.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        stop_marked_processes(self.marker, timeout=20)
        for log_file in self._log_files:
            log_file.close()
        self._log_files.clear()
