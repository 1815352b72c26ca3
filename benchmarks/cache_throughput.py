"""Encoder cache and throughput, from one ``flwr run`` of the default config on a cold cache.

- Encoder cache: per round, the fit round time, the clients' data loading time and how many
  clips the audio encoder ran on (round 1 encodes every clip once; later rounds read the cache).
- Throughput: client training samples per second (examples x local epochs / the adapters'
  training time, ``train_s``) and server generator training samples per second (draws from the
  clients' statistics x epochs / generator seconds).

Usage: ``python benchmarks/cache_throughput.py [--rounds 3]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from feda2v_flwr.config import load_config
from feda2v_flwr.launch import run_simulation
from feda2v_flwr.reporting import read_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output-dir", default="outputs/benchmarks/cache_throughput")
    args = parser.parse_args()
    output_dir = Path(args.output_dir).resolve()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    cache = output_dir / f"cache-{stamp}"  # cold: nothing encoded yet
    overrides = f"federation.global_rounds={args.rounds}; wandb.enabled=false; data.cache_dir={cache}"
    config = load_config("configs/default.json", overrides)
    status, run_dir = run_simulation(
        config="configs/default.json",
        overrides=overrides,
        run_name=f"cold-{stamp}",
        output_dir=output_dir,
        flwr_home=output_dir / "flwr-home",
        stream=False,
    )
    if status != "finished:completed":
        raise SystemExit(f"run ended as {status}; see {run_dir}")
    metrics = read_metrics(run_dir / "metrics.jsonl")
    fits = {m["round"]: m for m in metrics if m["phase"] == "fit"}
    rounds = {m["round"]: m for m in metrics if m["phase"] == "round"}
    generators = {m["round"]: m for m in metrics if m["phase"] == "generator"}

    print("| round | fit round (s) | clients' data loading, mean (s) | clips encoded |")
    print("|---|---|---|---|")
    for r in sorted(fits):
        clients = fits[r]["clients"].values()
        loading = statistics.mean(c["load_s"] for c in clients)
        encoded = sum(c["encoder_calls"] for c in clients)
        print(f"| {r} | {rounds[r]['fit_round_s']:.1f} | {loading:.2f} | {encoded} |")

    epochs = config.federation.local_epochs
    client_rates = [c["num_examples"] * epochs / c["train_s"] for m in fits.values() for c in m["clients"].values()]
    draws = config.feda2v.generator_draws_per_statistic * config.feda2v.generator_training_epochs
    generator_rates = []
    for r, generator in generators.items():
        statistics_sent = sum(len(c["classes"].split(",")) for c in fits[r]["clients"].values())
        generator_rates.append(statistics_sent * draws / generator["seconds"])
    print("\n| measure | mean | min | max |")
    print("|---|---|---|---|")
    for label, rates in (
        ("client training, samples/s (per client, 1 CPU each)", client_rates),
        ("server generator training, samples/s", generator_rates),
    ):
        print(f"| {label} | {statistics.mean(rates):.0f} | {min(rates):.0f} | {max(rates):.0f} |")


if __name__ == "__main__":
    main()
