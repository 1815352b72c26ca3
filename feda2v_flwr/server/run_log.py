"""What a run reports on the server: the ``metrics.jsonl`` phases of each round, the one-line
round summary, ``summary.json`` (last round, checkpoint, final evaluation, partitions that never
contributed) and the plots. The strategy hands it what happened; nothing here changes a model."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.common import Scalar

from feda2v_flwr.images.drawing import decode_labels
from feda2v_flwr.images.scoring import image_metrics
from feda2v_flwr.payload import ClientUpdate
from feda2v_flwr.reporting import MetricsLog, WandbLogger
from feda2v_flwr.reporting.metrics import missing_partitions_line, read_summary, round_summary_line
from feda2v_flwr.server.generator_trainer import RoundReport, ServerGeneratorTrainer

log = logging.getLogger(__name__)

_AVERAGED = ("train_loss_", "generator_loss", "generator_similarity", "synthetic_retrieval_top1")


class RunLog:
    def __init__(
        self,
        run_dir: Path,
        metrics: MetricsLog,
        *,
        num_rounds: int,
        num_classes: int,
        wandb: WandbLogger | None = None,
        resumed: bool = False,
    ):
        """``resumed``: a resumed run goes on with the ``summary.json`` it had written."""
        self.run_dir = run_dir
        self.metrics = metrics
        self.wandb = wandb
        self.num_rounds, self.num_classes = num_rounds, num_classes
        self.summary: dict[str, Any] = _earlier_summary(run_dir) if resumed else {}
        self.drawn: set[int] = set()  # partitions asked to train in this session
        self.contributed: set[int] = set()  # partitions with at least one accepted update
        self.round_line = ""  # the round's summary, logged once its evaluation (if any) is in

    @property
    def wandb_run_id(self) -> str | None:
        return self.wandb.run_id if self.wandb else None

    # ---- fit -----------------------------------------------------------------------------------
    def fit(
        self, server_round: int, updates: list[ClientUpdate], dropped: list, failures: list, download_bytes: int
    ) -> tuple[list[float], list[int]]:
        """The round's fit record; returns (mean training loss per slot, upload bytes per node)."""
        clients = {str(u.partition_id): {"num_examples": u.num_examples, **u.metrics} for u in updates}
        keys = sorted({k for u in updates for k in u.metrics if k.startswith(_AVERAGED)})
        losses = {k: float(np.mean([u.metrics[k] for u in updates if k in u.metrics])) for k in keys}
        payload = [int(u.metrics.get("payload_bytes", 0)) for u in updates]
        self.metrics.write(
            server_round,
            "fit",
            clients=clients,
            client_loss_mean=losses,
            payload_bytes_per_client=payload,
            download_bytes_per_client=download_bytes,
            dropped=dropped,
            failures=failures,
        )
        return [v for k, v in losses.items() if k.startswith("train_loss_")], payload

    def skipped(self, server_round: int, reason: str, failures: list, dropped: list) -> None:
        log.warning("Round %d skipped: %s", server_round, reason)
        self.round_line = ""
        self.metrics.write(server_round, "skipped", reason=reason, failures=failures, dropped=dropped)

    def server_step(self, server_round: int, report: RoundReport, rejected: list[dict[str, str]]) -> None:
        """The server step's phases (even when it was rolled back) and what was rejected."""
        seconds = report.timings.get
        if report.generator_loss is not None:
            self.metrics.write(
                server_round,
                "generator",
                loss=report.generator_loss,
                epochs=report.generator_epochs,
                per_class=report.generator_per_class,
                skipped_batches=report.skipped_batches,
                seconds=seconds("generator_s"),
            )
        if report.kd_loss_per_slot:
            self.metrics.write(server_round, "kd", loss_per_slot=report.kd_loss_per_slot, seconds=seconds("kd_s"))
        if report.validation is not None:
            self.metrics.write(server_round, "validation", **report.validation, seconds=seconds("validation_s"))
        if report.finetune_loss is not None:
            self.metrics.write(
                server_round,
                "finetune",
                loss=report.finetune_loss,
                per_slot=report.finetune_loss_per_slot,
                steps=report.finetune_steps,
                synthetic_samples=report.synthetic_samples,
                seconds=seconds("finetune_s"),
            )
        if rejected:
            self.metrics.write(server_round, "rejected", rejected=rejected)

    def round_end(
        self,
        server_round: int,
        metrics: dict[str, Scalar],
        *,
        checkpoint: Path | None,
        report: RoundReport,
        client_losses: list[float],
        uploads: list[int],
        seconds: float,
        timings: dict[str, float | None],
        evaluation_due: bool,
    ) -> None:
        """The round's ``round`` line and summary line (logged now, or with the evaluation's top-1)."""
        if checkpoint is not None:
            self.metrics.write(server_round, "checkpoint", path=str(checkpoint))
        self.summary.update(
            last_round=server_round, checkpoint=str(checkpoint) if checkpoint else self.summary.get("checkpoint")
        )
        self.metrics.write(server_round, "round", **timings, **metrics)
        self.round_line = round_summary_line(
            server_round,
            self.num_rounds,
            ok=int(metrics["num_updates"]),
            failed=int(metrics["failures"]) + int(metrics["dropped"]),
            client_loss=float(np.mean(client_losses)) if client_losses else None,
            generator_loss=report.generator_loss,
            finetune_loss=report.finetune_loss,
            seconds=seconds,
            upload_bytes=float(np.mean(uploads)) if uploads else 0.0,
        )
        if not evaluation_due:
            log.info(self.round_line)
            self.round_line = ""

    def note_missing(self, server_round: int, last_round: int) -> None:
        """``summary.json``'s ``missing_partitions``: the ones drawn this session that never
        contributed a valid update; at the last round a warning names them."""
        missing = sorted(self.drawn - self.contributed)
        self.summary["missing_partitions"] = missing
        self.write_summary()
        if missing and server_round == last_round:
            log.warning(missing_partitions_line(missing))

    # ---- evaluate ------------------------------------------------------------------------------
    def evaluation(
        self,
        server_round: int,
        evaluations: list[dict[str, Scalar]],
        *,
        failures: int,
        dropped: list,
        seconds: float | None,
    ) -> dict[str, Scalar]:
        """The round's ``evaluate`` line, log lines and summary; returns the federation's metrics
        (empty when no node's evaluation was usable)."""
        if not evaluations:
            if dropped:
                self.metrics.write(server_round, "evaluate", failures=failures, dropped=dropped)
            if self.round_line:
                log.info("%s | top-1 n/a (%d evaluation failures)", self.round_line, failures + len(dropped))
                self.round_line = ""
            return {}
        metrics: dict[str, Scalar] = {**weighted_split_metrics(evaluations)}
        metrics.update(self.image_scores(server_round, evaluations))
        self.metrics.write(
            server_round,
            "evaluate",
            **metrics,
            failures=failures,
            **({"dropped": dropped} if dropped else {}),
            evaluate_round_s=seconds,
        )
        log.info(
            "Round %d evaluation: test retrieval top-1 %.3f (clip %.3f, t5 %.3f), test MSE %.4f",
            server_round,
            metrics.get("test_retrieval_top1", float("nan")),
            metrics.get("test_retrieval_top1_clip", float("nan")),
            metrics.get("test_retrieval_top1_t5", float("nan")),
            metrics.get("test_mse", float("nan")),
        )
        if self.round_line:
            log.info("%s | top-1 %.3f", self.round_line, metrics.get("test_retrieval_top1", float("nan")))
            self.round_line = ""
        self.summary.update(round=server_round, evaluation=metrics)
        self.write_summary()
        return metrics

    def image_scores(self, server_round: int, client_metrics: list[dict[str, Scalar]]) -> dict[str, Scalar]:
        """CLIP zero-shot scores of every node's pictures pooled (not averaged: balanced accuracy
        and macro F1 need the federation's labels and predictions together)."""
        drawn = [m for m in client_metrics if m.get("image_count", 0) > 0]  # labels checked by ReplyChecker
        if not drawn:
            return {}
        labels = np.concatenate([decode_labels(str(m["image_labels"])) for m in drawn])
        predictions = np.concatenate([decode_labels(str(m["image_predictions"])) for m in drawn])
        scores = {f"image_{k}": v for k, v in image_metrics(labels, predictions, self.num_classes).items()}
        log.info(
            "Round %d pictures: %d from %d nodes, CLIP zero-shot accuracy %.3f, balanced %.3f, macro F1 %.3f",
            server_round,
            len(labels),
            len(drawn),
            scores["image_accuracy"],
            scores["image_balanced_accuracy"],
            scores["image_macro_f1"],
        )
        return {"image_count": len(labels), **scores}

    # ---- files ---------------------------------------------------------------------------------
    def write_summary(self) -> None:
        (self.run_dir / "summary.json").write_text(json.dumps(self.summary, indent=1, sort_keys=True))

    def write_plots(self, trainer: ServerGeneratorTrainer | None = None) -> None:
        """The run's plots (``<run>/plots``), written at the end of the last round (``trainer``:
        with its real vs synthetic snapshot) and again after its evaluation. A failure here is a
        warning, not a failed run: the plots are a by-product."""
        from feda2v_flwr.reporting.plots import EMBEDDINGS_FILE, write_run_plots  # matplotlib, only here

        try:
            snapshot = embedding_snapshot(trainer) if trainer is not None else None
            if snapshot is not None:
                (self.run_dir / "plots").mkdir(parents=True, exist_ok=True)
                np.savez(self.run_dir / "plots" / EMBEDDINGS_FILE, **snapshot)
            written = write_run_plots(self.run_dir)
        except Exception as err:  # noqa: BLE001
            log.warning("Plots not written: %s: %s", type(err).__name__, err)
            return
        log.info("Plots: %s", ", ".join(p.name for p in written))


@torch.no_grad()
def embedding_snapshot(trainer: ServerGeneratorTrainer, num_samples: int = 20) -> dict[str, np.ndarray] | None:
    """The last round's classes as token-averaged audio embeddings, for plots: each client's
    real class mean (the server never sees single clips) and ``num_samples`` synthetic samples
    per class. None without a server generator. Leaves the sampling RNG as it was."""
    if not trainer.has_generator or not trainer.last_summaries:
        return None
    rng_state = trainer.rng.get_state()
    real, real_labels, synthetic, synthetic_labels = [], [], [], []
    try:
        for index, (name, summary) in enumerate(trainer.last_summaries.items()):
            real += [mean.float().mean(dim=0) for mean in summary.client_audio_means]  # (L, D) -> (D,)
            real_labels += [index] * len(summary.client_audio_means)
            samples = trainer.synthetic_samples(name, summary, num_samples)  # (n, L, D)
            synthetic.append(samples.float().mean(dim=1).cpu())  # (n, D)
            synthetic_labels += [index] * num_samples
    finally:
        trainer.rng.set_state(rng_state)
    return {
        "classes": np.array(list(trainer.last_summaries)),
        "real": torch.stack(real).numpy(),
        "real_labels": np.array(real_labels),
        "synthetic": torch.cat(synthetic).numpy(),
        "synthetic_labels": np.array(synthetic_labels),
    }


def weighted_split_metrics(client_metrics: list[dict[str, Scalar]]) -> dict[str, float]:
    """Average ``val_*`` / ``test_*`` metrics weighted by each client's example count of that split."""
    result: dict[str, float] = {}
    for split in ("val", "test"):
        weights = [float(m.get(f"{split}_examples", 0)) for m in client_metrics]
        total = sum(weights)
        result[f"{split}_examples"] = total
        if total == 0:
            continue
        keys = {k for m in client_metrics for k in m if k.startswith(f"{split}_") and k != f"{split}_examples"}
        for key in sorted(keys):
            result[key] = (
                sum(w * float(m[key]) for w, m in zip(weights, client_metrics, strict=True) if key in m) / total
            )
    return result


def _earlier_summary(run_dir: Path) -> dict[str, Any]:
    """What a stopped run had reported in ``summary.json`` (nothing if absent or cut short)."""
    try:
        return read_summary(run_dir)
    except (OSError, ValueError, TypeError):
        return {}
