"""FedA2VStrategy: FedAvg whose ``aggregate_fit`` runs the server-side FedA2V round (SPEC 4).

Thin glue: decoding/validation lives in ``feda2v_flwr.payload``, aggregation maths in
``strategies.aggregation``, generator/fine-tuning science in ``strategies.server_trainer``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg

from feda2v_flwr.checkpoint import new_payload, save_checkpoint
from feda2v_flwr.config.loading import config_hash
from feda2v_flwr.config.paths import resolve_run_path
from feda2v_flwr.config.schema import ExperimentConfig
from feda2v_flwr.images.drawing import decode_labels
from feda2v_flwr.images.scoring import image_metrics
from feda2v_flwr.instructions import RoundInstructions
from feda2v_flwr.payload import ClientUpdate, for_transfer, largest_transferable
from feda2v_flwr.replies import (
    ReplyChecker,
)
from feda2v_flwr.reporting import MetricsLog, WandbLogger
from feda2v_flwr.reporting.metrics import missing_partitions_line, round_summary_line
from strategies.aggregation import aggregate_adapters, state_problem
from strategies.node_count import wait_for_nodes
from strategies.server_trainer import RoundReport, ServerGeneratorTrainer

log = logging.getLogger(__name__)


class FedA2VStrategy(FedAvg):
    def __init__(
        self,
        *,
        config: ExperimentConfig,
        trainer: ServerGeneratorTrainer,
        initial_state: dict[str, np.ndarray],
        slot_shapes: dict[str, tuple[int, ...]],
        classes: list[str],
        run_dir: Path,
        cache_dir: Path,
        checkpoint_dir: Path,
        metrics_log: MetricsLog,
        wandb_logger: WandbLogger | None = None,
        start_round: int = 0,
        last_round: int | None = None,
        evaluation_only: bool = False,
    ):
        """``start_round``: the round a resumed run's checkpoint is from (Flower counts this
        session's rounds from 1; the strategy adds the offset). ``last_round``: this session's
        last round (default ``global_rounds``). ``evaluation_only``: this session only evaluates
        its one round (a run stopped after its final checkpoint, before its final evaluation)."""
        fed = config.federation
        min_fit = min(fed.min_fit_clients, fed.num_clients)
        self.adapter_keys = list(initial_state)
        super().__init__(
            fraction_fit=1.0,
            fraction_evaluate=1.0,
            min_fit_clients=min_fit,
            min_evaluate_clients=min_fit,
            min_available_clients=fed.num_clients,
            accept_failures=fed.accept_failures,
            initial_parameters=ndarrays_to_parameters([initial_state[k] for k in self.adapter_keys]),
        )
        self.config = config
        self.trainer = trainer
        self.state = initial_state
        self.slot_shapes = slot_shapes
        self.classes = classes
        self.run_dir, self.cache_dir, self.checkpoint_dir = run_dir, cache_dir, checkpoint_dir
        self.metrics_log = metrics_log
        self.wandb = wandb_logger
        self.num_rounds = fed.global_rounds  # the run's length: schedules and client checkpoints follow it
        self.round_offset = start_round
        self._round_line = ""  # the round's summary, logged once its evaluation (if any) is in
        self._phase_started: dict[tuple[str, int], float] = {}  # (phase, round) -> perf_counter when configured
        self.last_round = last_round or fed.global_rounds
        pretrained = config.feda2v.pretrained_generator_path
        self.pretrained_path = resolve_run_path(pretrained) if pretrained else None  # clients get it absolute
        self.evaluation_only = evaluation_only
        self.summary: dict[str, Any] = _earlier_summary(run_dir) if start_round else {}  # a resumed run goes on
        self.drawn: set[int] = set()  # partitions asked to train in this session
        self.contributed: set[int] = set()  # partitions with at least one accepted update
        self.replies = ReplyChecker(config, classes, {k: v.shape for k, v in initial_state.items()}, slot_shapes)
        self._state_bound = largest_transferable(fed.max_abs_value, config.feda2v.transfer_dtype)

    def __repr__(self) -> str:
        return f"FedA2VStrategy(mode={self.config.feda2v.adapter_aggregation_mode})"

    # ---- configure -----------------------------------------------------------------------------
    def instructions(self, server_round: int) -> RoundInstructions:
        """What every node is told this round (its own folders, if set, replace these paths)."""
        return RoundInstructions(
            server_round=server_round,
            num_rounds=self.num_rounds,
            cache_dir=str(self.cache_dir),
            client_generator_dir=str(self.run_dir / "client_generators"),
            image_dir=str(self.run_dir / self.config.images.output_dir),  # an absolute output_dir stays
            client_state_dir=str(self.run_dir / "client_state"),
            save_client_state=self._checkpoint_due(server_round),
            keep_client_states=self.config.feda2v.checkpoint_keep_last,
            pretrained_generator_path=str(self.pretrained_path) if self.pretrained_path else None,
        )

    def _for_transfer(self, parameters: Parameters) -> Parameters:
        """The global adapters in ``feda2v.transfer_dtype`` (the server keeps them in float32)."""
        dtype = self.config.feda2v.transfer_dtype
        if dtype == "float32":
            return parameters
        return ndarrays_to_parameters(for_transfer(parameters_to_ndarrays(parameters), dtype))

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        if server_round == 1:  # this session's first round: the right number of nodes, or fail now
            fed = self.config.federation
            wait_for_nodes(client_manager, fed.num_clients, timeout=fed.node_wait_timeout)
        server_round += self.round_offset
        if self.evaluation_only:
            log.info("Round %d: trained and checkpointed before the run stopped; evaluating only", server_round)
            return []
        pairs = super().configure_fit(server_round, self._for_transfer(parameters), client_manager)
        self.replies.connected = {str(cid) for cid in client_manager.all()}
        self._phase_started[("fit", server_round)] = time.perf_counter()  # after waiting for the nodes
        participants = self.participants(server_round)
        instructions = self.instructions(server_round)
        if participants is not None:
            instructions = replace(instructions, participants=tuple(participants))
            log.info("Round %d: partitions %s train; the other nodes sit out", server_round, participants)
        else:
            log.info("Round %d: training on %d nodes", server_round, len(pairs))
        config = instructions.to_config()
        return [(c, FitIns(ins.parameters, {**ins.config, **config})) for c, ins in pairs]

    def _elapsed(self, phase: str, server_round: int) -> float | None:
        """Wall time since this round's ``phase`` was configured: clients' work, transfers and the
        server's own step (None when it was not configured here, e.g. strategy tests)."""
        started = self._phase_started.pop((phase, server_round), None)
        return None if started is None else time.perf_counter() - started

    def _evaluation_due(self, server_round: int) -> bool:
        return self.config.evaluation_due(server_round, self.last_round)

    def participants(self, server_round: int) -> list[int] | None:
        """Partial participation (``federation.clients_per_round``): the partition ids that train
        this round, drawn from (seed, round), so any run with that seed draws the same (Flower's
        own sampling goes by node ids, which are random per run). None: every node trains."""
        fed = self.config.federation
        if fed.clients_per_round is None or fed.clients_per_round >= fed.num_clients:
            return None
        rng = np.random.default_rng([self.config.training.seed, server_round])
        return sorted(int(i) for i in rng.choice(fed.num_clients, size=fed.clients_per_round, replace=False))

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        server_round += self.round_offset
        if not self._evaluation_due(server_round):
            return []
        pairs = super().configure_evaluate(server_round, self._for_transfer(parameters), client_manager)
        self._phase_started[("evaluate", server_round)] = time.perf_counter()
        config = self.instructions(server_round).to_config()
        return [(c, EvaluateIns(ins.parameters, {**ins.config, **config})) for c, ins in pairs]

    # ---- aggregate_fit ---------------------------------------------------------------------------
    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        server_round += self.round_offset
        start = time.perf_counter()
        failure_reasons = [_failure_reason(f) for f in failures]
        for reason in failure_reasons:
            log.warning("Round %d: a node failed: %s", server_round, reason)
        results = [(proxy, res) for proxy, res in results if not _sat_out(res)]
        updates, dropped = self.replies.fit_updates(results)
        self.drawn.update(self.participants(server_round) or range(self.config.federation.num_clients))
        min_fit = self.min_fit_clients  # every node is sampled (fraction 1.0); this many must reply validly
        if (failures and not self.accept_failures) or len(updates) < min_fit:
            reason = f"{len(updates)} valid replies (need {min_fit}), {len(failures)} failures"
            log.warning("Round %d skipped: %s", server_round, reason)
            self._round_line = ""
            self._elapsed("fit", server_round)
            self.metrics_log.write(server_round, "skipped", reason=reason, failures=failure_reasons, dropped=dropped)
            self._note_missing(server_round)
            return None, {"skipped": 1}
        self.contributed.update(u.partition_id for u in updates)
        self._note_missing(server_round)

        updates.sort(key=lambda u: u.partition_id)  # bitwise-reproducible sums, whatever the arrival order
        mode = self.config.feda2v.adapter_aggregation_mode
        # kd starts from the weighted average, then distils in the server step (it needs the generator)
        with_adapters = [u for u in updates if u.adapter_state is not None]  # some may have sent statistics only
        state = (
            aggregate_adapters(
                "avg" if mode == "kd" else mode,
                [u.adapter_state for u in with_adapters],
                [u.num_examples for u in with_adapters],
                self.state,
                trim_fraction=self.config.feda2v.trim_fraction,
            )
            if with_adapters
            else {k: v.copy() for k, v in self.state.items()}
        )
        rejected = []
        problem = state_problem(state, self._state_bound)
        if problem:
            log.warning("Round %d: aggregated adapters rejected (%s); the previous ones stay", server_round, problem)
            rejected.append({"stage": "aggregation", "reason": problem})
            state = {k: v.copy() for k, v in self.state.items()}
        wants_teachers = mode == "kd" or self.config.feda2v.synthetic_targets == "teachers"
        teachers = [(u.adapter_state, set(u.stats)) for u in with_adapters] if wants_teachers else None
        client_losses, uploads = self._log_fit(server_round, updates, dropped, failure_reasons)

        class_stats: dict[str, list] = {}
        for update in updates:
            for name, stats in update.stats.items():
                class_stats.setdefault(name, []).append(stats)
        f = self.config.feda2v
        report = RoundReport()
        if f.use_generator or f.global_model_train_from_nodes_adapters:
            log.info("Round %d: server step on %d classes", server_round, len(class_stats))
            torch.manual_seed(self.config.training.seed * 1_000_003 + server_round)  # e.g. GAN dropout: resumable
            before = self.trainer.snapshot()
            stepped, report = self.trainer.run_round(server_round, state, class_stats, teachers)
            self._log_server_step(server_round, report)
            problem = state_problem(stepped, self._state_bound) or self.trainer.generator_problem()
            if problem:
                log.warning(
                    "Round %d: the server step is rolled back (%s); the aggregated adapters stay", server_round, problem
                )
                rejected.append({"stage": "server_step", "reason": problem})
                self.trainer.restore(before)
                report = RoundReport()
            else:
                state = stepped
        if rejected:
            self.metrics_log.write(server_round, "rejected", rejected=rejected)
        self.state = state

        ckpt = self._maybe_checkpoint(server_round, report)
        whole = [d for d in dropped if "part" not in d]  # the rest: adapters dropped, statistics used
        metrics: dict[str, Scalar] = {"num_updates": len(updates), "dropped": len(whole), "failures": len(failures)}
        if len(whole) < len(dropped):
            metrics["adapters_dropped"] = len(dropped) - len(whole)
        if report.generator_loss is not None:
            metrics["generator_loss"] = report.generator_loss
        if report.finetune_loss is not None:
            metrics["adapter_finetuning_loss"] = report.finetune_loss
        self.summary.update(last_round=server_round, checkpoint=str(ckpt) if ckpt else self.summary.get("checkpoint"))
        fit_round_s = self._elapsed("fit", server_round)
        self.metrics_log.write(
            server_round,
            "round",
            aggregate_fit_s=time.perf_counter() - start,
            fit_round_s=fit_round_s,
            **metrics,
        )
        self._round_line = round_summary_line(
            server_round,
            self.num_rounds,
            ok=len(updates),
            failed=len(failures) + len(whole),
            client_loss=float(np.mean(client_losses)) if client_losses else None,
            generator_loss=report.generator_loss,
            finetune_loss=report.finetune_loss,
            seconds=fit_round_s if fit_round_s is not None else time.perf_counter() - start,
            upload_bytes=float(np.mean(uploads)) if uploads else 0.0,
        )
        if not self._evaluation_due(server_round):
            log.info(self._round_line)
            self._round_line = ""
        if server_round == self.last_round:
            self._write_plots(embeddings=True)
        return ndarrays_to_parameters([state[k] for k in self.adapter_keys]), metrics

    # ---- logging -------------------------------------------------------------------------------
    def _log_fit(
        self, server_round: int, updates: list[ClientUpdate], dropped: list, failures: list
    ) -> tuple[list[float], list[int]]:
        """The round's fit record; returns (mean training loss per slot, upload bytes per node)."""
        clients = {str(u.partition_id): {"num_examples": u.num_examples, **u.metrics} for u in updates}
        averaged = ("train_loss_", "generator_loss", "generator_similarity", "synthetic_retrieval_top1")
        keys = sorted({k for u in updates for k in u.metrics if k.startswith(averaged)})
        losses = {k: float(np.mean([u.metrics[k] for u in updates if k in u.metrics])) for k in keys}
        payload = [int(u.metrics.get("payload_bytes", 0)) for u in updates]
        self.metrics_log.write(
            server_round,
            "fit",
            clients=clients,
            client_loss_mean=losses,
            payload_bytes_per_client=payload,
            download_bytes_per_client=int(sum(v.size for v in self.state.values()))
            * np.dtype(self.config.feda2v.transfer_dtype).itemsize,
            dropped=dropped,
            failures=failures,
        )
        return [v for k, v in losses.items() if k.startswith("train_loss_")], payload

    def _log_server_step(self, server_round: int, report: RoundReport) -> None:
        if report.generator_loss is not None:
            self.metrics_log.write(
                server_round,
                "generator",
                loss=report.generator_loss,
                epochs=report.generator_epochs,
                per_class=report.generator_per_class,
                skipped_batches=report.skipped_batches,
                seconds=report.timings.get("generator_s"),
            )
        if report.kd_loss_per_slot:
            self.metrics_log.write(
                server_round, "kd", loss_per_slot=report.kd_loss_per_slot, seconds=report.timings.get("kd_s")
            )
        if report.validation is not None:
            self.metrics_log.write(
                server_round, "validation", **report.validation, seconds=report.timings.get("validation_s")
            )
        if report.finetune_loss is not None:
            self.metrics_log.write(
                server_round,
                "finetune",
                loss=report.finetune_loss,
                per_slot=report.finetune_loss_per_slot,
                steps=report.finetune_steps,
                synthetic_samples=report.synthetic_samples,
                seconds=report.timings.get("finetune_s"),
            )

    # ---- checkpoints ---------------------------------------------------------------------------
    def _checkpoint_due(self, server_round: int) -> bool:
        """Every ``generator_checkpoint_frequency`` rounds and at the end of the run or session
        (the nodes save their own state on the same rounds, so any checkpoint can be resumed)."""
        f = self.config.feda2v
        periodic = server_round % f.generator_checkpoint_frequency == 0
        return f.generator_save_checkpoint and (periodic or server_round in (self.num_rounds, self.last_round))

    def _maybe_checkpoint(self, server_round: int, report: RoundReport) -> Path | None:
        f = self.config.feda2v
        if not self._checkpoint_due(server_round):
            return None
        trainer_state = self.trainer.state_dict()
        payload = new_payload(
            round=server_round,
            global_adapters={k: torch.from_numpy(v.copy()) for k, v in self.state.items()},
            config=json.dumps(self.config.model_dump(mode="json")),
            config_hash=config_hash(self.config),
            wandb_run_id=self.wandb.run_id if self.wandb else None,
            **trainer_state,
        )
        similarity = report.validation.get("similarity") if report.validation else None
        path = save_checkpoint(
            self.checkpoint_dir,
            f.generator_checkpoint_base_name,
            payload,
            keep_last=f.checkpoint_keep_last,
            best_metric=similarity,
        )
        self.metrics_log.write(server_round, "checkpoint", path=str(path))
        log.info("Round %d: checkpoint %s", server_round, path)
        return path

    # ---- evaluate --------------------------------------------------------------------------------
    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        server_round += self.round_offset
        evaluations, dropped = self.replies.evaluations(results)
        if not evaluations:
            self._elapsed("evaluate", server_round)
            if dropped:
                self.metrics_log.write(server_round, "evaluate", failures=len(failures), dropped=dropped)
            if self._round_line:
                log.info("%s | top-1 n/a (%d evaluation failures)", self._round_line, len(failures) + len(dropped))
                self._round_line = ""
            return None, {}
        metrics: dict[str, Scalar] = {**weighted_split_metrics(evaluations)}
        metrics.update(self._image_scores(server_round, evaluations))
        loss = metrics.get("test_mse")
        self.metrics_log.write(
            server_round,
            "evaluate",
            **metrics,
            failures=len(failures),
            **({"dropped": dropped} if dropped else {}),
            evaluate_round_s=self._elapsed("evaluate", server_round),
        )
        log.info(
            "Round %d evaluation: test retrieval top-1 %.3f (clip %.3f, t5 %.3f), test MSE %.4f",
            server_round,
            metrics.get("test_retrieval_top1", float("nan")),
            metrics.get("test_retrieval_top1_clip", float("nan")),
            metrics.get("test_retrieval_top1_t5", float("nan")),
            metrics.get("test_mse", float("nan")),
        )
        if self._round_line:
            log.info("%s | top-1 %.3f", self._round_line, metrics.get("test_retrieval_top1", float("nan")))
            self._round_line = ""
        self.summary.update(round=server_round, evaluation=metrics)
        self.write_summary()
        if server_round == self.last_round:
            self._write_plots()
        if server_round == self.last_round and self.wandb is not None:
            self.wandb.finish()
        return loss, metrics

    def _image_scores(self, server_round: int, client_metrics: list[dict[str, Scalar]]) -> dict[str, Scalar]:
        """CLIP zero-shot scores of every node's pictures pooled (not averaged: balanced accuracy
        and macro F1 need the federation's labels and predictions together)."""
        drawn = [m for m in client_metrics if m.get("image_count", 0) > 0]  # labels checked by ReplyChecker
        if not drawn:
            return {}
        labels = np.concatenate([decode_labels(str(m["image_labels"])) for m in drawn])
        predictions = np.concatenate([decode_labels(str(m["image_predictions"])) for m in drawn])
        scores = {f"image_{k}": v for k, v in image_metrics(labels, predictions, len(self.classes)).items()}
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

    def _write_plots(self, *, embeddings: bool = False) -> None:
        """The run's plots (``<run>/plots``), written at the end of the last round (``embeddings``:
        with the real vs synthetic snapshot) and again after its evaluation. A failure here is a
        warning, not a failed run: the plots are a by-product."""
        from feda2v_flwr.reporting.plots import EMBEDDINGS_FILE, write_run_plots  # matplotlib, only here

        try:
            snapshot = self.trainer.embedding_snapshot() if embeddings else None
            if snapshot is not None:
                (self.run_dir / "plots").mkdir(parents=True, exist_ok=True)
                np.savez(self.run_dir / "plots" / EMBEDDINGS_FILE, **snapshot)
            written = write_run_plots(self.run_dir)
        except Exception as err:  # noqa: BLE001
            log.warning("Plots not written: %s: %s", type(err).__name__, err)
            return
        log.info("Plots: %s", ", ".join(p.name for p in written))

    def _note_missing(self, server_round: int) -> None:
        """``summary.json``'s ``missing_partitions``: the ones drawn this session that never
        contributed a valid update; at the last round a warning names them."""
        missing = sorted(self.drawn - self.contributed)
        self.summary["missing_partitions"] = missing
        self.write_summary()
        if missing and server_round == self.last_round:
            log.warning(missing_partitions_line(missing))

    def write_summary(self) -> None:
        (self.run_dir / "summary.json").write_text(json.dumps(self.summary, indent=1, sort_keys=True))


def _earlier_summary(run_dir: Path) -> dict[str, Any]:
    """What a stopped run had reported in ``summary.json`` (nothing if absent or cut short)."""
    try:
        return dict(json.loads((run_dir / "summary.json").read_text()))
    except (OSError, ValueError, TypeError):
        return {}


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


def _sat_out(res: FitRes) -> bool:
    """A node that was not drawn this round (partial participation) says so instead of training."""
    return isinstance(res.metrics, Mapping) and res.metrics.get("sat_out") == 1


def _failure_reason(failure: tuple[ClientProxy, FitRes] | BaseException) -> str:
    if isinstance(failure, BaseException):
        return f"{type(failure).__name__}: {failure}"
    proxy, res = failure
    return f"node {proxy.cid}: {res.status.code.name} {res.status.message}"
