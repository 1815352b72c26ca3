"""Does the server step close the non-IID gap? Runs the default simulation three ways with
``flwr run`` and writes a Markdown table:

- FedA2V (default config: server generator + validation + fine-tuning + checkpoints),
- FedA2V with ``kd`` aggregation (distillation from the clients' adapters on generator samples),
- plain FedAvg (server step off),
- centralised bound (one node holds all training data; same rounds and epochs).

The FedA2V run is repeated once to check that two runs with the same seed give bitwise
identical final adapters. Usage: ``python benchmarks/server_step.py --out docs/server_step.md``
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from feda2v_flwr.checkpointing.run import load_checkpoint
from feda2v_flwr.launch import run_simulation

PLAIN_FEDAVG = "feda2v.use_generator=false; feda2v.global_model_train_from_nodes_adapters=false"
VARIANTS = {
    "FedA2V (server generator + fine-tuning)": "",
    "FedA2V with kd aggregation": "feda2v.adapter_aggregation_mode=kd",
    "plain FedAvg (no server step)": PLAIN_FEDAVG,
    "centralised bound (1 node, all classes)": f"{PLAIN_FEDAVG}; federation.num_clients=1",
}


def final_adapters(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / "server_generator_latest.json")["global_adapters"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/server_step.md")
    parser.add_argument("--output-dir", default="outputs/benchmarks")
    args = parser.parse_args()
    output_dir, flwr_home = Path(args.output_dir).resolve(), Path(".flwr-home-bench").resolve()
    stamp = time.strftime("%Y%m%d-%H%M%S")

    rows, run_dirs = [], {}
    for index, (label, overrides) in enumerate([*VARIANTS.items(), ("FedA2V repeat", "")]):
        start = time.time()
        status, run_dir = run_simulation(
            config="configs/default.json",
            overrides=overrides,
            run_name=f"bench-{stamp}-{index}",
            output_dir=output_dir,
            flwr_home=flwr_home,
            stream=False,
        )
        wall = time.time() - start
        if status != "finished:completed":
            raise SystemExit(f"{label}: run ended as {status}; see {run_dir}")
        evaluation = json.loads((run_dir / "summary.json").read_text())["evaluation"]
        run_dirs[label] = run_dir
        rows.append((label, evaluation, wall))
        print(f"{label}: top-1 {evaluation['test_retrieval_top1']:.3f} in {wall:.0f} s", flush=True)

    first, repeat = final_adapters(run_dirs[rows[0][0]]), final_adapters(run_dirs["FedA2V repeat"])
    identical = first.keys() == repeat.keys() and all(torch.equal(first[k], repeat[k]) for k in first)

    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {torch.get_num_threads()} CPU threads, "
        f"torch {torch.__version__}; command `python benchmarks/server_step.py`.",
        "",
        "| setup | test retrieval top-1 (mean of slots) | clip slot | t5 slot | test MSE | wall time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for label, ev, wall in rows[:-1]:
        lines.append(
            f"| {label} | {ev['test_retrieval_top1']:.3f} | {ev['test_retrieval_top1_clip']:.3f} | "
            f"{ev['test_retrieval_top1_t5']:.3f} | {ev['test_mse']:.3f} | {wall:.0f} |"
        )
    lines += ["", f"Two FedA2V runs with the same seed, final global adapters bitwise identical: **{identical}**."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
