"""PNG plots of a run, from its ``metrics.jsonl`` (and the last round's embeddings), written to
``<run>/plots/``. Also a command: ``python -m feda2v_flwr.reporting.plots outputs/<run>``."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from feda2v_flwr.reporting.metrics import read_metrics  # noqa: E402

EMBEDDINGS_FILE = "embeddings_last_round.npz"


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(r["round"], r[key]) for r in records if isinstance(r.get(key), int | float)]
    return [p[0] for p in points], [float(p[1]) for p in points]


def _slots(records: list[dict], prefix: str) -> list[str]:
    return sorted({k[len(prefix) :] for r in records for k in r if k.startswith(prefix)})


def _style(*axes) -> None:
    """A legend where lines are labelled, and a light grid."""
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        ax.grid(alpha=0.3)


def _save(fig, path: Path, *, rounds_axis: bool = True) -> Path:
    if rounds_axis:
        for ax in fig.axes:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_losses(metrics: list[dict], path: Path) -> Path:
    fits = [{"round": m["round"], **m.get("client_loss_mean", {})} for m in metrics if m["phase"] == "fit"]
    rounds = [m for m in metrics if m["phase"] == "round"]
    fig, (clients, server) = plt.subplots(1, 2, figsize=(10, 3.8))
    for slot in _slots(fits, "train_loss_"):
        clients.plot(*_series(fits, f"train_loss_{slot}"), marker="o", label=slot)
    clients.set(title="clients: training loss (mean over nodes)", xlabel="round", ylabel="loss")
    for key, label in (("generator_loss", "generator"), ("adapter_finetuning_loss", "adapter fine-tuning")):
        x, y = _series(rounds, key)
        if x:
            server.plot(x, y, marker="o", label=label)
    server.set(title="server step", xlabel="round", ylabel="loss")
    _style(clients, server)
    return _save(fig, path)


def plot_evaluation(metrics: list[dict], path: Path) -> Path:
    evaluations = [m for m in metrics if m["phase"] == "evaluate"]
    fig, (top1, cosine) = plt.subplots(1, 2, figsize=(10, 3.8))
    top1.plot(*_series(evaluations, "test_retrieval_top1"), marker="o", color="black", label="mean")
    for slot in _slots(evaluations, "test_retrieval_top1_"):
        top1.plot(*_series(evaluations, f"test_retrieval_top1_{slot}"), marker=".", linestyle="--", label=slot)
    top1.set(title="test retrieval top-1", xlabel="round", ylim=(0, 1.02))
    for slot in _slots(evaluations, "test_cosine_"):
        cosine.plot(*_series(evaluations, f"test_cosine_{slot}"), marker="o", label=slot)
    cosine.set(title="test cosine (adapter output vs target)", xlabel="round")
    _style(top1, cosine)
    if not any("test_retrieval_top1" in m for m in evaluations):
        _say_why_empty(
            fig,
            "no evaluation with test clips in this run (federation.eval_gap 0, every evaluation "
            "failed, or no node had test clips)",
        )
    return _save(fig, path)


def plot_generator_validation(metrics: list[dict], path: Path) -> Path:
    validations = [m for m in metrics if m["phase"] == "validation"]
    fig, (similarity, errors) = plt.subplots(1, 2, figsize=(10, 3.8))
    similarity.plot(*_series(validations, "similarity"), marker="o")
    similarity.set(title="generator validation: cosine to held-out class means", xlabel="round")
    for key in ("mse", "l1"):
        errors.plot(*_series(validations, key), marker="o", label=key)
    errors.set(title="generator validation: errors", xlabel="round")
    _style(similarity, errors)
    if not validations:
        trained = any(m["phase"] == "generator" for m in metrics)
        _say_why_empty(
            fig,
            "the generator was never validated: no class had val clips (data.val_ratio), or no round was a "
            "validation round (feda2v.generator_validation_frequency)"
            if trained
            else "no server generator in this run (feda2v.use_generator false or generator_type 'gaussian')",
        )
    return _save(fig, path)


def _say_why_empty(fig, reason: str) -> None:
    """A plot with nothing to draw says so on its face (in every panel)."""
    for ax in fig.axes:
        ax.text(
            0.5,
            0.5,
            textwrap.fill(reason, 48),
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=9,
            bbox={"facecolor": "white", "edgecolor": "gray"},
        )


def pca_2d(points: np.ndarray) -> np.ndarray:
    """(N, D) -> (N, 2): projection on the two leading principal components."""
    centred = points - points.mean(axis=0, keepdims=True)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    return centred @ components[:2].T


def plot_embeddings(embeddings: dict[str, np.ndarray], path: Path) -> Path:
    """Real vs synthetic audio embeddings (token-averaged), per class, on one PCA plane."""
    classes = [str(c) for c in embeddings["classes"]]
    real, synthetic = embeddings["real"], embeddings["synthetic"]
    projected = pca_2d(np.concatenate([real, synthetic]))
    real_2d, synthetic_2d = projected[: len(real)], projected[len(real) :]
    colours = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(7, 5.5))
    for index, name in enumerate(classes):
        colour = colours(index % colours.N)
        s = synthetic_2d[embeddings["synthetic_labels"] == index]
        r = real_2d[embeddings["real_labels"] == index]
        ax.scatter(s[:, 0], s[:, 1], s=14, alpha=0.45, color=colour)
        ax.scatter(r[:, 0], r[:, 1], s=90, marker="*", edgecolor="black", linewidth=0.5, color=colour, label=name)
    ax.set(
        title="last round: synthetic samples (dots) vs the clients' real class means (stars)",
        xlabel="PC 1",
        ylabel="PC 2",
    )
    ax.legend(fontsize=7, ncol=2, loc="best")
    ax.grid(alpha=0.3)
    return _save(fig, path, rounds_axis=False)


def write_run_plots(run_dir: Path) -> list[Path]:
    """Every plot the run's files allow, in ``run_dir/plots``; returns their paths."""
    plots = run_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    metrics = read_metrics(run_dir / "metrics.jsonl")
    written = [
        plot_losses(metrics, plots / "losses.png"),
        plot_evaluation(metrics, plots / "evaluation.png"),
        plot_generator_validation(metrics, plots / "generator_validation.png"),
    ]
    if (plots / EMBEDDINGS_FILE).exists():
        with np.load(plots / EMBEDDINGS_FILE) as embeddings:
            written.append(plot_embeddings(dict(embeddings), plots / "embeddings_pca.png"))
    return written


if __name__ == "__main__":
    for run in sys.argv[1:] or ["."]:
        for written_path in write_run_plots(Path(run)):
            print(written_path)
