"""Does the server step help? Ablations of FedA2V with several seeds, written to docs/RESULTS.md.

Three tables, each cell run with every seed (mean +- 95 % CI over seeds, paired differences):

- methods: the same federation under every aggregation / server-step method (FedAvg, FedAvg run
  longer, FedProx at three mu, server fine-tuning with and without generators or sampled
  statistics, centralised), plus training-free heads built from the same uploads;
- non-IID: standalone vs FedAvg vs FedA2V as the label skew changes (1, 2, 5 classes per node;
  Dirichlet 0.1 and 1.0);
- sequence length: the statistics' (and generator's) token count L against bytes uploaded.

Every cell is a real federation: Flower's server loop, the FedA2V strategy and clients, in one
process (``feda2v_flwr.inprocess``; ``flwr run`` would add a Ray start per cell). Finished cells are
kept as JSON in ``--output-dir``, so an interrupted run goes on where it stopped. Each testbed
(config file) has its own block in the document.

Usage (the documented setting, 5 seeds): ``python experiments/ablation.py --tables methods`` and
``... --tables methods --config configs/sonic_pi_aisfx.json``; ``--quick`` for a smoke test,
``--config configs/esc50_ablation.json`` for ESC-50. See docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import platform
import re
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parent.parent
if str(PROJECT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(PROJECT))

# ---- the grid ---------------------------------------------------------------------------------

NO_SERVER_STEP = "feda2v.use_generator=false; feda2v.global_model_train_from_nodes_adapters=false"
MIXTURE_UPLOADS = "feda2v.statistics_components=3"  # what a generator could learn beyond one Gaussian
# FedProx's mu is tuned: every value is a row, and the comparisons take the one with the best
# mean validation top-1 (``tuned``), never the test score.
PROX_MUS = (0.001, 0.01, 0.1)
METHODS: dict[str, tuple[str, str]] = {
    "none": (
        "standalone: every node keeps its own adapters",
        f"feda2v.adapter_aggregation_mode=none; {NO_SERVER_STEP}",
    ),
    "avg": ("FedAvg of the adapters, no server step", NO_SERVER_STEP),
    "avg-long": (
        "FedAvg run to convergence: 30 rounds of 1 local epoch (twice the default's 5 x 3 client epochs), "
        "no server step",
        f"federation.global_rounds=30; federation.local_epochs=1; {NO_SERVER_STEP}",
    ),
    **{
        f"avg+prox-{mu:g}": (
            f"FedProx: FedAvg with a proximal term of mu {mu:g} on the nodes' adapter training, no server step",
            f"federation.proximal_mu={mu:g}; {NO_SERVER_STEP}",
        )
        for mu in PROX_MUS
    },
    "avg+ft": (
        "avg + server fine-tuning on the clients' class means only (no generator)",
        "feda2v.use_generator=false",
    ),
    "avg+vae": ("avg + conditioned VAE + fine-tuning on real + synthetic (FedA2V)", ""),
    "avg+vae-uncond": ("as avg+vae, one unconditioned VAE per class", "feda2v.generator_conditioning=none"),
    "avg+gan": ("as avg+vae, a conditioned GAN", "feda2v.generator_type=gan"),
    "avg+gaussian": ("as avg+vae, per-class Gaussian sampling (FedPFT-style)", "feda2v.generator_type=gaussian"),
    "avg+gmm": (
        "as avg+gaussian, from 3-component Gaussian mixtures per class and node (FedPFT's uploads)",
        f"feda2v.generator_type=gaussian; {MIXTURE_UPLOADS}",
    ),
    "avg+vae-gmm": ("as avg+vae, the VAE trained on draws from the 3-component mixtures", MIXTURE_UPLOADS),
    "avg+clientvae": (
        "avg + fine-tuning with synthetic rows from the nodes' own conditioned VAEs (trained on their real clips; "
        "5 samples per class uploaded), no server generator",
        "feda2v.generator_training_mode=true; feda2v.synthetic_source=clients; feda2v.use_generator=false",
    ),
    "avg+vae-teach": (
        "as avg+vae, each synthetic row targeted at its own output of the owning nodes' adapters (as kd computes it)",
        "feda2v.synthetic_targets=teachers",
    ),
    "kd": (
        "distil the clients' adapters on VAE samples, then fine-tune as avg+vae",
        "feda2v.adapter_aggregation_mode=kd",
    ),
    "centralised": (
        "upper bound: one node holds every class's training clips, no server step",
        f"federation.num_clients=1; {NO_SERVER_STEP}",
    ),
}
# The methods table's rows unless --methods says otherwise: every method but the three earlier
# generator variants (kd, the GAN, the unconditioned VAEs), each as slow as avg+vae or slower and
# each below avg+vae in the earlier 3-seed tables; `--methods all` adds them.
OPTIONAL_METHODS = ("kd", "avg+gan", "avg+vae-uncond")
DEFAULT_METHODS = tuple(m for m in METHODS if m not in OPTIONAL_METHODS)
# Training-free heads from the same uploads (feda2v_flwr/evaluation/closed_form.py), scored like
# the adapters; measured in the avg+ft cells (the statistics of frozen tokens: the same uploads
# whatever the method) and shown as rows of their own.
HEAD_SOURCE = "avg+ft"
HEADS: dict[str, str] = {
    "ncm-cosine": "same uploads, no training: nearest class mean (cosine) on the pooled token means",
    "ncm-euclidean": "same uploads: nearest class mean (Euclidean)",
    "gaussian-nb": "same uploads: Gaussian naive Bayes from the class means and stds",
    "diagonal-lda": "same uploads: LDA with the pooled diagonal within-class variance",
    "fedpft-head": "same uploads: softmax-linear head trained on draws from the class Gaussians (FedPFT)",
}
# Equal compute: every method with a server fine-tuning takes this many optimizer steps per round
# (feda2v.global_model_train_steps), whatever the size of its fine-tuning set. 80 = the default
# avg+vae's own count: 10 client class means + 50 synthetic rows = 8 batches of 8, x 10 epochs.
FINETUNE_STEPS = 80
MATCHED_COMPUTE = f"feda2v.global_model_train_steps={FINETUNE_STEPS}"
# Power on the offline default: 80 procedural clips per class split 28 / 4 / 48 (train / val /
# test): the default's 28 training clips, and 48 test clips per class where the default has 8
# (one clip was 1/80 of the pooled top-1).
PROCEDURAL_SPLIT = "data.clips_per_class=80; data.train_ratio=0.35; data.val_ratio=0.05"
# Rough cost of a method (seconds per run on the default): the longest cells start first.
COST = {"kd": 160, "avg+vae-uncond": 120, "avg+gan": 110, "avg+gaussian": 45, "avg+gmm": 45}
COST.update(dict.fromkeys(("avg+vae", "avg+vae-gmm", "avg+vae-teach", "avg+clientvae"), 100))
SETTINGS: dict[str, str] = {
    "1 class/node": "federation.num_clients=10",  # disjoint classes, 10 nodes
    "2 classes/node": "",  # disjoint classes, 5 nodes (the default)
    "5 classes/node": "data.partitioning=classes_per_node; data.classes_per_node=5",
    "Dirichlet 0.1": "data.partitioning=dirichlet; data.dirichlet_alpha=0.1",
    "Dirichlet 1.0": "data.partitioning=dirichlet; data.dirichlet_alpha=1.0",
}
MAIN_SETTING = "2 classes/node"
MEASUREMENT_VERSION = 3  # bump when what a cell measures changes: kept cells are then rerun
NON_IID_METHODS = ("none", "avg", "avg+ft", "avg+vae")
# Sequence length: a finer mel-patch grid gives a longer token sequence (the stand-in for AST's
# 1214 tokens); the length-independent tokenwise VAE serves every L.
LONG_SEQUENCE = "feda2v.mel_patch.patch_frames=4; feda2v.vae_arch=tokenwise"
LENGTHS: tuple[int | None, ...] = (4, 16, 64, None)
LENGTH_METHODS = ("avg+ft", "avg+vae")


@dataclass(frozen=True)
class Cell:
    table: str  # methods | noniid | length
    setting: str
    method: str
    seed: int
    overrides: str

    @property
    def key(self) -> str:
        return re.sub(r"[^a-zA-Z0-9.+-]+", "_", f"{self.table}-{self.setting}-{self.method}-seed{self.seed}")


def length_overrides(length: int | None, full_length: int) -> str:
    """Statistics and generator at L tokens; the server resizes to the full length for fine-tuning."""
    value = "null" if length is None else str(length)
    return (
        f"{LONG_SEQUENCE}; feda2v.statistics_sequence_length={value}; "
        f"feda2v.generator_training_sequence_length={value}; feda2v.generator_output_sequence_length={full_length}"
    )


def fine_tunes(method: str) -> bool:
    """Whether the method has a server step (the fine-tuning whose steps are matched)."""
    return method in METHODS and NO_SERVER_STEP not in METHODS[method][1]


def grid(
    seeds: Iterable[int],
    tables: Iterable[str],
    full_length: int,
    matched: bool = True,
    methods: Iterable[str] = tuple(METHODS),
) -> list[Cell]:
    """Every cell of ``tables`` for ``seeds``, the methods table with ``methods`` only;
    ``matched``: server steps get ``FINETUNE_STEPS``."""
    cells = _grid(seeds, tables, full_length, tuple(methods))
    if not matched:
        return cells
    return [
        Cell(c.table, c.setting, c.method, c.seed, _join(c.overrides, MATCHED_COMPUTE)) if fine_tunes(c.method) else c
        for c in cells
    ]


def _grid(seeds: Iterable[int], tables: Iterable[str], full_length: int, methods: tuple[str, ...]) -> list[Cell]:
    cells = []
    for seed in seeds:
        if "methods" in tables:
            for method in methods:
                overrides = METHODS[method][1]
                cells.append(Cell("methods", MAIN_SETTING, method, seed, _join(SETTINGS[MAIN_SETTING], overrides)))
        if "noniid" in tables:
            for setting, setting_overrides in SETTINGS.items():
                for method in NON_IID_METHODS:
                    if "methods" in tables and setting == MAIN_SETTING and method in methods:
                        continue  # the methods table's cells
                    cells.append(Cell("noniid", setting, method, seed, _join(setting_overrides, METHODS[method][1])))
        if "length" in tables:
            for length in LENGTHS:
                for method in LENGTH_METHODS:
                    name = "full" if length is None else f"L={length}"
                    cells.append(
                        Cell(
                            "length",
                            name,
                            method,
                            seed,
                            _join(length_overrides(length, full_length), METHODS[method][1]),
                        )
                    )
    return cells


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


# ---- one cell ---------------------------------------------------------------------------------


def cell_overrides(cell: Cell, base_overrides: str) -> str:
    """Everything a cell changes in the config file: the invocation's overrides, the cell's, its
    seed, and no W&B or checkpoints (a flat VAE with its optimizer is ~180 MB; cells are measured,
    not resumed)."""
    seed_overrides = f"training.seed={cell.seed}; data.partition_seed={cell.seed}"
    fixed = "wandb.enabled=false; feda2v.generator_save_checkpoint=false"
    return _join(base_overrides, cell.overrides, seed_overrides, fixed)


def cell_fingerprint(cell: Cell, config_file: str, base_overrides: str) -> str:
    """The hash of the cell's resolved config plus the measurement version: a kept result is
    reused only when both match (another --config, --overrides or --quick reruns the cell)."""
    from feda2v_flwr.config import load_config
    from feda2v_flwr.config.loading import config_hash

    config = load_config(config_file, cell_overrides(cell, base_overrides))
    return f"{config_hash(config)}-m{MEASUREMENT_VERSION}"


def run_cell(cell: Cell, config_file: str, base_overrides: str, output_dir: str) -> dict:
    """Run one federation in this process and measure it (called in a worker process)."""
    import torch

    from feda2v_flwr.config import load_config
    from feda2v_flwr.inprocess import run_in_process

    torch.set_num_threads(1)
    logging.getLogger("flwr").setLevel(logging.WARNING)  # Flower's per-round lines, for each of many runs
    overrides = cell_overrides(cell, base_overrides)
    config = load_config(config_file, overrides)
    run_dir = Path(output_dir) / "runs" / cell.key
    start = time.perf_counter()
    run = run_in_process(config, run_dir)
    seconds = time.perf_counter() - start
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {
        "cell": asdict(cell),
        "fingerprint": cell_fingerprint(cell, config_file, base_overrides),
        "overrides": overrides,
        "seconds": seconds,
        "curve": [[m["round"], m.get("test_retrieval_top1")] for m in metrics if m["phase"] == "evaluate"],
        "val_curve": [[m["round"], m.get("val_retrieval_top1")] for m in metrics if m["phase"] == "evaluate"],
        "client_epochs": config.federation.global_rounds * config.federation.local_epochs,
        "own_split": run.strategy.run_log.summary.get("evaluation", {}),
        "federation_test": federation_test_metrics(run),
        "validation": _last(metrics, "validation"),
        "memorisation": memorisation(run),
        "upload": upload_bytes(metrics),
        "closed_form": closed_form_heads(run) if cell.method == HEAD_SOURCE else None,
        "finetune_steps": (_last(metrics, "finetune") or {}).get("steps", 0),
    }


def _pooled_test_split(run):
    """(the nodes' tasks, every node's test embeddings and labels concatenated)."""
    import torch

    tasks = [run.task(pid) for pid in sorted(run.clients)]
    splits = [task.split("test") for task in tasks]
    return tasks, torch.cat([e for e, _ in splits]), torch.cat([y for _, y in splits])


def plateau_round(val_curve: list[list], tolerance: float = 0.01) -> int | None:
    """The first round whose val top-1 is within ``tolerance`` of the run's best: where the
    validation metric stopped improving (None: no val numbers)."""
    points = [(r, v) for r, v in val_curve if v is not None and np.isfinite(v)]
    if not points:
        return None
    best = max(v for _, v in points)
    return next(r for r, v in points if v >= best - tolerance)


def final_value(curve: list[list]) -> float:
    """The last round's finite value of a per-round curve (nan: none)."""
    values = [v for _, v in curve if v is not None and np.isfinite(v)]
    return float(values[-1]) if values else float("nan")


def tuned(summary: dict, table: str, setting: str, family: str) -> str | None:
    """The member of a method family (e.g. ``avg+prox``, one row per mu) with the best mean
    validation top-1: the row the comparisons use. Chosen on validation, never on test."""

    def val(method: str) -> float:
        return summary[(table, setting, method)].get("val_top1", (np.nan, 0.0))[0]

    members = [key[2] for key in summary if key[:2] == (table, setting) and key[2].startswith(family + "-")]
    members = [m for m in members if np.isfinite(val(m))]
    return max(members, key=val) if members else None


def closed_form_heads(run) -> dict[str, dict[str, float]] | None:
    """The training-free heads built from the last round's uploads, on every node's test split
    pooled (the split ``federation_test_metrics`` scores)."""

    from feda2v_flwr.evaluation.closed_form import same_information_scores

    summaries = run.strategy.recipe.trainer.last_summaries
    if not summaries:
        return None
    tasks, embeddings, labels = _pooled_test_split(run)
    return same_information_scores(summaries, tasks[0].class_index, embeddings, labels, tasks[0].target_tensors)


def federation_test_metrics(run) -> dict[str, float]:
    """The final adapters on every node's test split pooled: the global adapters, or for
    standalone runs each node's own adapters (averaged over nodes)."""

    from feda2v_flwr.payload import ndarrays_to_module
    from feda2v_flwr.training.adapters import evaluate_adapters

    tasks, embeddings, labels = _pooled_test_split(run)
    first = tasks[0]
    global_arrays = [run.strategy.recipe.state[k] for k in run.strategy.adapter_keys]
    if run.strategy.config.feda2v.adapter_aggregation_mode == "none":
        results = []
        for client in run.clients.values():
            # the adapters the node uses: its own, or the initial ones if it never trained
            client.task._load_adapters(global_arrays, client._saved("local_adapters"))
            results.append(evaluate_adapters(client.task.model, embeddings, labels, client.task.target_tensors))
        return {k: float(np.mean([r[k] for r in results])) for k in results[0]}
    ndarrays_to_module(first.model, global_arrays)
    return evaluate_adapters(first.model, embeddings, labels, first.target_tensors)


def memorisation(run, samples_per_class: int = 32) -> dict[str, float] | None:
    """Does the generator reproduce training clips? Per class, at the statistics length: the
    median distance from each synthetic sample to its nearest *training* clip, divided by the
    same to its nearest *test* clip (unseen data), with as many training clips drawn as there
    are test clips so both sets have the same chance of holding a near neighbour. About 1: the
    samples are no closer to the clips behind the statistics than to unseen ones (whatever their
    spread); well below 1: memorisation. ``spread``: the mean distance to the class's training
    mean, synthetic over real (below 1: less varied than real data)."""
    import torch

    from feda2v_flwr.models.sequence import pool_tokens
    from feda2v_flwr.server.class_summary import ClassSummary

    trainer = run.strategy.recipe.trainer
    if not trainer.has_generator or not trainer.last_summaries:
        return None
    tasks = [run.task(pid) for pid in sorted(run.clients)]
    index = tasks[0].class_index
    ratios, spreads = [], []
    pick = torch.Generator().manual_seed(0)
    for name, summary in trainer.last_summaries.items():
        summary: ClassSummary
        length = summary.client_audio_means[0].shape[0]
        train = _class_rows(tasks, "train", index[name], length, pool_tokens)
        test = _class_rows(tasks, "test", index[name], length, pool_tokens)
        if len(train) < 2 or len(test) < 2:
            continue
        synthetic = trainer.synthetic_samples(name, summary, samples_per_class, length).cpu().flatten(1)
        centre = train.mean(0, keepdim=True)
        spreads.append(float(torch.cdist(synthetic, centre).mean() / torch.cdist(train, centre).mean()))
        size = min(len(train), len(test))
        train_subset = train[torch.randperm(len(train), generator=pick)[:size]]
        test_subset = test[torch.randperm(len(test), generator=pick)[:size]]
        to_train = torch.cdist(synthetic, train_subset).min(1).values
        to_test = torch.cdist(synthetic, test_subset).min(1).values
        ratios.append(float(to_train.median() / to_test.median()))
    if not ratios:
        return None
    return {
        "dcr_ratio": float(np.median(ratios)),
        "dcr_ratio_min": float(np.min(ratios)),
        "spread": float(np.mean(spreads)),
    }


def _class_rows(tasks, split: str, label: int, length: int, pool_tokens):
    import torch

    rows = []
    for task in tasks:
        embeddings, labels = task.split(split)
        mask = labels == label
        if mask.any():
            rows.append(pool_tokens(embeddings[mask], length).flatten(1))
    return torch.cat(rows) if rows else torch.zeros((0, 1))


def upload_bytes(metrics: list[dict]) -> dict[str, float]:
    """Per node and round: the whole upload, and the statistics part (upload - adapters)."""
    fits = [m for m in metrics if m["phase"] == "fit"]
    totals = [b for m in fits for b in m["payload_bytes_per_client"]]
    adapters = fits[0]["download_bytes_per_client"] if fits else 0
    total = float(np.mean(totals)) if totals else 0.0
    return {"total": total, "statistics": total - adapters}


def _last(metrics: list[dict], phase: str) -> dict | None:
    found = [m for m in metrics if m["phase"] == phase]
    return found[-1] if found else None


def _worker_init() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    logging.basicConfig(level=logging.WARNING)
    for name in ("flwr", "feda2v_flwr", "strategies"):
        logging.getLogger(name).setLevel(logging.WARNING)


# ---- the report -------------------------------------------------------------------------------


def with_head_rows(results: list[dict]) -> list[dict]:
    """``results`` plus one row per closed-form head of each cell that measured them: the same
    table, setting, seed and uploads; no rounds of its own (0 s, no generator numbers)."""
    rows = list(results)
    for r in results:
        for head, metrics in (r.get("closed_form") or {}).items():
            rows.append(
                {
                    **r,
                    "cell": {**r["cell"], "method": head},
                    "federation_test": metrics,
                    "own_split": {},
                    "validation": None,
                    "memorisation": None,
                    "seconds": 0.0,
                    "finetune_steps": 0,
                    "client_epochs": 0,
                    "curve": [],
                    "val_curve": [],
                }
            )
    return rows


def summarise(results: list[dict]) -> dict[tuple[str, str, str], dict]:
    """Mean and 95 % CI over seeds of every cell's numbers (the closed-form heads as rows)."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in with_head_rows(results):
        c = r["cell"]
        groups.setdefault((c["table"], c["setting"], c["method"]), []).append(r)
    out = {}
    for key, runs in groups.items():
        values = {
            "top1": [r["federation_test"]["retrieval_top1"] for r in runs],
            "own_top1": [r["own_split"].get("test_retrieval_top1", np.nan) for r in runs],
            "cosine": [
                np.mean([r["federation_test"][k] for k in r["federation_test"] if k.startswith("cosine_")])
                for r in runs
            ],
            "mse_clip": [r["federation_test"].get("mse_clip", np.nan) for r in runs],
            "mse_t5": [r["federation_test"].get("mse_t5", np.nan) for r in runs],
            "val_similarity": [(r["validation"] or {}).get("similarity", np.nan) for r in runs],
            "dcr_ratio": [(r["memorisation"] or {}).get("dcr_ratio", np.nan) for r in runs],
            "spread": [(r["memorisation"] or {}).get("spread", np.nan) for r in runs],
            "upload": [r["upload"]["total"] for r in runs],
            "upload_stats": [r["upload"]["statistics"] for r in runs],
            "seconds": [r["seconds"] for r in runs],
            "finetune_steps": [r.get("finetune_steps", np.nan) for r in runs],
            "client_epochs": [r.get("client_epochs", np.nan) for r in runs],
            "plateau_round": [plateau_round(r.get("val_curve", [])) or np.nan for r in runs],
            "val_top1": [final_value(r.get("val_curve", [])) for r in runs],
        }
        seeds = [r["cell"]["seed"] for r in runs]
        out[key] = {
            "n": len(runs),
            "seeds": seeds,
            "per_seed_top1": dict(zip(seeds, values["top1"], strict=True)),
            "curves": [r["curve"] for r in runs],
            **{k: _mean_ci(v) for k, v in values.items()},
        }
    return out


def _mean_ci(values: list[float]) -> tuple[float, float]:
    """(mean, half-width of its 95 % confidence interval: Student's t over the seeds)."""
    array = np.asarray(values, dtype=float)
    if np.isnan(array).all():
        return (float("nan"), float("nan"))
    finite = array[np.isfinite(array)]
    return float(finite.mean()), ci95(finite)


def ci95(values: np.ndarray) -> float:
    """Half-width of the 95 % confidence interval of the mean of ``values`` (0 for one value)."""
    from scipy import stats

    n = len(values)
    if n < 2:
        return 0.0
    return float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n))


def detectable_effect(diffs: np.ndarray, power: float = 0.8) -> float:
    """The smallest mean paired difference a two-sided paired t-test (alpha 0.05) detects with
    ``power``, given the spread of ``diffs`` over the seeds: (t_0.975 + t_power) * sd / sqrt(n)."""
    from scipy import stats

    n = len(diffs)
    if n < 2:
        return float("nan")
    return float((stats.t.ppf(0.975, n - 1) + stats.t.ppf(power, n - 1)) * diffs.std(ddof=1) / np.sqrt(n))


def _fmt(pair: tuple[float, float], digits: int = 3) -> str:
    mean, std = pair
    return "–" if np.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _mb(pair: tuple[float, float]) -> str:
    return f"{pair[0] / 1e6:.3f}" if not np.isnan(pair[0]) else "–"


def methods_table(summary: dict) -> list[str]:
    lines = [
        "| method | what it does | top-1 | val top-1 | top-1 own split | cosine | MSE clip | MSE t5 "
        "| generator val. cosine | DCR ratio | spread | client epochs (rounds x local) | val plateau round "
        "| fine-tuning steps / round | upload per node and round (MB) | s / run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    described = {**{m: d for m, (d, _) in METHODS.items()}, **HEADS}
    for method, description in described.items():
        s = summary.get(("methods", MAIN_SETTING, method))
        if s is None:
            continue
        lines.append(
            f"| `{method}` | {description} | **{_fmt(s['top1'])}** | {_fmt(s.get('val_top1', (np.nan, 0)))} | "
            f"{_fmt(s['own_top1'])} | {_fmt(s['cosine'])} | "
            f"{_fmt(s['mse_clip'])} | {_fmt(s['mse_t5'])} | {_fmt(s['val_similarity'])} | {_fmt(s['dcr_ratio'], 2)} | "
            f"{_fmt(s['spread'], 2)} | {_count(s, 'client_epochs')} | {_count(s, 'plateau_round')} | "
            f"{_count(s, 'finetune_steps')} | {_mb(s['upload'])} | {s['seconds'][0]:.0f} |"
        )
    return lines


def _count(cell: dict, key: str) -> str:
    value = cell.get(key, (float("nan"), 0.0))[0]
    return "–" if np.isnan(value) else f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def unmatched_compute(sa: dict, sb: dict) -> str | None:
    """Why two server-step cells cannot be compared (their fine-tuning steps differ), or None."""
    a, b = (s.get("finetune_steps", (float("nan"), 0.0))[0] for s in (sa, sb))
    if a > 0 and b > 0 and a != b:
        return f"unequal fine-tuning steps per round ({a:.0f} vs {b:.0f})"
    return None


def cell_summary(summary: dict, table: str, setting: str, method: str) -> dict | None:
    if table == "noniid" and setting == MAIN_SETTING and (table, setting, method) not in summary:
        return summary.get(("methods", setting, method))
    return summary.get((table, setting, method))


def noniid_table(summary: dict) -> list[str]:
    lines = [
        "| setting | " + " | ".join(f"`{m}`" for m in NON_IID_METHODS) + " |",
        "|---|" + "---|" * len(NON_IID_METHODS),
    ]
    for setting in SETTINGS:
        row = [cell_summary(summary, "noniid", setting, m) for m in NON_IID_METHODS]
        if all(r is None for r in row):
            continue
        lines.append(f"| {setting} | " + " | ".join(_fmt(r["top1"]) if r else "–" for r in row) + " |")
    return lines


def length_table(summary: dict) -> list[str]:
    lines = [
        "| L (tokens sent) | upload per node and round (MB) | of which statistics (MB) | "
        + " | ".join(f"`{m}` top-1" for m in LENGTH_METHODS)
        + " | `avg+vae` val. cosine | `avg+vae` DCR ratio | s / run (`avg+vae`) |",
        "|---|---|---|" + "---|" * len(LENGTH_METHODS) + "---|---|---|",
    ]
    for length in LENGTHS:
        name = "full" if length is None else f"L={length}"
        row = [summary.get(("length", name, m)) for m in LENGTH_METHODS]
        present = [r for r in row if r is not None]
        if not present:
            continue
        vae = summary.get(("length", name, "avg+vae"))
        generator = (
            f"{_fmt(vae['val_similarity'])} | {_fmt(vae['dcr_ratio'], 2)} | {vae['seconds'][0]:.0f}"
            if vae
            else "– | – | –"
        )
        lines.append(
            f"| {name} | {_mb(present[0]['upload'])} | {_mb(present[0]['upload_stats'])} | "
            + " | ".join(_fmt(r["top1"]) if r else "–" for r in row)
            + f" | {generator} |"
        )
    return lines


def paired(summary: dict, table: str, setting: str, a: str, b: str) -> tuple[float, float, int, int, int] | None:
    """The per-seed top-1 difference a - b: mean, its 95 % CI half-width, in how many seeds
    a > b and a < b, and the number of seeds."""
    sa, sb = cell_summary(summary, table, setting, a), cell_summary(summary, table, setting, b)
    if sa is None or sb is None:
        return None
    seeds = sorted(set(sa["per_seed_top1"]) & set(sb["per_seed_top1"]))
    if not seeds:
        return None
    diffs = paired_diffs(sa, sb)
    return float(diffs.mean()), ci95(diffs), int((diffs > 0).sum()), int((diffs < 0).sum()), len(seeds)


def paired_diffs(sa: dict, sb: dict) -> np.ndarray:
    seeds = sorted(set(sa["per_seed_top1"]) & set(sb["per_seed_top1"]))
    return np.array([sa["per_seed_top1"][s] - sb["per_seed_top1"][s] for s in seeds])


def mde_line(summary: dict, table: str, setting: str, methods: Iterable[str], reference: str = "avg+vae") -> str:
    """One line under a table: the smallest paired effect against ``reference`` its seeds detect."""
    ref = cell_summary(summary, table, setting, reference)
    effects = []
    for method in methods:
        other = cell_summary(summary, table, setting, method)
        if ref is None or other is None or method == reference:
            continue
        diffs = paired_diffs(other, ref)
        if len(diffs) > 1 and np.isfinite(detectable_effect(diffs)):
            effects.append(detectable_effect(diffs))
    if not effects:
        return f"_Smallest detectable effect: needs at least 2 seeds of `{reference}` and another row._"
    n = len(ref["per_seed_top1"])
    return (
        f"_Smallest top-1 difference to `{reference}` a paired t-test over these {n} seeds detects at 80 % power "
        f"(alpha 0.05): median {np.median(effects):.3f} over the rows (range {min(effects):.3f}-{max(effects):.3f})._"
    )


def findings(summary: dict, allow_unmatched: bool = False) -> list[str]:
    """Plain statements computed from the tables (paired over seeds), so none lacks a row. Two
    server steps with unequal fine-tuning compute are not compared unless ``allow_unmatched``."""
    lines = []

    def say(table: str, setting: str, a: str, b: str, what: str) -> None:
        p = paired(summary, table, setting, a, b)
        if p is None:
            return
        why = unmatched_compute(cell_summary(summary, table, setting, a), cell_summary(summary, table, setting, b))
        if why and not allow_unmatched:
            lines.append(f"- {what} ({setting}): `{a}` vs `{b}` not compared: {why} (--allow-unmatched compares them).")
            return
        mean, ci, wins, losses, n = p
        if n < 3:
            verdict = f"{n} seed(s): too few to tell"
        elif mean - ci > 0:
            verdict = "higher (the 95 % CI excludes 0)"
        elif mean + ci < 0:
            verdict = "lower (the 95 % CI excludes 0)"
        else:
            verdict = f"no difference larger than {max(abs(mean - ci), abs(mean + ci)):.3f} either way"
        diffs = paired_diffs(cell_summary(summary, table, setting, a), cell_summary(summary, table, setting, b))
        detectable = detectable_effect(diffs)
        lines.append(
            f"- {what} ({setting}): `{a}` − `{b}` = {mean:+.3f} ± {ci:.3f} top-1 (95 % CI); `{a}` higher in {wins}, "
            f"lower in {losses} of {n} seeds; detectable at 80 % power: {detectable:.3f} → **{verdict}**."
        )

    say("methods", MAIN_SETTING, "avg", "none", "Federating at all")
    say("methods", MAIN_SETTING, "avg-long", "avg", "FedAvg run to convergence against 5 rounds")
    say("methods", MAIN_SETTING, "avg+vae", "avg-long", "FedA2V against FedAvg run to convergence")
    prox = tuned(summary, "methods", MAIN_SETTING, "avg+prox")
    if prox is not None:
        say("methods", MAIN_SETTING, prox, "avg", "FedProx's proximal term (mu with the best validation top-1)")
        say("methods", MAIN_SETTING, "avg+vae", prox, "FedA2V against FedProx (mu tuned on validation)")
    say("methods", MAIN_SETTING, "avg+ft", "avg", "Server fine-tuning on the class means")
    say("methods", MAIN_SETTING, "avg+ft", "avg-long", "Server fine-tuning against FedAvg run to convergence")
    say("methods", MAIN_SETTING, "avg+vae", "avg", "The full server step (VAE + fine-tuning)")
    say("methods", MAIN_SETTING, "avg+vae", "avg+ft", "What the generator's samples add to the fine-tuning")
    for variant in ("avg+vae-uncond", "avg+gan", "avg+gaussian", "avg+gmm", "kd"):
        say("methods", MAIN_SETTING, variant, "avg+vae", f"`{variant}` against the conditioned VAE")
    say("methods", MAIN_SETTING, "avg+gmm", "avg+gaussian", "Mixture uploads against one Gaussian, sampled")
    say("methods", MAIN_SETTING, "avg+vae-gmm", "avg+gmm", "A VAE on the mixtures against sampling them")
    say("methods", MAIN_SETTING, "avg+vae-teach", "avg+vae", "Per-sample targets from the nodes' adapters")
    say("methods", MAIN_SETTING, "avg+clientvae", "avg+vae", "Client VAEs on real clips against the server VAE")
    say("methods", MAIN_SETTING, "avg+clientvae", "avg+gaussian", "Client VAEs' samples against Gaussian draws")
    for head in HEADS:
        say("methods", MAIN_SETTING, "avg+vae", head, f"FedA2V against `{head}` on the same uploads")
    for setting in SETTINGS:
        if setting == MAIN_SETTING:
            continue  # the methods table's cells: compared above
        say("noniid", setting, "avg+vae", "avg", "Server step under this skew")
        say("noniid", setting, "avg+vae", "avg+ft", "Generator samples under this skew")
    for length in LENGTHS:
        name = "full" if length is None else f"L={length}"
        say("length", name, "avg+vae", "avg+ft", "Generator samples at this statistics length")
    return lines


def _axes(width: float):
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, 4.0))


def _save(fig, ax, path: Path, drawn: bool, **legend) -> bool:
    """Write the figure if anything was drawn; always release it."""
    import matplotlib.pyplot as plt

    if drawn:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, **legend)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def plot_curves(summary: dict, path: Path, table: str, setting: str, methods: Iterable[str], title: str) -> bool:
    """Top-1 per round, mean over seeds with a +-std band, one line per method."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = _axes(7.6)
    drawn = False
    for method in methods:
        s = cell_summary(summary, table, setting, method)
        if s is None or not s["curves"]:
            continue
        rounds = [r for r, _ in s["curves"][0]]
        values = np.array([[v for _, v in curve] for curve in s["curves"]], dtype=float)
        mean, std = values.mean(0), values.std(0, ddof=1) if len(values) > 1 else np.zeros(values.shape[1])
        ax.plot(rounds, mean, marker="o", label=method)
        ax.fill_between(rounds, mean - std, mean + std, alpha=0.15)
        drawn = True
    ax.set_xlabel("round")
    ax.set_ylabel("test retrieval top-1 (nodes' own test splits)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    return _save(fig, ax, path, drawn, loc="center left", bbox_to_anchor=(1.01, 0.5))


def plot_length(summary: dict, path: Path) -> bool:
    """Top-1 against the bytes of statistics a node uploads per round, one line per method."""
    fig, ax = _axes(6.4)
    drawn = False
    for method in LENGTH_METHODS:
        points = []
        for length in LENGTHS:
            name = "full" if length is None else f"L={length}"
            s = summary.get(("length", name, method))
            if s is not None:
                points.append((s["upload_stats"][0] / 1e6, *s["top1"], name))
        if not points:
            continue
        x, mean, std, names = zip(*points, strict=True)
        ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=method)
        if not drawn:
            for xi, yi, label in zip(x, mean, names, strict=True):
                ax.annotate(label, (xi, yi), textcoords="offset points", xytext=(4, -12), fontsize=8)
        drawn = True
    ax.set_xscale("log")
    ax.set_xlabel("statistics uploaded per node and round (MB, log scale)")
    ax.set_ylabel("test retrieval top-1 (federation test set)")
    ax.set_title("Statistics length L: quality against upload")
    return _save(fig, ax, path, drawn)


def code_version(root: Path = PROJECT) -> str:
    """The commit the document is generated at, and whether tracked code (outside docs/, which the
    runner writes) differs from it. Cells kept from an earlier invocation were run by code with
    the same cell fingerprints (resolved config and ``MEASUREMENT_VERSION``)."""
    import subprocess

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return done.stdout.rstrip() if done.returncode == 0 else ""  # porcelain lines start with a space

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "an unknown commit (not a git checkout)"
    status = git("status", "--porcelain", "--untracked-files=no").splitlines()
    changed = [line for line in status if not line[3:].startswith("docs/")]
    return f"commit `{commit}`" + (" with uncommitted changes" if changed else "")


def markers(testbed: str) -> tuple[str, str]:
    """The lines around a testbed's generated block: one document holds a block per testbed."""
    return f"<!-- ablation:{testbed}:start -->", f"<!-- ablation:{testbed}:end -->"


def report(
    results: list[dict],
    out: Path,
    command: str,
    ran_now: tuple[int, float, int],
    settings_note: str,
    allow_unmatched: bool = False,
    testbed: str = "default",
) -> str:
    """The generated part of the results document (tables, plots, findings) for one testbed (the
    config file's name). ``ran_now``: the cells this invocation ran, its wall time and its number
    of workers."""
    summary = summarise(results)
    figures = out.parent / "results" / testbed
    link = f"results/{testbed}"
    cells_now, wall, workers = ran_now
    total = sum(r["seconds"] for r in results)
    timing = f"{len(results)} federations, {total / 60:.1f} min of federation run time in all"
    if cells_now:
        timing += f"; this invocation ran {cells_now} of them in {wall / 60:.1f} min, {workers} at a time"
    start, end = markers(testbed)
    lines = [
        start,
        f"_Generated by `{command}` at {code_version()} on {time.strftime('%Y-%m-%d')} ({os.cpu_count()} CPU cores, "
        f"{platform.machine()}): {timing}. {settings_note}_",
        "",
    ]
    if any(k[0] == "methods" for k in summary):
        lines += [f"### Methods ({MAIN_SETTING}, mean ± 95 % CI over seeds)", "", *methods_table(summary), ""]
        lines += [mde_line(summary, "methods", MAIN_SETTING, [*METHODS, *HEADS]), ""]
        if plot_curves(summary, figures / "methods.png", "methods", MAIN_SETTING, METHODS, f"Methods, {MAIN_SETTING}"):
            lines += [f"![top-1 per round, every method]({link}/methods.png)", ""]
    if any(k[0] == "noniid" for k in summary):
        lines += ["### Label skew (top-1 on the federation's test set, mean ± 95 % CI)", "", *noniid_table(summary), ""]
        for setting in SETTINGS:
            if any(k[:2] == ("noniid", setting) for k in summary):
                lines += [f"{setting}: " + mde_line(summary, "noniid", setting, NON_IID_METHODS)]
        lines.append("")
        for setting in SETTINGS:
            name = re.sub(r"[^a-z0-9]+", "_", setting.lower()).strip("_")
            if plot_curves(summary, figures / f"noniid_{name}.png", "noniid", setting, NON_IID_METHODS, setting):
                lines.append(f"![{setting}]({link}/noniid_{name}.png)")
        lines.append("")
    if any(k[0] == "length" for k in summary):
        lines += ["### Statistics length L against upload (mean ± 95 % CI)", "", *length_table(summary), ""]
        if plot_length(summary, figures / "length.png"):
            lines += [f"![top-1 against the statistics' upload]({link}/length.png)", ""]
    found = findings(summary, allow_unmatched)
    if found:
        lines += ["### What the numbers say (paired over seeds)", "", *found, ""]
    lines.append(end)
    return "\n".join(lines)


def write_document(out: Path, generated: str, testbed: str = "default") -> None:
    """Replace the testbed's generated block of ``out`` (hand-written text and other testbeds'
    blocks are kept), or add it at the end."""
    start, end = markers(testbed)
    text = out.read_text() if out.exists() else "# Results\n"
    if start in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1] if end in rest else ""
        out.write_text(before + generated + after)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text.rstrip("\n") + "\n\n" + generated + "\n")


# ---- main -------------------------------------------------------------------------------------


def _dataset(config_file: str, overrides: str) -> str:
    from feda2v_flwr.config import load_config

    return load_config(config_file, overrides, measure=False).data.dataset


def full_token_count(config_file: str, overrides: str) -> int:
    from feda2v_flwr.config import load_config
    from feda2v_flwr.encoders import build_audio_encoder

    config = load_config(config_file, _join(overrides, LONG_SEQUENCE))
    encoder = build_audio_encoder(config, device="cpu")
    silence = np.zeros(int(config.data.clip_seconds * config.data.sample_rate), dtype=np.float32)
    return int(encoder.encode([silence]).shape[1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.json")
    parser.add_argument("--overrides", default="", help="applied to every cell, e.g. 'federation.global_rounds=3'")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument(
        "--tables", nargs="+", default=["methods", "noniid", "length"], choices=["methods", "noniid", "length"]
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=["all", *METHODS],
        default=list(DEFAULT_METHODS),
        metavar="METHOD",
        help=f"the methods table's rows, or all (default: all but {', '.join(OPTIONAL_METHODS)}); "
        "the other tables keep theirs",
    )
    parser.add_argument("--workers", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    parser.add_argument(
        "--output-dir",
        help="cells and runs (default: outputs/ablation/<config name>, --quick: outputs/ablation-quick/<config name>)",
    )
    parser.add_argument(
        "--out", help="the results document (default: docs/RESULTS.md, --quick: <output-dir>/RESULTS.md)"
    )
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 rounds, tiny sizes: a smoke test of the runner")
    parser.add_argument(
        "--unmatched-compute",
        action="store_true",
        help=f"server steps keep their own fine-tuning epochs instead of {FINETUNE_STEPS} steps per round",
    )
    parser.add_argument(
        "--allow-unmatched", action="store_true", help="compare server steps whose fine-tuning steps differ"
    )
    args = parser.parse_args(argv)

    base = args.overrides
    seeds = args.seeds
    if args.quick:
        seeds = seeds[:1]
        base = _join(QUICK, base)
    elif _dataset(args.config, base) == "procedural":
        base = _join(PROCEDURAL_SPLIT, base)
    testbed = Path(args.config).stem
    methods = list(METHODS) if "all" in args.methods else args.methods
    default_dir = Path("outputs/ablation-quick" if args.quick else "outputs/ablation") / testbed
    output_dir = Path(args.output_dir or default_dir).resolve()
    out = Path(args.out or (output_dir / "RESULTS.md" if args.quick else "docs/RESULTS.md"))
    (output_dir / "cells").mkdir(parents=True, exist_ok=True)
    full = full_token_count(args.config, base)
    cells = grid(seeds, args.tables, full, matched=not args.unmatched_compute, methods=methods)
    if args.quick:  # the long FedAvg, as long as the other cells' client epochs x 2 (not 30 rounds)
        cells = [replace(c, overrides=_join(c.overrides, QUICK_LONG)) if c.method == "avg-long" else c for c in cells]
    command = "python experiments/ablation.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(
        f"{len(cells)} federations ({len(seeds)} seeds), {args.workers} at a time; cells in {output_dir / 'cells'}",
        flush=True,
    )

    results, todo = [], []
    for cell in cells:
        done = output_dir / "cells" / f"{cell.key}.json"
        kept = json.loads(done.read_text()) if done.exists() else None
        if kept is not None and kept.get("fingerprint") == cell_fingerprint(cell, args.config, base):
            results.append(kept)
        else:
            todo.append(cell)
    if len(results):
        print(f"{len(results)} cells already done (kept from an earlier run)", flush=True)
    todo.sort(key=lambda c: -COST.get(c.method, 35))  # longest first: less idle time at the end
    start = time.perf_counter()
    context = multiprocessing.get_context("spawn")  # fresh interpreters: no state shared between cells
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=context, initializer=_worker_init) as pool:
        futures = {pool.submit(run_cell, cell, args.config, base, str(output_dir)): cell for cell in todo}
        for number, future in enumerate(as_completed(futures), start=1):
            cell = futures[future]
            result = future.result()
            (output_dir / "cells" / f"{cell.key}.json").write_text(json.dumps(result, indent=1))
            results.append(result)
            elapsed = time.perf_counter() - start
            print(
                f"[{number}/{len(todo)}] {cell.table:7s} {cell.setting:15s} {cell.method:15s} seed {cell.seed}: "
                f"top-1 {result['federation_test']['retrieval_top1']:.3f} in {result['seconds']:.0f} s "
                f"(elapsed {elapsed / 60:.1f} min)",
                flush=True,
            )
    wall = time.perf_counter() - start
    note = f"Settings: `{args.config}`" + (f" with `{base}`" if base else "") + "."
    if "length" in args.tables:
        note += f" The length table's encoder: `{LONG_SEQUENCE}` ({full} tokens)."
    if not args.unmatched_compute:
        note += f" Every server step fine-tunes {FINETUNE_STEPS} optimizer steps per round (`{MATCHED_COMPUTE}`)."
    generated = report(
        results, out, command.strip(), (len(todo), wall, args.workers), note, args.allow_unmatched, testbed
    )
    write_document(out, generated, testbed)
    (output_dir / "summary.json").write_text(
        json.dumps({"|".join(k): v for k, v in summarise(results).items()}, indent=1, default=float)
    )
    print(f"Wrote {out}", flush=True)


# Tiny sizes for --quick (and the test): every method's row, in seconds rather than minutes.
QUICK = (
    "federation.global_rounds=2; federation.local_epochs=1; data.clips_per_class=10; "
    "feda2v.generator_training_epochs=1; feda2v.global_model_train_epochs=1; feda2v.kd_training_epochs=1; "
    "feda2v.adapter_width=32; feda2v.generator_hidden_dim=32; feda2v.generator_latent_dim=8; "
    "feda2v.generator_token_hidden_dim=16; feda2v.clip_adapter_hidden_dims=[32]; feda2v.t5_adapter_hidden_dims=[32]"
)

QUICK_LONG = "federation.global_rounds=4"


if __name__ == "__main__":
    main()
