"""Server-side science, free of Flower: generator training, validation, adapter fine-tuning.

``ServerGeneratorTrainer`` follows a recipe shape (setup / train / validate / finetune /
state_dict): the strategy calls ``run_round`` and stays thin.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from feda2v_flwr.config.schema import ExperimentConfig
from feda2v_flwr.models.generators import ConditionedVAEGenerator, pool_tokens
from feda2v_flwr.models.losses import VAELoss, adapter_loss
from feda2v_flwr.training.statistics import ClassStats

log = logging.getLogger(__name__)

GENERATOR_GRAD_CLIP = 5.0
CONDITION_SLOT = "clip"


@dataclass
class ClassSummary:
    """Count-weighted merge of one class's statistics over the clients that hold it."""

    count: int
    slot_means: dict[str, torch.Tensor]
    client_audio_means: list[torch.Tensor]
    client_audio_stds: list[torch.Tensor]
    val_audio_mean: torch.Tensor | None

    @classmethod
    def merge(cls, entries: list[ClassStats]) -> ClassSummary:
        counts = [e.count for e in entries]
        slot_means = {
            slot: _weighted_mean([e.slot_means[slot] for e in entries], counts) for slot in entries[0].slot_means
        }
        val = [e for e in entries if e.val_audio_mean is not None and e.val_count > 0]
        val_mean = _weighted_mean([e.val_audio_mean for e in val], [e.val_count for e in val]) if val else None
        return cls(
            count=int(sum(counts)),
            slot_means=slot_means,
            client_audio_means=[torch.from_numpy(e.audio_mean) for e in entries],
            client_audio_stds=[torch.from_numpy(e.audio_std) for e in entries],
            val_audio_mean=val_mean,
        )

    @property
    def condition(self) -> torch.Tensor:
        return self.slot_means[CONDITION_SLOT].flatten()


def _weighted_mean(arrays: list[np.ndarray], weights: list[int]) -> torch.Tensor:
    w = np.asarray(weights, dtype=np.float64) / float(sum(weights))
    return torch.from_numpy(sum(wi * a.astype(np.float64) for wi, a in zip(w, arrays, strict=True))).float()


@dataclass
class RoundReport:
    generator_loss: float | None = None
    generator_per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    generator_epochs: list[dict[str, float]] = field(default_factory=list)
    skipped_batches: int = 0
    validation: dict | None = None
    finetune_loss: float | None = None
    finetune_loss_per_slot: dict[str, float] = field(default_factory=dict)
    synthetic_samples: int = 0
    timings: dict[str, float] = field(default_factory=dict)


class ServerGeneratorTrainer:
    """Trains the server's ConditionedVAEGenerator on per-class statistics and fine-tunes the
    global adapters on real (class means) + synthetic (generator samples) audio embeddings.

    The generator and both optimizers persist across rounds (they keep learning).
    """

    def __init__(self, *, config: ExperimentConfig, adapters: nn.ModuleDict, device: str = "cpu"):
        self.config = config
        self.f = config.feda2v
        self.device = device
        self.adapters = adapters.to(device)
        self.finetune_optimizer = torch.optim.AdamW(adapters.parameters(), lr=self.f.global_model_train_learning_rate)
        self.generator: ConditionedVAEGenerator | None = None
        self.generator_optimizer: torch.optim.Optimizer | None = None
        self.loss = VAELoss(total_epochs=self.f.generator_training_epochs, beta_max=self.f.generator_beta_max)
        self.rng = torch.Generator().manual_seed(config.training.seed + 10_007)

    # ---- setup -----------------------------------------------------------------------------
    def setup_generator(self, *, audio_length: int, audio_dim: int, condition_dim: int) -> ConditionedVAEGenerator:
        if self.generator is None:
            self.generator = ConditionedVAEGenerator(
                input_dim=audio_dim,
                condition_dim=condition_dim,
                sequence_length=self.f.generator_training_sequence_length or audio_length,
                hidden_dim=self.f.generator_hidden_dim,
                latent_dim=self.f.generator_latent_dim,
            ).to(self.device)
            self.generator_optimizer = torch.optim.AdamW(
                self.generator.parameters(), lr=self.f.generator_learning_rate, weight_decay=1e-4
            )
            params = sum(p.numel() for p in self.generator.parameters())
            log.info("Server generator: %s, %.2f M parameters", self.generator.constructor_args(), params / 1e6)
        return self.generator

    # ---- one round -------------------------------------------------------------------------
    def run_round(
        self, server_round: int, adapter_state: dict[str, np.ndarray], class_stats: dict[str, list[ClassStats]]
    ) -> tuple[dict[str, np.ndarray], RoundReport]:
        """Steps 3-5 of SPEC 4: train generator, validate (every N rounds), fine-tune adapters."""
        report = RoundReport()
        summaries = {name: ClassSummary.merge(entries) for name, entries in sorted(class_stats.items())}
        self.adapters.load_state_dict({k: torch.from_numpy(v) for k, v in adapter_state.items()})
        if not summaries:
            return adapter_state, report
        if self.f.use_generator:
            first = next(iter(summaries.values()))
            length, dim = first.client_audio_means[0].shape
            self.setup_generator(audio_length=length, audio_dim=dim, condition_dim=first.condition.numel())
            start = time.perf_counter()
            self.train_generator(summaries, report)
            report.timings["generator_s"] = time.perf_counter() - start
            freq = self.f.generator_validation_frequency
            if freq and server_round % freq == 0:
                start = time.perf_counter()
                report.validation = self.validate(summaries)
                report.timings["validation_s"] = time.perf_counter() - start
        start = time.perf_counter()
        self.finetune(summaries, report)
        report.timings["finetune_s"] = time.perf_counter() - start
        new_state = {k: v.detach().cpu().numpy().copy() for k, v in self.adapters.state_dict().items()}
        return new_state, report

    def train_generator(self, summaries: dict[str, ClassSummary], report: RoundReport) -> None:
        """Epochs x classes; each class's batch = draws from every client's N(mean, std^2)."""
        assert self.generator is not None and self.generator_optimizer is not None
        gen, opt, f = self.generator, self.generator_optimizer, self.f
        gen.train()
        epoch_losses = []
        for epoch in range(f.generator_training_epochs):
            per_class = {}
            for name, summary in summaries.items():
                clean = self._draw_from_statistics(summary, f.generator_draws_per_statistic)  # (B, L, D)
                condition = summary.condition.expand(len(clean), -1).to(self.device)
                inputs = clean
                if f.generator_augmentation and f.generator_augmentation_noise > 0:
                    sigma = f.generator_augmentation_noise
                    inputs = clean + sigma * self._noise(clean.shape)
                    condition = condition + 0.5 * sigma * self._noise(condition.shape)
                recon, mu, logvar = gen(inputs, condition, generator=self.rng)
                total, recon_l, kl, sim = self.loss(recon, pool_tokens(clean, gen.sequence_length), mu, logvar, epoch)
                if not torch.isfinite(total):
                    report.skipped_batches += 1
                    log.warning("Generator epoch %d class '%s': non-finite loss, batch skipped", epoch, name)
                    continue
                opt.zero_grad(set_to_none=True)
                total.backward()
                nn.utils.clip_grad_norm_(gen.parameters(), GENERATOR_GRAD_CLIP)
                opt.step()
                per_class[name] = {"loss": total.item(), "recon": recon_l.item(), "kl": kl.item(), "sim": sim.item()}
            if per_class:
                mean_loss = float(np.mean([v["loss"] for v in per_class.values()]))
                epoch_losses.append(mean_loss)
                report.generator_epochs.append({"epoch": epoch, "loss": mean_loss})
                log.info(
                    "  generator epoch %d/%d: loss %.4f (%s)",
                    epoch + 1,
                    f.generator_training_epochs,
                    mean_loss,
                    ", ".join(
                        f"{n}: recon {v['recon']:.3f} kl {v['kl']:.3f} sim {v['sim']:.3f}" for n, v in per_class.items()
                    ),
                )
                report.generator_per_class = per_class
        report.generator_loss = float(np.mean(epoch_losses)) if epoch_losses else None

    @torch.no_grad()
    def validate(self, summaries: dict[str, ClassSummary], num_samples: int = 16) -> dict:
        """Generated samples vs held-out (val split) class means: cosine, MSE, L1 per class."""
        assert self.generator is not None
        self.generator.eval()
        per_class = {}
        for name, summary in summaries.items():
            if summary.val_audio_mean is None:
                continue
            real = summary.val_audio_mean.to(self.device)  # (L, D)
            fake = self.generator.sample(
                num_samples,
                summary.condition.to(self.device),
                generator=self.rng,
                target_sequence_length=real.shape[0],
                mode=self.f.generator_interpolation,
            ).mean(0)
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

    def finetune(self, summaries: dict[str, ClassSummary], report: RoundReport) -> None:
        """Global adapters on [client class means] + [generator samples]; every row, every slot."""
        f = self.f
        if not f.global_model_train_from_nodes_adapters or f.global_model_train_epochs == 0:
            return
        inputs, targets = self._finetune_set(summaries, report)
        opt, batch = self.finetune_optimizer, self.config.training.batch_size
        self.adapters.train()
        for _ in range(f.global_model_train_epochs):
            sums = dict.fromkeys(self.adapters, 0.0)
            order = torch.randperm(len(inputs), generator=self.rng)
            for start in range(0, len(order), batch):
                idx = order[start : start + batch]
                opt.zero_grad(set_to_none=True)
                losses = {s: adapter_loss(m(inputs[idx]), targets[s][idx]) for s, m in self.adapters.items()}
                sum(losses.values()).backward()
                opt.step()
                for slot, loss in losses.items():
                    sums[slot] += loss.item() * len(idx)
            report.finetune_loss_per_slot = {s: v / len(inputs) for s, v in sums.items()}
        report.finetune_loss = float(sum(report.finetune_loss_per_slot.values()))

    def _finetune_set(
        self, summaries: dict[str, ClassSummary], report: RoundReport
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        rows, targets = [], {slot: [] for slot in self.adapters}
        for summary in summaries.values():
            class_rows = list(summary.client_audio_means)
            length = class_rows[0].shape[0]
            if self.generator is not None and self.f.use_generator and self.f.synthetic_samples_per_class > 0:
                self.generator.eval()
                out_len = self.f.generator_output_sequence_length or length
                synthetic = self.generator.sample(
                    self.f.synthetic_samples_per_class,
                    summary.condition.to(self.device),
                    generator=self.rng,
                    target_sequence_length=out_len,
                    mode=self.f.generator_interpolation,
                )
                if out_len != length:  # adapters accept any token count; keep one length per batch
                    synthetic = pool_tokens(synthetic, length)
                class_rows += list(synthetic)
                report.synthetic_samples += len(synthetic)
            rows += class_rows
            for slot in targets:
                targets[slot] += [summary.slot_means[slot]] * len(class_rows)
        return torch.stack(rows).to(self.device), {s: torch.stack(t).to(self.device) for s, t in targets.items()}

    def _draw_from_statistics(self, summary: ClassSummary, draws: int) -> torch.Tensor:
        parts = []
        for mean, std in zip(summary.client_audio_means, summary.client_audio_stds, strict=True):
            eps = torch.randn((draws, *mean.shape), generator=self.rng)
            parts.append(mean + std * eps)
        return torch.cat(parts).to(self.device)

    def _noise(self, shape: torch.Size) -> torch.Tensor:
        return torch.randn(shape, generator=self.rng).to(self.device)

    # ---- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "generator_type": self.f.generator_type,
            "generator_args": self.generator.constructor_args() if self.generator is not None else None,
            "generator_state": self.generator.state_dict() if self.generator is not None else None,
            "generator_optimizer_state": self.generator_optimizer.state_dict() if self.generator_optimizer else None,
            "finetune_optimizer_state": self.finetune_optimizer.state_dict(),
            "rng_state": self.rng.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("generator_type") != self.f.generator_type:
            raise ValueError(
                f"Checkpoint generator_type '{state.get('generator_type')}' does not match the configured "
                f"'{self.f.generator_type}'"
            )
        if state.get("generator_args"):
            args = state["generator_args"]
            self.generator = None
            self.setup_generator(
                audio_length=args["sequence_length"], audio_dim=args["input_dim"], condition_dim=args["condition_dim"]
            )
            assert self.generator is not None and self.generator_optimizer is not None
            if self.generator.constructor_args() != args:
                raise ValueError(
                    f"Checkpoint generator {args} does not match the configured generator "
                    f"{self.generator.constructor_args()}: check generator_hidden_dim, generator_latent_dim and "
                    "generator_training_sequence_length"
                )
            self.generator.load_state_dict(state["generator_state"])
            if state.get("generator_optimizer_state"):
                self.generator_optimizer.load_state_dict(state["generator_optimizer_state"])
        if state.get("finetune_optimizer_state"):
            self.finetune_optimizer.load_state_dict(state["finetune_optimizer_state"])
        if state.get("rng_state") is not None:
            self.rng.set_state(state["rng_state"])
