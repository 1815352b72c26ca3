"""The server's science, free of Flower and of checkpoints: generator training, validation,
distillation (``kd``) and the global adapters' fine-tuning on real + synthetic rows.

``ServerGeneratorTrainer.run_round`` is one server step; :class:`feda2v_flwr.server.recipe.ServerRecipe`
calls it, checks what it produced and keeps (or rolls back) its state.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from feda2v_flwr.config.schema import ExperimentConfig
from feda2v_flwr.models.losses import adapter_loss
from feda2v_flwr.models.sequence import pool_tokens, resize_tokens
from feda2v_flwr.seeding import server_generator_seed, server_sampling_seed
from feda2v_flwr.server.class_summary import (
    ClassSummary,
    client_samples,
    draw_from_mixture,
    draw_from_statistics,
    resize_mode,
)
from feda2v_flwr.server.distillation import distill_adapters, teacher_targets
from feda2v_flwr.training.generator_learner import GeneratorFactory, GeneratorLearner, condition_slots_for
from feda2v_flwr.training.loop import EpochLosses, shuffled_batches
from feda2v_flwr.training.optim import adamw
from feda2v_flwr.training.statistics import ClassStats

log = logging.getLogger(__name__)


@dataclass
class RoundReport:
    generator_loss: float | None = None
    generator_per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    generator_epochs: list[dict[str, float]] = field(default_factory=list)
    skipped_batches: int = 0
    kd_loss_per_slot: dict[str, float] = field(default_factory=dict)
    validation: dict | None = None
    finetune_loss: float | None = None
    finetune_loss_per_slot: dict[str, float] = field(default_factory=dict)
    finetune_steps: int = 0  # optimizer steps of the fine-tuning this round
    synthetic_samples: int = 0
    timings: dict[str, float] = field(default_factory=dict)


class ServerGeneratorTrainer:
    """Trains the server generator on per-class statistics, optionally distils the global adapters
    from the clients' adapters (``kd``), and fine-tunes them on real (class means) + synthetic
    (generator samples) audio embeddings.

    Three kinds of server generator:

    - one generator conditioned on the class's mean prompt (``generator_conditioning`` clip or
      clip+t5; the default);
    - one unconditioned generator per class (``generator_conditioning: none``, the original
      prototype's design);
    - ``generator_type: gaussian``: no learning; a class's samples are drawn from the count-weighted
      mixture of its clients' diagonal Gaussians N(mean, std^2) (FedPFT-style feature sampling).

    The generators, their optimizers and the fine-tuning optimizer persist across rounds.
    """

    def __init__(
        self,
        *,
        config: ExperimentConfig,
        adapters: nn.ModuleDict,
        input_dim: int,
        slot_shapes: dict[str, tuple[int, ...]],
        device: str = "cpu",
    ):
        self.config = config
        self.f = config.feda2v
        self.device = device
        self.adapters = adapters.to(device)
        self.finetune_optimizer = adamw(self.adapters.parameters(), lr=self.f.global_model_train_learning_rate)
        self.learner: GeneratorLearner | None = None  # the conditioned generator
        self.class_learners: dict[str, GeneratorLearner] = {}  # generator_conditioning "none"
        self.gaussian = self.f.generator_type == "gaussian"
        self.per_class = not self.gaussian and self.f.generator_conditioning == "none"
        self.factory = GeneratorFactory(
            settings=self.f,
            input_dim=input_dim,
            condition_slots=condition_slots_for(self.f.generator_conditioning, slot_shapes),
            total_epochs=self.f.generator_training_epochs * config.federation.global_rounds,
            device=device,
        )
        self.rng = torch.Generator().manual_seed(server_sampling_seed(config.training.seed))
        self.last_summaries: dict[str, ClassSummary] = {}

    # ---- setup -----------------------------------------------------------------------------
    def setup_generator(self, *, audio_length: int, classes: list[str]) -> None:
        """Build the generator(s) not built yet: the conditioned one, or one per new class."""
        length = self.f.generator_training_sequence_length or audio_length
        if self.gaussian:
            return
        if self.per_class:
            for name in classes:
                if name not in self.class_learners:
                    # seeded by the class name, so a class's generator does not depend on arrival order
                    self.class_learners[name] = self.factory.new(
                        sequence_length=length, seed=server_generator_seed(self.config.training.seed, name)
                    )
                    self._log_new(self.class_learners[name], f"for class '{name}'")
        elif self.learner is None:
            self.learner = self.factory.new(
                sequence_length=length, seed=server_generator_seed(self.config.training.seed)
            )
            self._log_new(self.learner, "")

    @staticmethod
    def _log_new(learner: GeneratorLearner, what: str) -> None:
        model = learner.model
        log.info(
            "Server generator%s: %s %s, %.2f M parameters",
            f" {what}" if what else "",
            type(model).__name__,
            model.constructor_args(),
            learner.num_parameters / 1e6,
        )

    def _learner(self, name: str) -> GeneratorLearner:
        learner = self.class_learners.get(name) if self.per_class else self.learner
        assert learner is not None, f"no server generator for class '{name}'"
        return learner

    @property
    def has_generator(self) -> bool:
        """Whether synthetic samples can be drawn (a trained or loaded generator, or the Gaussians)."""
        return self.f.use_generator and (self.gaussian or self.learner is not None or bool(self.class_learners))

    @property
    def has_synthetic(self) -> bool:
        """Whether the fine-tuning has synthetic rows: the server's generator, or the nodes' samples."""
        return self.f.synthetic_source == "clients" or self.has_generator

    # ---- one round -------------------------------------------------------------------------
    def run_round(
        self,
        server_round: int,
        adapter_state: dict[str, np.ndarray],
        class_stats: dict[str, list[ClassStats]],
        teachers: list[tuple[dict[str, np.ndarray], set[str]]] | None = None,
    ) -> tuple[dict[str, np.ndarray], RoundReport]:
        """Steps 2-5 of SPEC 4: train generator, distil (``kd``), validate (every N rounds),
        fine-tune the global adapters. ``teachers``: each client's adapters and classes (``kd``,
        and ``synthetic_targets: teachers``)."""
        report = RoundReport()
        summaries = {name: ClassSummary.merge(entries) for name, entries in sorted(class_stats.items())}
        self.last_summaries = summaries  # kept for experiments (e.g. the memorisation check)
        self.adapters.load_state_dict({k: torch.from_numpy(v) for k, v in adapter_state.items()})
        if not summaries:
            return adapter_state, report
        if self.f.use_generator:
            first = next(iter(summaries.values()))
            self.setup_generator(audio_length=first.client_audio_means[0].shape[0], classes=list(summaries))
            if not self.gaussian:
                start = time.perf_counter()
                self.train_generator(summaries, report)
                report.timings["generator_s"] = time.perf_counter() - start
            if teachers and self.f.adapter_aggregation_mode == "kd":
                start = time.perf_counter()
                self.distill(summaries, teachers, report)
                report.timings["kd_s"] = time.perf_counter() - start
            freq = self.f.generator_validation_frequency
            if freq and server_round % freq == 0:
                start = time.perf_counter()
                report.validation = self.validate(summaries)
                report.timings["validation_s"] = time.perf_counter() - start
        start = time.perf_counter()
        self.finetune(summaries, report, teachers)
        report.timings["finetune_s"] = time.perf_counter() - start
        new_state = {k: v.detach().cpu().numpy().copy() for k, v in self.adapters.state_dict().items()}
        return new_state, report

    def train_generator(self, summaries: dict[str, ClassSummary], report: RoundReport) -> None:
        """Epochs x classes; each class's batch = draws from every client's N(mean, std^2) (or mixture)."""
        f = self.f
        learners = {name: self._learner(name) for name in summaries}
        distinct = list({id(learner): learner for learner in learners.values()}.values())
        epoch_losses = []
        noise = f.generator_augmentation_noise if f.generator_augmentation else 0.0
        skipped_before = sum(learner.skipped_batches for learner in distinct)
        for epoch in range(f.generator_training_epochs):
            per_class = {}
            for name, summary in summaries.items():
                draws = draw_from_statistics(summary, f.generator_draws_per_statistic, self.rng)  # (B, L, D)
                clean = draws.to(self.device)
                condition = None if self.per_class else summary.condition(len(clean), self.device)
                losses = learners[name].step(clean, condition, noise_std=noise, rng=self.rng)
                if losses is None:
                    log.warning("Generator epoch %d class '%s': non-finite loss, batch skipped", epoch, name)
                    continue
                per_class[name] = losses
            for learner in distinct:
                learner.finish_epoch()
            if per_class:
                mean_loss = float(np.mean([v["loss"] for v in per_class.values()]))
                epoch_losses.append(mean_loss)
                epochs_done = max(learner.epochs_done for learner in distinct)  # per class: the longest-trained
                report.generator_epochs.append({"epoch": epochs_done, "loss": mean_loss})
                log.info(
                    "  generator epoch %d/%d: loss %.4f (%s)",
                    epoch + 1,
                    f.generator_training_epochs,
                    mean_loss,
                    ", ".join(f"{n}: " + " ".join(f"{k} {v:.3f}" for k, v in d.items()) for n, d in per_class.items()),
                )
                report.generator_per_class = per_class
        report.skipped_batches = sum(learner.skipped_batches for learner in distinct) - skipped_before
        report.generator_loss = float(np.mean(epoch_losses)) if epoch_losses else None

    def output_length(self, summary: ClassSummary) -> int:
        """Tokens of the sequences the server makes: ``generator_output_sequence_length``, else
        the statistics' own length."""
        return self.f.generator_output_sequence_length or summary.client_audio_means[0].shape[0]

    def _synthetic(self, name: str, summary: ClassSummary, num_samples: int, length: int | None = None) -> torch.Tensor:
        """Samples of one class at the output length, resized to ``length`` tokens when given."""
        out_len = self.output_length(summary)
        if self.gaussian:
            synthetic = draw_from_mixture(
                summary, num_samples, out_len, interpolation=self.f.generator_interpolation, rng=self.rng
            ).to(self.device)
        else:
            synthetic = self._learner(name).sample(
                num_samples,
                None if self.per_class else summary.condition(num_samples, self.device),
                generator=self.rng,
                target_sequence_length=out_len,
                interpolation=self.f.generator_interpolation,
            )
        return synthetic if length is None or out_len == length else pool_tokens(synthetic, length)

    def synthetic_samples(
        self, name: str, summary: ClassSummary, num_samples: int, length: int | None = None
    ) -> torch.Tensor:
        """Public entry for experiments (e.g. the memorisation check): samples as the fine-tuning sees them."""
        return self._synthetic(name, summary, num_samples, length)

    def distill(
        self,
        summaries: dict[str, ClassSummary],
        teachers: list[tuple[dict[str, np.ndarray], set[str]]],
        report: RoundReport,
    ) -> None:
        """``kd``: the global adapters (starting from the clients' average) learn to match, per
        class, the mean output of the adapters of the clients that own it, on generator samples
        at the output length."""
        owned = _owned_classes(summaries, teachers)
        synthetic = {
            name: self._synthetic(name, summary, self.f.kd_samples_per_class)
            for name, summary in summaries.items()
            if name in owned
        }
        report.kd_loss_per_slot = distill_adapters(
            self.adapters,
            self._teacher_outputs(teachers, synthetic),
            synthetic,
            epochs=self.f.kd_training_epochs,
            learning_rate=self.f.kd_learning_rate,
            batch_size=self.config.training.batch_size,
            rng=self.rng,
        )
        log.info("  kd: %d classes, last-epoch MSE %s", len(synthetic), report.kd_loss_per_slot)

    def _teacher_outputs(
        self, teachers: list[tuple[dict[str, np.ndarray], set[str]]], synthetic: dict[str, torch.Tensor]
    ) -> dict[str, dict[str, torch.Tensor]]:
        """Per class of ``synthetic`` and slot: the mean output, on each of its rows, of the
        adapters of the clients that hold the class (one scratch copy of the adapters)."""
        scratch = copy.deepcopy(self.adapters)

        def teacher(index: int) -> nn.ModuleDict:
            scratch.load_state_dict({k: torch.from_numpy(v) for k, v in teachers[index][0].items()})
            return scratch.to(self.device)

        owners = {name: [i for i, (_, classes) in enumerate(teachers) if name in classes] for name in synthetic}
        return teacher_targets(teacher, owners, synthetic)

    @torch.no_grad()
    def validate(self, summaries: dict[str, ClassSummary], num_samples: int = 16) -> dict:
        """Generated samples vs held-out (val split) class means: cosine, MSE, L1 per class."""
        per_class = {}
        for name, summary in summaries.items():
            if summary.val_audio_mean is None:
                continue
            real = summary.val_audio_mean.to(self.device)  # (L, D)
            fake = self._synthetic(name, summary, num_samples, real.shape[0]).mean(0)
            per_class[name] = {
                "similarity": F.cosine_similarity(fake.flatten(), real.flatten(), dim=0).item(),
                "mse": F.mse_loss(fake, real).item(),
                "l1": F.l1_loss(fake, real).item(),
            }
        if not per_class:
            return {"num_classes": 0}
        return {
            "similarity": float(np.mean([v["similarity"] for v in per_class.values()])),
            "mse": float(np.mean([v["mse"] for v in per_class.values()])),
            "l1": float(np.mean([v["l1"] for v in per_class.values()])),
            "per_class": per_class,
            "num_classes": len(per_class),
        }

    def finetune(
        self,
        summaries: dict[str, ClassSummary],
        report: RoundReport,
        teachers: list[tuple[dict[str, np.ndarray], set[str]]] | None = None,
    ) -> None:
        """Global adapters on [client class means] + [generator samples]; every row, every slot."""
        f = self.f
        if not f.global_model_train_from_nodes_adapters or f.global_model_train_epochs == 0:
            return
        inputs, targets = self._finetune_set(summaries, report, teachers)
        opt, batch = self.finetune_optimizer, self.config.training.batch_size
        steps = f.global_model_train_steps  # None: global_model_train_epochs passes
        per_epoch = max(1, math.ceil(len(inputs) / batch))
        epochs = f.global_model_train_epochs if steps is None else math.ceil(steps / per_epoch)
        self.adapters.train()
        for _ in range(epochs):
            epoch_losses = EpochLosses(self.adapters)
            for idx in shuffled_batches(len(inputs), batch, self.rng):
                if steps is not None and report.finetune_steps == steps:
                    break
                opt.zero_grad(set_to_none=True)
                losses = {s: adapter_loss(m(inputs[idx]), targets[s][idx]) for s, m in self.adapters.items()}
                sum(losses.values()).backward()
                opt.step()
                report.finetune_steps += 1
                epoch_losses.add(losses, len(idx))
            report.finetune_loss_per_slot = epoch_losses.means()
        report.finetune_loss = float(sum(report.finetune_loss_per_slot.values()))

    def _finetune_set(
        self,
        summaries: dict[str, ClassSummary],
        report: RoundReport,
        teachers: list[tuple[dict[str, np.ndarray], set[str]]] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Rows at the output length: the clients' class means (resized there when the statistics
        are shorter, as the clients' clips are), targeted at their class's mean adapter output,
        and the generator's samples, targeted at the same or (``synthetic_targets: teachers``) at
        their own outputs of the owning clients' adapters (a class with no teacher: its mean)."""
        synthetic: dict[str, torch.Tensor] = {}
        if self.has_synthetic and self.f.synthetic_samples_per_class > 0:
            for name, summary in summaries.items():
                length = self.output_length(summary)
                if self.f.synthetic_source == "clients":
                    synthetic[name] = client_samples(
                        summary,
                        self.f.synthetic_samples_per_class,
                        length,
                        interpolation=self.f.generator_interpolation,
                        rng=self.rng,
                    )
                else:
                    synthetic[name] = self._synthetic(name, summary, self.f.synthetic_samples_per_class, length).cpu()
                report.synthetic_samples += len(synthetic[name])
        per_sample = {}
        if synthetic and teachers and self.f.synthetic_targets == "teachers":
            owned = _owned_classes(summaries, teachers)
            labelled = {n: s for n, s in synthetic.items() if n in owned and len(s)}
            per_sample = self._teacher_outputs(teachers, labelled)
        rows, targets = [], {slot: [] for slot in self.adapters}
        mode = resize_mode(self.f.generator_interpolation)
        for name, summary in summaries.items():  # per class: its clients' means, then its samples
            class_rows = resize_tokens(torch.stack(summary.client_audio_means), self.output_length(summary), mode)
            rows += list(class_rows)
            for slot in targets:
                targets[slot] += [summary.slot_means[slot]] * len(class_rows)
            samples, own = synthetic.get(name), per_sample.get(name)
            if samples is not None and len(samples):
                rows += list(samples)
                for slot in targets:
                    targets[slot] += list(own[slot].cpu()) if own else [summary.slot_means[slot]] * len(samples)
        return torch.stack(rows).to(self.device), {s: torch.stack(t).to(self.device) for s, t in targets.items()}


def _owned_classes(summaries: dict[str, ClassSummary], teachers: list[tuple[dict, set[str]]]) -> set[str]:
    """The classes of ``summaries`` that at least one teacher (a client with adapters) holds."""
    return {name for name in summaries if any(name in classes for _, classes in teachers)}
