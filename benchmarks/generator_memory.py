"""How big and how hungry are the two VAE generator designs, as the token grid L grows?

For L in {4, 8, 16, 64, 1214} and both designs, on one batch of random (8, 1214, 768)
AST-like sequences (the learner pools them to L internally):

- **flat**: the seed's MLP VAE ``VAEGenerator(input_dim=768, sequence_length=L, hidden_dim=1024,
  latent_dim=256)``, whose first and last Linear layers grow with L*768;
- **tokenwise**: ``TokenwiseVAEGenerator(input_dim=768, sequence_length=L)`` (hidden 256, latent
  256), whose parameter count does not depend on L.

What is measured, per (design, L):

- parameters: for flat, ``count_flat_vae_parameters`` for every L (checked against the allocated
  model where one is built); for tokenwise, counted on the model;
- peak resident memory (``ru_maxrss``) of a fresh child process (``--one DESIGN L``) that builds
  the input, the model and a ``GeneratorLearner`` (AdamW) and runs 1 warm-up + ``STEPS`` training
  steps (forward, VAE loss, backward, grad clip, AdamW step). A baseline child (``--baseline``)
  only imports torch and the same project modules and builds the input, so the table also shows
  the increment due to the model, its gradients, AdamW state and activations;
- time of one training step: median of ``STEPS`` steps after the warm-up, 2 torch threads;
- time to generate 8 samples of 1214 tokens (``sample(8, None, target_sequence_length=1214)``):
  median of ``SAMPLES`` calls after one warm-up call.

The flat design is only allocated where it is feasible (L <= 64). At L = 1214 its parameter
count is computed and its memory is reported as the fp32 bytes weights + gradients + the two
AdamW moments would need (params * 4 bytes * 4), without running it.

Usage: ``python benchmarks/generator_memory.py [--json outputs/benchmarks/generator_memory.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from feda2v_flwr.models.generators import TokenwiseVAEGenerator, VAEGenerator, count_flat_vae_parameters
from feda2v_flwr.models.generators.base import SequenceGenerator
from feda2v_flwr.training.generator_learner import GeneratorLearner

LENGTHS = (4, 8, 16, 64, 1214)
DESIGNS = ("flat", "tokenwise")
MAX_FLAT_ALLOCATED = 64  # the flat VAE is only built up to this L
BATCH, TOKENS, DIM = 8, 1214, 768
FLAT_HIDDEN, LATENT = 1024, 256
STEPS, SAMPLES = 5, 5
THREADS = 2
SEED = 0


def max_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def make_input() -> torch.Tensor:
    torch.manual_seed(SEED)
    return torch.randn(BATCH, TOKENS, DIM)  # (B, T, D), stands in for AST token embeddings


def flat_parameters(length: int) -> int:
    return count_flat_vae_parameters(
        input_dim=DIM, sequence_length=length, hidden_dim=FLAT_HIDDEN, latent_dim=LATENT, condition_dim=0
    )


def build(design: str, length: int) -> SequenceGenerator:
    if design == "flat":
        return VAEGenerator(input_dim=DIM, sequence_length=length, hidden_dim=FLAT_HIDDEN, latent_dim=LATENT)
    return TokenwiseVAEGenerator(input_dim=DIM, sequence_length=length)


def timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ---- children: one measurement per fresh process ---------------------------------------------
def run_baseline() -> dict[str, Any]:
    torch.set_num_threads(THREADS)
    x = make_input()
    return {"input_mb": x.numel() * x.element_size() / 1e6, "peak_rss_mb": max_rss_mb()}


def run_one(design: str, length: int) -> dict[str, Any]:
    torch.set_num_threads(THREADS)
    x = make_input()
    torch.manual_seed(SEED)
    model = build(design, length)
    learner = GeneratorLearner(model, learning_rate=1e-3, total_epochs=10)
    rng = torch.Generator().manual_seed(SEED)

    def train_step() -> None:
        if learner.step(x, None, noise_std=0.1, rng=rng) is None:
            raise RuntimeError(f"{design} L={length}: the training step was skipped (non-finite loss)")

    train_step()  # warm-up
    step_times = [timed(train_step) for _ in range(STEPS)]
    train_rss = max_rss_mb()

    model.eval()
    sample_rng = torch.Generator().manual_seed(SEED)
    shape: list[int] = []

    def generate() -> None:
        out = model.sample(BATCH, None, generator=sample_rng, target_sequence_length=TOKENS, interpolation="linear")
        shape[:] = list(out.shape)

    generate()  # warm-up
    sample_times = [timed(generate) for _ in range(SAMPLES)]
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "step_s": statistics.median(step_times),
        "step_s_all": step_times,
        "sample_s": statistics.median(sample_times),
        "sample_s_all": sample_times,
        "sample_shape": shape,
        "peak_rss_train_mb": train_rss,
        "peak_rss_mb": max_rss_mb(),
    }


def child(*args: str) -> dict[str, Any]:
    """Run this file with ``args`` in a fresh interpreter and parse the JSON line it prints last."""
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"child {args} failed with exit status {done.returncode}:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- parent: all measurements, table, JSON --------------------------------------------------
def measure() -> dict[str, Any]:
    load_before = os.getloadavg()[0]  # timings are only meaningful on an otherwise idle machine
    baseline = child("--baseline")
    print(f"baseline child: peak RSS {baseline['peak_rss_mb']:.0f} MB", flush=True)
    rows = []
    for design in DESIGNS:
        for length in LENGTHS:
            row: dict[str, Any] = {"design": design, "L": length}
            if design == "flat":
                row["parameters"] = flat_parameters(length)
            if design == "flat" and length > MAX_FLAT_ALLOCATED:
                row["allocated"] = False
                row["weights_grads_adamw_fp32_gb"] = row["parameters"] * 4 * 4 / 1e9
            else:
                result = child("--one", design, str(length))
                if "parameters" in row and row["parameters"] != result["parameters"]:
                    raise SystemExit(f"flat L={length}: counted {row['parameters']}, built {result['parameters']}")
                row |= result | {"allocated": True}
                row["step_increment_mb"] = result["peak_rss_train_mb"] - baseline["peak_rss_mb"]
            rows.append(row)
            print(f"{design} L={length}: done", flush=True)
    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": THREADS,
        "batch": BATCH,
        "tokens": TOKENS,
        "dim": DIM,
        "steps_timed": STEPS,
        "samples_timed": SAMPLES,
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
        "baseline": baseline,
        "rows": rows,
    }


def table(report: dict[str, Any]) -> str:
    load = report["load_average_1min"]
    lines = [
        f"Measured {report['date']} on {report['machine']}, {report['threads']} torch threads, "
        f"torch {report['torch']}; batch {report['batch']} x {report['tokens']} x {report['dim']}; "
        "command `python benchmarks/generator_memory.py`.",
        "Baseline child (torch + project imports + input tensor): "
        f"peak RSS {report['baseline']['peak_rss_mb']:.0f} MB. 1-min load average before / after: "
        f"{load['before']:.2f} / {load['after']:.2f}.",
        "",
        "| design | L | parameters | peak RSS, training (MB) | increment over baseline (MB) | "
        "train step (s, median) | sample 8 x 1214 (s, median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        head = f"| {row['design']} | {row['L']} | {row['parameters']:,} |"
        if not row["allocated"]:
            need = (
                f"not allocated (would need ~{row['weights_grads_adamw_fp32_gb']:.1f} GB for weights+grads+AdamW fp32)"
            )
            lines.append(f"{head} {need} | – | – | – |")
        else:
            lines.append(
                f"{head} {row['peak_rss_train_mb']:,.0f} | {row['step_increment_mb']:,.0f} | "
                f"{row['step_s']:.3f} | {row['sample_s']:.3f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="outputs/benchmarks/generator_memory.json", help="where to write results")
    parser.add_argument("--one", nargs=2, metavar=("DESIGN", "L"), help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()
    if args.baseline:
        print(json.dumps(run_baseline()))
        return
    if args.one:
        design, length = args.one
        if design not in DESIGNS:
            raise SystemExit(f"unknown design '{design}'; expected one of {DESIGNS}")
        print(json.dumps(run_one(design, int(length))))
        return

    report = measure()
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(table(report))
    print(f"\nJSON written to {out}")


if __name__ == "__main__":
    main()
