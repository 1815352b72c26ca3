"""``ServerRecipe``: the server's side of FedA2V without Flower, in a torchtune recipe's shape.

- :meth:`ServerRecipe.setup` builds it from the config: the checks, the initial global adapters
  (fresh, from ``adapter_load_checkpoint`` or from a resumed checkpoint), the server step's
  trainer and, when resuming, where the run goes on.
- :meth:`ServerRecipe.run_round` keeps one round's global state: the aggregated adapters are
  checked, the server step (generator, ``kd``, validation, fine-tuning) runs, and what it produced
  is checked and kept or rolled back.
- :meth:`ServerRecipe.save_checkpoint` / :meth:`ServerRecipe.load_checkpoint`: the run checkpoint.

The Flower strategy (``strategies/feda2v.py``) calls these from its hooks.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from feda2v_flwr.checkpointing.files import checkpoint_due
from feda2v_flwr.checkpointing.resume import carry_client_state, check_resumable, final_evaluation_pending, trim_metrics
from feda2v_flwr.checkpointing.run import find_checkpoint, load_checkpoint, new_payload, save_checkpoint, saved_adapters
from feda2v_flwr.config import ConfigError, ExperimentConfig, config_hash, resolve_run_path
from feda2v_flwr.devices import resolve_device
from feda2v_flwr.encoders import audio_embed_dim, load_text_targets, target_slots
from feda2v_flwr.images.pipelines import import_diffusers
from feda2v_flwr.payload import largest_transferable
from feda2v_flwr.seeding import server_round_seed
from feda2v_flwr.server import trainer_state
from feda2v_flwr.server.checks import (
    adapter_checkpoint_file,
    check_client_generators,
    checked_classes,
    generator_checkpoint_file,
    new_trainer,
)
from feda2v_flwr.server.generator_trainer import RoundReport, ServerGeneratorTrainer
from feda2v_flwr.training.adapters import build_model
from feda2v_flwr.training.statistics import ClassStats

log = logging.getLogger(__name__)

Teachers = list[tuple[dict[str, np.ndarray], set[str]]]  # each client's adapters and classes


@dataclass
class RoundOutcome:
    report: RoundReport  # what the server step did (logged even when it was rolled back)
    rejected: list[dict[str, str]]  # {"stage": "aggregation" | "server_step", "reason": ...}

    @property
    def kept(self) -> RoundReport:
        """The report of the server step that stands (empty when it was rolled back)."""
        rolled_back = any(r["stage"] == "server_step" for r in self.rejected)
        return RoundReport() if rolled_back else self.report


class ServerRecipe:
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
        start_round: int = 0,
        last_round: int | None = None,
        evaluation_only: bool = False,
        wandb_run_id: str | None = None,
    ):
        """``start_round``: the round a resumed run's checkpoint is from. ``last_round``: this
        session's last round (default ``global_rounds``). ``evaluation_only``: this session only
        evaluates its one round (a run stopped after its final checkpoint, before its final
        evaluation). ``wandb_run_id``: the resumed run's W&B run."""
        self.config = config
        self.trainer = trainer
        self.state = initial_state  # the global adapters, float32, in the order the nodes get them
        self.slot_shapes = slot_shapes
        self.classes = classes
        self.run_dir, self.cache_dir = run_dir, cache_dir
        checkpoint_dir = Path(config.feda2v.generator_checkpoint_dir)
        self.checkpoint_dir = checkpoint_dir if checkpoint_dir.is_absolute() else run_dir / checkpoint_dir
        self.start_round = start_round
        self.last_round = last_round or config.federation.global_rounds
        self.evaluation_only = evaluation_only
        self.wandb_run_id = wandb_run_id
        self.state_bound = largest_transferable(config.federation.max_abs_value, config.feda2v.transfer_dtype)

    # ---- setup -----------------------------------------------------------------------------
    @classmethod
    def setup(
        cls,
        config: ExperimentConfig,
        run_dir: Path,
        *,
        resume: str | Path | None = None,
        stop_after_round: int | None = None,
    ) -> ServerRecipe:
        """Everything the server needs, from the validated config.

        ``resume``: a checkpoint (file, pointer, checkpoint folder or run folder) to continue from
        at its round + 1. ``stop_after_round``: end this session after that round (checkpointed),
        as if the run had been stopped there; schedules still follow ``federation.global_rounds``.
        """
        run_dir.mkdir(parents=True, exist_ok=True)
        f = config.feda2v
        resumed = None
        if resume:
            resume_path = find_checkpoint(resolve_run_path(str(resume)))
            resumed = load_checkpoint(resume_path)
            check_resumable(config, resumed, resume_path)
        cache_dir = Path(config.data.cache_dir).expanduser()
        cache_dir = cache_dir if cache_dir.is_absolute() else (Path.cwd() / cache_dir).resolve()
        (run_dir / "config.json").write_text(json.dumps(config.model_dump(mode="json"), indent=1))
        if config.images.every_rounds:
            import_diffusers()  # the nodes draw pictures: fail here, before any training, if the extra is missing
        classes = checked_classes(config)
        slots = target_slots(f)
        load_text_targets(f, classes, cache_dir)  # warm the cache for the nodes

        torch.manual_seed(config.training.seed)
        in_dim = audio_embed_dim(config)
        initial = build_model(config, slots, in_dim)
        initial_state = {k: v.detach().numpy().copy() for k, v in initial.state_dict().items()}
        adapter_path = None
        if f.adapter_load_checkpoint:
            adapter_path = adapter_checkpoint_file(f)
            initial_state = saved_adapters(load_checkpoint(adapter_path), initial_state, adapter_path)
            log.info("Global adapters start from %s", adapter_path)
        trainer = new_trainer(config, slots, in_dim, resolve_device(config.training.device))
        if f.generator_load_checkpoint:
            path = generator_checkpoint_file(f)
            payload = load_checkpoint(path)
            trainer_state.load_generator(trainer, payload, source=str(path))
            if adapter_path == path:  # the fine-tuning optimizer belongs to the adapters it was saved with
                trainer_state.load_finetune_state(trainer, payload)
        recipe = cls(
            config=config,
            trainer=trainer,
            initial_state=initial_state,
            slot_shapes={s.name: s.shape for s in slots},
            classes=classes,
            run_dir=run_dir,
            cache_dir=cache_dir,
            last_round=min(config.federation.global_rounds, stop_after_round or config.federation.global_rounds),
            wandb_run_id=resumed["wandb_run_id"] if resumed is not None else None,
        )
        if resumed is not None:
            recipe.load_checkpoint(resumed, source=str(resume_path))
            recipe.go_on_from(resumed, resume_path, stop_after_round)
        check_client_generators(config, classes)
        return recipe

    # ---- one round ---------------------------------------------------------------------------
    def run_round(
        self,
        server_round: int,
        aggregated: dict[str, np.ndarray],
        class_stats: dict[str, list[ClassStats]],
        teachers: Teachers | None = None,
    ) -> RoundOutcome:
        """Keep the round's global adapters: ``aggregated`` unless it is non-finite or beyond the
        bound (then the previous ones), then the server step's result unless that is (then the
        server step is rolled back)."""
        rejected = []
        state = aggregated
        problem = state_problem(state, self.state_bound)
        if problem:
            log.warning("Round %d: aggregated adapters rejected (%s); the previous ones stay", server_round, problem)
            rejected.append({"stage": "aggregation", "reason": problem})
            state = {k: v.copy() for k, v in self.state.items()}
        f = self.config.feda2v
        report = RoundReport()
        if f.use_generator or f.global_model_train_from_nodes_adapters:
            log.info("Round %d: server step on %d classes", server_round, len(class_stats))
            torch.manual_seed(server_round_seed(self.config.training.seed, server_round))  # e.g. GAN dropout: resumable
            before = trainer_state.snapshot(self.trainer)
            stepped, report = self.trainer.run_round(server_round, state, class_stats, teachers)
            problem = state_problem(stepped, self.state_bound) or trainer_state.generator_problem(self.trainer)
            if problem:
                log.warning(
                    "Round %d: the server step is rolled back (%s); the aggregated adapters stay", server_round, problem
                )
                rejected.append({"stage": "server_step", "reason": problem})
                trainer_state.restore(self.trainer, before)
            else:
                state = stepped
        self.state = state
        return RoundOutcome(report, rejected)

    # ---- checkpoints -------------------------------------------------------------------------
    def checkpoint_due(self, server_round: int) -> bool:
        """Whether ``server_round`` is checkpointed (the nodes save their state on the same rounds)."""
        return checkpoint_due(self.config.feda2v, server_round, self.config.federation.global_rounds, self.last_round)

    def save_checkpoint(self, server_round: int, report: RoundReport, wandb_run_id: str | None = None) -> Path | None:
        """The run checkpoint of ``server_round`` when one is due (else None): the global
        adapters, the server step's state, the config; the best one by validation similarity."""
        f = self.config.feda2v
        if not self.checkpoint_due(server_round):
            return None
        payload = new_payload(
            round=server_round,
            global_adapters={k: torch.from_numpy(v.copy()) for k, v in self.state.items()},
            config=json.dumps(self.config.model_dump(mode="json")),
            config_hash=config_hash(self.config),
            wandb_run_id=wandb_run_id,
            **trainer_state.trainer_state(self.trainer),
        )
        similarity = report.validation.get("similarity") if report.validation else None
        path = save_checkpoint(
            self.checkpoint_dir,
            f.generator_checkpoint_base_name,
            payload,
            keep_last=f.checkpoint_keep_last,
            best_metric=similarity,
        )
        log.info("Round %d: checkpoint %s", server_round, path)
        return path

    def load_checkpoint(self, payload: dict, source: str) -> None:
        """A saved run's global adapters and server step (generator if it holds one, fine-tuning
        optimizer, RNG), checked against this run's shapes."""
        self.state = saved_adapters(payload, self.state, Path(source))
        if trainer_state.holds_generator(payload):
            trainer_state.load_generator(self.trainer, payload, source=source)
        trainer_state.load_finetune_state(self.trainer, payload)

    def go_on_from(self, resumed: dict, resume_path: Path, stop_after_round: int | None) -> None:
        """Where this session of a resumed run starts (after the checkpoint's round, or at it to
        evaluate only); the run folder's metrics are trimmed back to that round and the nodes'
        state files of that round carried over."""
        saved_round = int(resumed["round"])
        if stop_after_round is not None and stop_after_round <= saved_round:
            raise ConfigError(f"stop-after-round {stop_after_round} is not after the resumed round {saved_round}")
        self.evaluation_only = final_evaluation_pending(self.config, resumed, resume_path)
        self.start_round = saved_round - 1 if self.evaluation_only else saved_round  # evaluation only: round N again
        dropped = trim_metrics(self.run_dir / "metrics.jsonl", saved_round)
        copied = carry_client_state(resume_path, self.run_dir)
        log.info(
            "Resuming from %s %s (%d metric lines of unfinished rounds dropped%s)",
            resume_path,
            f"for round {saved_round}'s evaluation only" if self.evaluation_only else f"at round {saved_round + 1}",
            dropped,
            f"; {copied} node state files copied from the checkpoint's run" if copied else "",
        )


def state_problem(state: dict[str, np.ndarray], max_abs_value: float) -> str | None:
    """Why global adapters cannot be kept (non-finite or exploding values), or None."""
    for key, value in state.items():
        if not np.isfinite(value).all():
            return f"{key} holds NaN or Inf"
        largest = float(np.abs(value).max()) if value.size else 0.0
        if largest > max_abs_value:
            return f"{key} holds values up to {largest:.3g}, beyond federation.max_abs_value {max_abs_value:g}"
    return None
