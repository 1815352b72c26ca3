"""Scaling: round time and the server's ``aggregate_fit`` time vs clients and classes.

Each cell is a ``flwr run`` simulation of ``configs/default.json`` with k classes per client
(``data.partitioning: classes_per_node``, k = max(2, classes / clients) so that every class has a
node; 32 clients share 10 classes):

- 10 classes: the procedural dataset (its 10 synthesised classes, 40 clips each);
- 50 classes: 50 classes of token embeddings written by this script as a ``precomputed``
  dataset (class-specific means + noise, 79 tokens x 48, 20 clips per class), read through
  ``feda2v.audio_encoder: precomputed``: the same federation and server step at 50 classes,
  with no audio encoding in the way.

Usage: ``python benchmarks/scaling.py --clients 2 8 32 --classes 10 50 --rounds 3``
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from feda2v_flwr.launch import run_simulation
from feda2v_flwr.reporting import read_metrics

TOKENS, DIM, CLIPS = 79, 48, 20


def make_precomputed(root: Path, classes: int, seed: int = 0) -> list[str]:
    """``classes`` folders of ``CLIPS`` arrays (TOKENS, DIM): one mean per class, noise per clip."""
    names = [f"sound_{index:02d}" for index in range(classes)]
    for index, name in enumerate(names):
        folder = root / name
        if folder.is_dir() and len(list(folder.glob("*.npy"))) == CLIPS:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([seed, index])  # a class's arrays depend only on (seed, class)
        mean = rng.normal(0, 1, (TOKENS, DIM)).astype(np.float32)
        for clip in range(CLIPS):
            np.save(folder / f"clip_{clip:02d}.npy", mean + rng.normal(0, 0.5, (TOKENS, DIM)).astype(np.float32))
    return names


def overrides_for(clients: int, classes: int, rounds: int, data_root: Path) -> str:
    per_node = max(2, -(-classes // clients))  # every class needs a node: nodes x k >= classes
    common = (
        f"federation.num_clients={clients}; federation.global_rounds={rounds}; wandb.enabled=false; "
        f"data.partitioning=classes_per_node; data.classes_per_node={per_node}"
    )
    if classes == 10:
        return common
    names = make_precomputed(data_root / f"precomputed-{classes}", classes)
    return (
        f"{common}; data.dataset=precomputed; data.root={data_root / f'precomputed-{classes}'}; "
        f"feda2v.audio_encoder=precomputed; data.classes={names!r}".replace("'", '"')
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[2, 8, 32])
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 50], choices=[10, 50])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output-dir", default="outputs/benchmarks/scaling")
    args = parser.parse_args()
    output_dir = Path(args.output_dir).resolve()
    lines = [
        "| clients | classes | classes per client | wall (s) | fit round, mean of rounds 2+ (s) "
        "| server `aggregate_fit` (s) | evaluation round (s) | top-1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for classes in args.classes:
        for clients in args.clients:
            start = time.time()
            status, run_dir = run_simulation(
                config="configs/default.json",
                overrides=overrides_for(clients, classes, args.rounds, output_dir / "data"),
                run_name=f"c{clients}-k{classes}-{time.strftime('%Y%m%d-%H%M%S')}",
                output_dir=output_dir,
                flwr_home=output_dir / "flwr-home",
                stream=False,
            )
            wall = time.time() - start
            if status != "finished:completed":
                raise SystemExit(f"{clients} clients x {classes} classes ended as {status}; see {run_dir}")
            metrics = read_metrics(run_dir / "metrics.jsonl")
            rounds = [m for m in metrics if m["phase"] == "round"]
            later = rounds[1:] or rounds
            evaluations = [m for m in metrics if m["phase"] == "evaluate"]
            row = (
                f"| {clients} | {classes} | {max(2, -(-classes // clients))} | {wall:.0f} "
                f"| {statistics.mean(m['fit_round_s'] for m in later):.1f} "
                f"| {statistics.mean(m['aggregate_fit_s'] for m in rounds):.1f} "
                f"| {statistics.mean(m['evaluate_round_s'] for m in evaluations):.1f} "
                f"| {evaluations[-1]['test_retrieval_top1']:.3f} |"
            )
            lines.append(row)
            print(row, flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
