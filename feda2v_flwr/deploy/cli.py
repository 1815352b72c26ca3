"""``feda2v-deploy``: run FedA2V across machines with Flower's SuperLink and SuperNodes.

    feda2v-deploy certs --name <server address> --nodes N     CA, SuperLink certificate, node keys
    feda2v-deploy superlink [--certs DIR --node-auth | --insecure]   on the server machine
    feda2v-deploy register certs/nodes/node-0.pub --superlink HOST:PORT --ca certs/ca.crt
    feda2v-deploy supernode --superlink HOST:PORT --partition-id 0 --num-partitions N [--ca ... --key ...]
    feda2v-deploy run --superlink HOST:PORT [--ca certs/ca.crt] [--config ...] [--set ...]
    feda2v-deploy loopback [--tls]        all of it on this machine, one run, then everything stopped

``superlink`` and ``supernode`` print the Flower command and replace themselves with it
(``--dry-run`` only prints it), so the same flags can be typed by hand or put in a service
file. ``run`` submits the app, streams the server's log and exits non-zero unless the run
finished as completed (``flwr run --stream`` alone exits 0 on failure): 1 for a failed run, 3 when
the server's log names partitions that never contributed (``federation.allow_missing_nodes``
accepts such runs).
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from feda2v_flwr.config import ConfigError, load_config
from feda2v_flwr.config.loading import pinned_overrides
from feda2v_flwr.config.paths import PROJECT_ROOT
from feda2v_flwr.deploy.certs import DEFAULT_NAMES, CertificateFiles, make_certificates
from feda2v_flwr.deploy.commands import (
    DEFAULT_NODE_PORT,
    DEFAULT_SUPERLINK_PORT,
    Tls,
    node_config_string,
    superlink_command,
    supernode_command,
    write_connection,
)
from feda2v_flwr.deploy.loopback import LoopbackDeployment
from feda2v_flwr.processes import (
    exit_on_sigterm,
    flower_binary,
    flower_env,
    run_exit_code,
    run_values,
    submit_run,
    wait_for_status,
)
from feda2v_flwr.reporting.metrics import read_summary, reported_missing_partitions

CONNECTION = "feda2v-deploy"


def _certificates(directory: str | None) -> CertificateFiles | None:
    if not directory:
        return None
    files = CertificateFiles(Path(directory).resolve())
    if not files.ca.is_file():
        raise ConfigError(
            f"{files.ca} does not exist: make the certificates with `feda2v-deploy certs --out {directory}`"
        )
    return files


def _exec(command: list[str], env: dict[str, str], dry_run: bool) -> int:
    print(shlex.join(command), flush=True)
    if dry_run:
        return 0
    os.execve(flower_binary(command[0]), [flower_binary(command[0]), *command[1:]], env)
    return 1  # not reached


def _certs(args: argparse.Namespace) -> int:
    args.name = args.name or list(DEFAULT_NAMES)
    files = make_certificates(Path(args.out), names=args.name, nodes=args.nodes, days=args.days, force=args.force)
    print(f"CA:        {files.ca}  (copy to every SuperNode and to the machine that runs `flwr`)")
    print(f"SuperLink: {files.superlink_certificate}, {files.superlink_key}  (valid for {', '.join(args.name)})")
    for index in range(args.nodes):
        print(f"SuperNode {index}: {files.node_key(index)} (stays on that node), {files.node_public_key(index)}")
    print(f"CA key:    {files.directory / 'ca.key'}  (needed only to sign new certificates; keep it offline)")
    return 0


LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def _superlink(args: argparse.Namespace) -> int:
    files = _certificates(args.certs)
    tls = Tls(files.ca, files.superlink_certificate, files.superlink_key) if files else None
    if files is None and args.host not in LOOPBACK_HOSTS and not args.insecure:
        raise ConfigError(
            f"without --certs the SuperLink speaks plain HTTP, and --host {args.host} opens it to other machines: "
            "give --certs DIR (TLS, from `feda2v-deploy certs`), or --insecure on a trusted private network, "
            "or --host 127.0.0.1"
        )
    if files is None and args.host not in LOOPBACK_HOSTS:
        print(
            f"WARNING: plain HTTP on {args.host}:{args.port} (--insecure): anyone who reaches this port can read the "
            "traffic, join as a SuperNode and submit runs that execute code; use it on a trusted network only",
            file=sys.stderr,
        )
    elif files is not None and not args.node_auth:
        print(
            "WARNING: TLS without --node-auth: any SuperNode that reaches this port can join the federation; "
            "register your nodes' keys and add --node-auth (see docs/deployment.md)",
            file=sys.stderr,
        )
    database = None
    if args.state_dir:
        Path(args.state_dir).mkdir(parents=True, exist_ok=True)
        database = str(Path(args.state_dir).resolve() / "state.db")
    command = superlink_command(
        host=args.host, port=args.port, tls=tls, node_auth=args.node_auth, database=database, isolation=args.isolation
    )
    return _exec(command, flower_env(), args.dry_run)


def _supernode(args: argparse.Namespace) -> int:
    for key in ("data_dir", "cache_dir", "state_dir"):
        value = getattr(args, key)
        if value:
            setattr(args, key, str(Path(value).expanduser().resolve()))
    if args.data_dir and not Path(args.data_dir).is_dir():
        raise ConfigError(f"--data-dir {args.data_dir} is not a directory on this machine")
    for flag, value in (("--ca", args.ca), ("--key", args.key)):
        if value and not Path(value).is_file():
            raise ConfigError(f"{flag} {value} does not exist (make it with `feda2v-deploy certs`)")
    node_config = node_config_string(
        args.partition_id,
        args.num_partitions,
        data_dir=args.data_dir,
        cache_dir=args.cache_dir,
        state_dir=args.state_dir,
    )
    command = supernode_command(
        superlink=args.superlink,
        node_config=node_config,
        port=args.port,
        tls=Tls(Path(args.ca).resolve()) if args.ca else None,
        auth_key=Path(args.key).resolve() if args.key else None,
        isolation=args.isolation,
        max_retries=args.max_retries,
    )
    return _exec(command, flower_env(), args.dry_run)


def _register(args: argparse.Namespace) -> int:
    flwr_home = Path(args.flwr_home).resolve()
    write_connection(flwr_home, CONNECTION, args.superlink, Path(args.ca) if args.ca else None)
    command = [flower_binary("flwr"), "supernode", "register", str(Path(args.public_key).resolve()), CONNECTION]
    if args.node_name:
        command += ["--name", args.node_name]
    return subprocess.run(command, env=flower_env(flwr_home), check=False).returncode


def _run(args: argparse.Namespace) -> int:
    overrides = "; ".join(args.set)
    experiment = load_config(args.config, overrides)  # a ConfigError ends here, before anything is sent (main: exit 2)
    overrides = pinned_overrides(args.config, overrides, experiment)  # clip_seconds "auto": the nodes need no data here
    flwr_home = Path(args.flwr_home).resolve()
    write_connection(flwr_home, CONNECTION, args.superlink, Path(args.ca) if args.ca else None)
    env = flower_env(flwr_home)
    run_name = args.run_name
    if not run_name and not args.resume:  # a resumed run goes on in the checkpoint's own folder
        run_name = f"{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    values = run_values(
        args.config,
        overrides=overrides,
        run_name=run_name,
        output_dir=args.output_dir,
        resume=args.resume,
        stop_after_round=args.stop_after_round,
    )
    start = time.time()
    run_id = submit_run(PROJECT_ROOT, CONNECTION, env, values)
    if not run_name:
        where = f"the run folder of {args.resume}"
    elif args.output_dir:
        where = f"{args.output_dir}/{run_name}"
    else:
        where = f"outputs/{run_name} in the SuperLink's folder"
    print(f"Submitted run {run_id}; outputs on the server machine: {where}", flush=True)
    server_log: list[str] = []
    status = wait_for_status(
        run_id, CONNECTION, env, timeout=args.timeout, show_log=not args.no_stream, log_lines=server_log
    )
    print(f"\nRun {run_id} status: {status} after {time.time() - start:.0f} s")
    missing = reported_missing_partitions(server_log)
    return run_exit_code(status, missing, allow_missing=experiment.federation.allow_missing_nodes, where=where)


def _loopback(args: argparse.Namespace) -> int:
    overrides = "; ".join(args.set)
    experiment = load_config(args.config, overrides)  # a ConfigError ends here (main: exit 2)
    workdir = Path(args.workdir).resolve()
    nodes = experiment.federation.num_clients
    run_name = args.run_name or f"{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"Loopback deployment in {workdir}: a SuperLink and {nodes} SuperNodes" + (" (TLS + node auth)" * args.tls))
    start = time.time()
    signal.signal(signal.SIGTERM, exit_on_sigterm)  # a kill still stops every process started
    with LoopbackDeployment(workdir, nodes=nodes, tls=args.tls, node_auth=args.tls) as deployment:
        status, run_dir = deployment.run(
            args.config, overrides=overrides, run_name=run_name, output_dir=Path(args.output_dir), stream=True
        )
    print(f"\nRun status: {status} after {time.time() - start:.0f} s; outputs: {run_dir}")
    missing = read_summary(run_dir).get("missing_partitions") or []
    return run_exit_code(status, missing, allow_missing=experiment.federation.allow_missing_nodes, where=str(run_dir))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="feda2v-deploy",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Guide: docs/deployment.md",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    certs = commands.add_parser("certs", help="make a CA, the SuperLink's TLS certificate and SuperNode keys")
    certs.add_argument("--out", default="certs", help="folder to write (default: certs)")
    certs.add_argument(
        "--name",
        action="append",
        default=[],
        help="IP address or DNS name the SuperNodes dial (repeatable; default 127.0.0.1, ::1, localhost)",
    )
    certs.add_argument("--nodes", type=int, default=2, help="SuperNode key pairs to make")
    certs.add_argument("--days", type=int, default=365, help="validity of the certificates")
    certs.add_argument("--force", action="store_true", help="replace existing material")
    certs.set_defaults(handler=_certs)

    superlink = commands.add_parser("superlink", help="start the SuperLink (server machine)")
    superlink.add_argument("--host", default="0.0.0.0", help="interface to listen on")
    superlink.add_argument("--port", type=int, default=DEFAULT_SUPERLINK_PORT)
    superlink.add_argument("--certs", help="folder from `feda2v-deploy certs` (TLS); without it: plain HTTP")
    superlink.add_argument(
        "--insecure", action="store_true", help="allow plain HTTP on a non-loopback --host (trusted networks only)"
    )
    superlink.add_argument("--node-auth", action="store_true", help="accept only registered SuperNodes (needs --certs)")
    superlink.add_argument("--state-dir", help="keep runs and registered nodes in <dir>/state.db across restarts")
    superlink.add_argument("--isolation", choices=["subprocess", "process"], default="subprocess")
    superlink.add_argument("--dry-run", action="store_true", help="print the command only")
    superlink.set_defaults(handler=_superlink)

    supernode = commands.add_parser("supernode", help="start a SuperNode (one per data-holding machine)")
    supernode.add_argument("--superlink", required=True, metavar="HOST:PORT")
    supernode.add_argument("--partition-id", type=int, required=True)
    supernode.add_argument("--num-partitions", type=int, required=True, help="= federation.num_clients")
    supernode.add_argument("--data-dir", help="this machine's dataset folder (replaces data.root on this node)")
    supernode.add_argument("--cache-dir", help="this machine's embedding cache (default: the server's data.cache_dir)")
    supernode.add_argument("--state-dir", help="where this node saves its state for resuming")
    supernode.add_argument("--ca", help="the CA certificate (TLS); without it: plain HTTP")
    supernode.add_argument("--key", help="this node's private key (SuperNode authentication)")
    supernode.add_argument("--port", type=int, default=DEFAULT_NODE_PORT, help="local ClientApp API port")
    supernode.add_argument("--isolation", choices=["subprocess", "process"], default="subprocess")
    supernode.add_argument(
        "--max-retries", type=int, default=None, help="give up after this many failed connections (default: never)"
    )
    supernode.add_argument("--dry-run", action="store_true", help="print the command only")
    supernode.set_defaults(handler=_supernode)

    register = commands.add_parser("register", help="register a SuperNode's public key with the SuperLink")
    register.add_argument("public_key")
    register.add_argument("--superlink", required=True, metavar="HOST:PORT")
    register.add_argument("--ca", required=True, help="the CA certificate (node authentication runs over TLS)")
    register.add_argument("--node-name", default="", help="a name shown by `flwr supernode list`")
    register.add_argument("--flwr-home", default=".flwr-deploy", help="Flower CLI state (connection entry)")
    register.set_defaults(handler=_register)

    run = commands.add_parser("run", help="submit a FedA2V run to a SuperLink and follow it to the end")
    run.add_argument("--superlink", required=True, metavar="HOST:PORT")
    run.add_argument("--ca", help="the CA certificate (TLS); without it: plain HTTP")
    run.add_argument("--config", default="configs/default.json", help="experiment JSON inside the project")
    run.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a key")
    run.add_argument("--run-name", default="")
    run.add_argument(
        "--output-dir", default="", help="absolute folder on the server machine (default: ./outputs there)"
    )
    run.add_argument("--resume", default="", help="a run folder or checkpoint on the server machine")
    run.add_argument("--stop-after-round", type=int, default=0)
    run.add_argument("--flwr-home", default=".flwr-deploy", help="Flower CLI state (connection entry)")
    run.add_argument("--timeout", type=float, default=7 * 24 * 3600.0, help="give up waiting after this many seconds")
    run.add_argument("--no-stream", action="store_true", help="do not stream the server's log")
    run.set_defaults(handler=_run)

    loopback = commands.add_parser(
        "loopback", help="try a whole deployment on this machine (SuperLink + one SuperNode per client), then stop it"
    )
    loopback.add_argument("--config", default="configs/default.json")
    loopback.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a key")
    loopback.add_argument("--tls", action="store_true", help="with TLS and SuperNode authentication")
    loopback.add_argument("--workdir", default="outputs/loopback", help="certificates, logs and Flower state")
    loopback.add_argument("--output-dir", default="outputs", help="where the run folder is written")
    loopback.add_argument("--run-name", default="")
    loopback.set_defaults(handler=_loopback)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ConfigError, ValueError, FileExistsError) as err:
        print(f"feda2v-deploy {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
