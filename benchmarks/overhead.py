"""Framework overhead: the default simulation through ``flwr run`` vs the same work in a plain loop.

Both runs use ``configs/default.json`` (same data, seed, rounds): the clients' ``ClientTask.fit``
/ ``evaluate`` and the server's ``aggregate_fit`` (aggregation, generator training, validation,
fine-tuning, checkpoints) / ``aggregate_evaluate``. The plain loop calls them one after the other
in this process, with no Flower server loop, no Ray, no SuperLink and no messages between
processes (the replies are still packed as Flower ``Parameters``, which the strategy takes).

Reported: wall time of each run, the time spent in rounds (sum of the fit and evaluation round
times of ``metrics.jsonl``), start-up and shutdown (the rest: Ray, the SuperLink, the ServerApp
and the first model loads), and their ratio. Usage: ``python benchmarks/overhead.py``
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
from flwr.common import Code, EvaluateRes, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

from feda2v_flwr.config import load_config
from feda2v_flwr.launch import run_simulation
from feda2v_flwr.reporting import read_metrics
from feda2v_flwr.server_app import build_strategy
from feda2v_flwr.training.task import ClientTask


class _Node:  # the strategy only reads a proxy's cid
    def __init__(self, cid: str):
        self.cid = cid


def plain_loop(config_file: str, overrides: str, run_dir: Path) -> tuple[float, list[float], float]:
    """The federation as a plain loop; returns (wall seconds, per-round seconds, final top-1)."""
    start = time.perf_counter()
    config = load_config(config_file, overrides)
    strategy = build_strategy(config, run_dir)
    clients = config.federation.num_clients
    arrays = parameters_to_ndarrays(strategy.initial_parameters)
    tasks: dict[int, ClientTask] = {}
    optimizer_states: dict[int, bytes | None] = dict.fromkeys(range(clients))
    local_adapters: dict[int, bytes | None] = dict.fromkeys(range(clients))
    rounds, top1 = [], float("nan")
    for server_round in range(1, config.federation.global_rounds + 1):
        round_start = time.perf_counter()
        replies = []
        for pid in range(clients):
            if pid not in tasks:  # a simulation actor loads its partition on its first call too
                tasks[pid] = ClientTask(config, pid, clients, strategy.recipe.cache_dir)
            outcome = tasks[pid].fit(
                arrays,
                server_round,
                optimizer_states[pid],
                local_adapters[pid],
            )
            optimizer_states[pid], local_adapters[pid] = outcome.optimizer_state, outcome.local_adapters
            res = FitRes(
                Status(Code.OK, ""), ndarrays_to_parameters(outcome.arrays), outcome.num_examples, outcome.metrics
            )
            replies.append((_Node(str(pid)), res))
        parameters, _ = strategy.aggregate_fit(server_round, replies, [])
        arrays = parameters_to_ndarrays(parameters)
        evaluations = []
        for pid in range(clients):
            metrics = tasks[pid].evaluate(arrays, local_adapters[pid], server_round=server_round)
            evaluations.append((_Node(str(pid)), EvaluateRes(Status(Code.OK, ""), 0.0, 1, metrics)))
        _, aggregated = strategy.aggregate_evaluate(server_round, evaluations, [])
        top1 = float(aggregated.get("test_retrieval_top1", float("nan")))
        rounds.append(time.perf_counter() - round_start)
    return time.perf_counter() - start, rounds, top1


def flwr_rounds(run_dir: Path) -> tuple[list[float], float]:
    """Per-round seconds (fit + evaluation phases) of a ``flwr run`` and its final top-1."""
    metrics = read_metrics(run_dir / "metrics.jsonl")
    seconds: dict[int, float] = {}
    for m in metrics:
        if m["phase"] == "round":
            seconds[m["round"]] = seconds.get(m["round"], 0.0) + m["fit_round_s"]
        elif m["phase"] == "evaluate":
            seconds[m["round"]] = seconds.get(m["round"], 0.0) + (m.get("evaluate_round_s") or 0.0)
    top1 = [m for m in metrics if m["phase"] == "evaluate"][-1]["test_retrieval_top1"]
    return [seconds[r] for r in sorted(seconds)], top1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.json")
    parser.add_argument("--output-dir", default="outputs/benchmarks/overhead")
    args = parser.parse_args()
    output_dir = Path(args.output_dir).resolve()
    overrides = "wandb.enabled=false"  # W&B is the same work in both; leave it out of the comparison
    stamp = time.strftime("%Y%m%d-%H%M%S")

    start = time.perf_counter()
    status, run_dir = run_simulation(
        config=args.config,
        overrides=overrides,
        run_name=f"flwr-{stamp}",
        output_dir=output_dir,
        flwr_home=output_dir / "flwr-home",
        stream=False,
    )
    flwr_wall = time.perf_counter() - start
    if status != "finished:completed":
        raise SystemExit(f"flwr run ended as {status}")
    flwr_round_s, flwr_top1 = flwr_rounds(run_dir)

    plain_wall, plain_round_s, plain_top1 = plain_loop(args.config, overrides, output_dir / f"plain-{stamp}")

    flwr_total, plain_total = sum(flwr_round_s), sum(plain_round_s)
    rows = [
        ("`flwr run` simulation (Ray, 2 actors of 1 CPU)", flwr_wall, flwr_total, flwr_round_s, flwr_top1),
        (
            f"plain loop in one process ({torch.get_num_threads()} torch threads)",
            plain_wall,
            plain_total,
            plain_round_s,
            plain_top1,
        ),
    ]
    lines = [
        f"{args.config}; {platform.machine()}, {torch.get_num_threads()} CPU threads, no GPU; "
        f"{time.strftime('%Y-%m-%d')}",
        "",
        "| run | wall (s) | in rounds (s) | start-up + shutdown (s) | per round (s) | top-1 |",
        "|---|---|---|---|---|---|",
    ]
    for label, wall, in_rounds, per_round, top1 in rows:
        per = ", ".join(f"{s:.1f}" for s in per_round)
        lines.append(f"| {label} | {wall:.1f} | {in_rounds:.1f} | {wall - in_rounds:.1f} | {per} | {top1:.3f} |")
    lines += [
        "",
        f"Overhead ratio, rounds only (start-up excluded): **{flwr_total / plain_total:.2f}**; "
        f"whole runs: {flwr_wall / plain_wall:.2f}.",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
