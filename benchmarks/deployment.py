"""Deployment vs simulation: round times and bytes per client, on this machine.

Runs the same config three ways and prints a Markdown table:

- simulation (``feda2v-sim``'s path: Ray actors that live for the whole run),
- loopback deployment over plain HTTP (a SuperLink and one SuperNode per client; every
  ClientApp call is a fresh process),
- loopback deployment with TLS and SuperNode authentication.

Per round: wall time of the fit phase (clients' training, transfers and the server's step, from
the instructions going out to the end of ``aggregate_fit``) and of the evaluation phase; bytes
each client uploads (adapters + per-class statistics) and downloads (global adapters); the wire
adds Flower's message framing. The wall time of a deployment includes making the certificates,
starting the processes and stopping them.
Usage: ``python benchmarks/deployment.py --rounds 2 --out outputs/benchmarks/deployment.md``
"""

from __future__ import annotations

import argparse
import json
import platform
import signal
import statistics
import time
from pathlib import Path

from feda2v_flwr.config import load_config
from feda2v_flwr.deploy.loopback import LoopbackDeployment
from feda2v_flwr.launch import run_simulation
from feda2v_flwr.processes import exit_on_sigterm
from feda2v_flwr.reporting import read_metrics


def summarise(label: str, run_dir: Path, wall: float) -> dict:
    metrics = read_metrics(run_dir / "metrics.jsonl")
    rounds = [m for m in metrics if m["phase"] == "round"]
    evaluations = [m for m in metrics if m["phase"] == "evaluate"]
    fits = [m for m in metrics if m["phase"] == "fit"]
    later = rounds[1:] or rounds  # round 1 also pays for loading the data and models
    return {
        "setup": label,
        "wall_s": wall,
        "fit_round_s_first": rounds[0]["fit_round_s"],
        "fit_round_s_later": statistics.mean(m["fit_round_s"] for m in later),
        "server_step_s": statistics.mean(m["aggregate_fit_s"] for m in rounds),
        "evaluate_round_s": statistics.mean(m["evaluate_round_s"] for m in evaluations) if evaluations else 0.0,
        "upload_bytes_per_client": statistics.mean(b for m in fits for b in m["payload_bytes_per_client"]),
        "download_bytes_per_client": statistics.mean(m["download_bytes_per_client"] for m in fits),
        "top1": evaluations[-1]["test_retrieval_top1"] if evaluations else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.json")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--output-dir", default="outputs/benchmarks/deployment")
    parser.add_argument("--out", default="outputs/benchmarks/deployment.md")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, exit_on_sigterm)  # a kill still stops the SuperLink and SuperNodes
    output_dir = Path(args.output_dir).resolve()
    overrides = f"federation.global_rounds={args.rounds}; wandb.enabled=false"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    rows = []

    start = time.time()
    status, run_dir = run_simulation(
        config=args.config,
        overrides=overrides,
        run_name=f"simulation-{stamp}",
        output_dir=output_dir,
        flwr_home=output_dir / "flwr-home-simulation",
        stream=False,
    )
    if status != "finished:completed":
        raise SystemExit(f"simulation ended as {status}; see {run_dir}")
    rows.append(summarise("simulation (Ray actors)", run_dir, time.time() - start))

    nodes = load_config(args.config, overrides).federation.num_clients
    for label, tls in (("deployment, plain HTTP", False), ("deployment, TLS + node auth", True)):
        start = time.time()
        workdir = output_dir / f"loopback-{'tls' if tls else 'plain'}-{stamp}"
        with LoopbackDeployment(workdir, nodes=nodes, tls=tls, node_auth=tls) as deployment:
            status, run_dir = deployment.run(args.config, overrides=overrides, run_name="run", output_dir=workdir)
        if status != "finished:completed":
            raise SystemExit(f"{label}: run ended as {status}; logs in {workdir / 'logs'}")
        rows.append(summarise(label, run_dir, time.time() - start))

    lines = [
        f"{args.config}, {nodes} clients, {args.rounds} rounds; {platform.processor() or platform.machine()}, "
        f"CPU only; {time.strftime('%Y-%m-%d')}",
        "",
        "| setup | wall (s) | fit round 1 (s) | fit round, later (s) | server step (s) | evaluation round (s) "
        "| upload / client / round | download / client / round | top-1 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['setup']} | {row['wall_s']:.0f} | {row['fit_round_s_first']:.1f} | {row['fit_round_s_later']:.1f} "
            f"| {row['server_step_s']:.1f} | {row['evaluate_round_s']:.1f} "
            f"| {row['upload_bytes_per_client'] / 1e3:.0f} kB | {row['download_bytes_per_client'] / 1e3:.0f} kB "
            f"| {row['top1']:.3f} |"
        )
    table = "\n".join(lines)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table + "\n")
    (output_dir / f"deployment-{stamp}.json").write_text(json.dumps(rows, indent=1))
    print(table)


if __name__ == "__main__":
    main()
