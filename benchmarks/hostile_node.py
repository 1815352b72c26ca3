"""One poisoning node on the offline default, and what the robust aggregation modes cost.

Runs the default federation (``configs/default.json``) in one process (``run_in_process``: Flower's
server loop, the real strategy and clients) for each seed under four setups, paired by seed:

- ``clean``: plain FedAvg aggregation (``avg``), every node honest;
- ``hostile``: the same, but node 0 sends adapters that are all 1e30 every round
  (``nodes.0.simulate_fault: huge``; finite in float32, so only the magnitude bound stops them);
- ``median`` and ``trimmed_mean``: the robust aggregation modes, every node honest.

Reported per setup: the final test retrieval top-1 (mean, 95 % t-interval over seeds), the paired
difference to ``clean`` with the smallest difference the design detects at 80 % power, whether
the global adapters stayed finite, what was dropped (whole replies, or adapters only), and the
wall time of a run; then the time one aggregation of the default's five adapter sets takes in
each mode. Usage: ``python benchmarks/hostile_node.py --seeds 5``; ``--report-only`` prints the
tables again from the saved ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from feda2v_flwr.config import load_config
from feda2v_flwr.encoders import audio_embed_dim, target_slots
from feda2v_flwr.inprocess import run_in_process
from feda2v_flwr.reporting import read_metrics
from feda2v_flwr.training.adapters import build_model
from strategies.aggregation import aggregate_adapters

SETUPS = {
    "clean": "",
    "hostile": "nodes.0.simulate_fault=huge",
    "median": "feda2v.adapter_aggregation_mode=median",
    "trimmed_mean": "feda2v.adapter_aggregation_mode=trimmed_mean",
}


def one_run(setup: str, seed: int, output_dir: Path, cache_dir: Path) -> dict:
    overrides = "; ".join(
        part
        for part in (f"training.seed={seed}", f"data.cache_dir={cache_dir}", "wandb.enabled=false", SETUPS[setup])
        if part
    )
    config = load_config("configs/default.json", overrides)
    run_dir = output_dir / f"{setup}-seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    start = time.perf_counter()
    run = run_in_process(config, run_dir)
    wall = time.perf_counter() - start
    metrics = read_metrics(run_dir / "metrics.jsonl")
    final = [m for m in metrics if m["phase"] == "evaluate"][-1]
    fits = [m for m in metrics if m["phase"] == "fit"]
    return {
        "setup": setup,
        "seed": seed,
        "test_retrieval_top1": final["test_retrieval_top1"],
        "finite": bool(all(np.isfinite(v).all() for v in run.strategy.recipe.state.values())),
        "largest_abs_weight": float(max(np.abs(v).max() for v in run.strategy.recipe.state.values())),
        "dropped": sum(len(m["dropped"]) for m in fits),
        "wall_s": wall,
    }


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % t-interval."""
    values = np.asarray(values, dtype=float)
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0
    return float(values.mean()), float(half)


def detectable(differences: list[float]) -> float:
    """The smallest mean paired difference a two-sided t-test at 5 % detects with 80 % power."""
    values = np.asarray(differences, dtype=float)
    if len(values) < 2:
        return float("nan")
    dof = len(values) - 1
    return float((stats.t.ppf(0.975, dof) + stats.t.ppf(0.8, dof)) * values.std(ddof=1) / np.sqrt(len(values)))


def report(rows: list[dict], times: dict[str, float], parameters: int) -> None:
    seeds = len({r["seed"] for r in rows})
    clean = {r["seed"]: r["test_retrieval_top1"] for r in rows if r["setup"] == "clean"}
    print(
        f"\n| setup | test top-1 (mean ± 95 % CI, {seeds} seeds) | paired difference to clean | "
        "detectable (80 % power) | global adapters finite, largest weight | dropped (replies, or adapters only) | "
        "wall per run |"
    )
    print("|---|---|---|---|---|---|---|")
    for setup in SETUPS:
        mine = [r for r in rows if r["setup"] == setup]
        top1, half = interval([r["test_retrieval_top1"] for r in mine])
        differences = [r["test_retrieval_top1"] - clean[r["seed"]] for r in mine]
        diff, diff_half = interval(differences)
        smallest = "" if setup == "clean" else f"{detectable(differences):.3f}"
        finite = all(r["finite"] for r in mine)
        largest = max(r["largest_abs_weight"] for r in mine)
        wall, _ = interval([r["wall_s"] for r in mine])
        print(
            f"| {setup} | {top1:.3f} ± {half:.3f} | {diff:+.3f} ± {diff_half:.3f} | {smallest} | {finite}, "
            f"{largest:.3g} | {sum(r['dropped'] for r in mine)} | {wall:.1f} s |"
        )
    for setup in SETUPS:
        values = " / ".join(f"{r['test_retrieval_top1']:.3f}" for r in rows if r["setup"] == setup)
        print(f"{setup} per seed: {values}")
    print(f"\nOne aggregation of 5 adapter sets ({parameters / 1e6:.2f} M parameters each), median of 20:")
    print("| mode | ms |\n|---|---|")
    for mode, ms in times.items():
        print(f"| {mode} | {ms:.1f} |")


def default_adapter_parameters() -> int:
    """Parameters of the default config's global adapters (every slot)."""
    config = load_config("configs/default.json", "")
    model = build_model(config, target_slots(config.feda2v), audio_embed_dim(config))
    return int(sum(p.numel() for p in model.state_dict().values()))


def aggregation_times(states: list[dict[str, np.ndarray]], repeats: int) -> dict[str, float]:
    """Median milliseconds of one aggregation of ``states`` per mode."""
    times = {}
    for mode in ("avg", "median", "trimmed_mean"):
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            aggregate_adapters(mode, states, [28] * len(states), states[0])
            samples.append(time.perf_counter() - start)
        times[mode] = 1000 * float(np.median(samples))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--output-dir", default="outputs/benchmarks/hostile_node")
    parser.add_argument("--report-only", action="store_true", help="print the tables from the saved results.json")
    args = parser.parse_args()
    output_dir = Path(args.output_dir).resolve()
    if args.report_only:
        saved = json.loads((output_dir / "results.json").read_text())
        report(saved["runs"], saved["aggregation_ms"], default_adapter_parameters())
        return
    cache_dir = output_dir / "cache"
    torch.set_num_threads(1)
    rows = [one_run(setup, seed, output_dir, cache_dir) for seed in range(args.seeds) for setup in SETUPS]
    overrides = f"federation.global_rounds=1; data.cache_dir={cache_dir}; wandb.enabled=false"
    run = run_in_process(load_config("configs/default.json", overrides), output_dir / "sizes")
    rng = np.random.default_rng(0)
    adapters = run.strategy.recipe.state
    states = [{k: v + rng.normal(0, 0.01, v.shape).astype(v.dtype) for k, v in adapters.items()} for _ in range(5)]
    parameters = int(sum(v.size for v in adapters.values()))
    assert parameters == default_adapter_parameters()
    times = aggregation_times(states, repeats=20)
    print(f"Machine: {platform.machine()}, {torch.get_num_threads()} torch thread, torch {torch.__version__}")
    report(rows, times, parameters)
    results = {"runs": rows, "aggregation_ms": times}
    (output_dir / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
