"""Training one generator, wherever it lives (server or node): losses, guards, state.

``GeneratorLearner`` wraps a generator (and, for a GAN, its discriminator) with its optimizers
and an epoch counter that runs across rounds, so generators keep learning instead of being
re-initialised every round. Its ``state_dict`` holds the class names and constructor
arguments, so a saved generator is rebuilt exactly without the config that made it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from feda2v_flwr.config.schema import FedA2VSettings
from feda2v_flwr.models.generators import (
    Condition,
    ConditionedVAEGenerator,
    GANDiscriminator,
    GANGenerator,
    MultiModalVAEGenerator,
    SequenceGenerator,
    TokenwiseVAEGenerator,
    VAEGenerator,
    build_generator,
)
from feda2v_flwr.models.generators.base import draw_normal
from feda2v_flwr.models.losses import VAELoss, gan_discriminator_loss, gan_generator_loss
from feda2v_flwr.models.sequence import pool_tokens
from feda2v_flwr.training.adapters import scheduled_lr
from feda2v_flwr.training.optim import adamw, load_optimizer_state

log = logging.getLogger(__name__)

GRAD_CLIP = 5.0
WEIGHT_DECAY = 1e-4


class GeneratorMismatchError(ValueError):
    """A saved generator that cannot serve this run (type, feature size or condition differ)."""


def condition_slots_for(conditioning: str, slot_shapes: dict[str, tuple[int, ...]]) -> dict[str, list[int]]:
    """``generator_conditioning`` -> the slots (and shapes) a generator reads."""
    names = {"none": (), "clip": ("clip",), "clip+t5": ("clip", "t5")}[conditioning]
    missing = [n for n in names if n not in slot_shapes]
    if missing:
        raise ValueError(f"generator_conditioning '{conditioning}' needs target slots {missing}")
    return {n: list(slot_shapes[n]) for n in names}


def build_from_settings(
    f: FedA2VSettings,
    *,
    input_dim: int,
    sequence_length: int,
    condition_slots: dict[str, list[int]],
    seed: int,
) -> tuple[SequenceGenerator, GANDiscriminator | None]:
    """The generator the config asks for (and its discriminator for ``generator_type: gan``),
    initialised from ``seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _build(f, input_dim=input_dim, sequence_length=sequence_length, condition_slots=condition_slots)


def _build(
    f: FedA2VSettings, *, input_dim: int, sequence_length: int, condition_slots: dict[str, list[int]]
) -> tuple[SequenceGenerator, GANDiscriminator | None]:
    learned = f.generator_interpolation == "learned"
    fusion = f.generator_fusion_dim if len(condition_slots) > 1 else None
    common = dict(input_dim=input_dim, sequence_length=sequence_length, latent_dim=f.generator_latent_dim)
    if f.generator_type == "gan":
        generator = GANGenerator(
            **common,
            hidden_dim=f.generator_hidden_dim,
            condition_slots=condition_slots,
            fusion_dim=fusion,
            learned_upsampler=learned,
        )
        discriminator = GANDiscriminator(
            input_dim=input_dim,
            sequence_length=sequence_length,
            hidden_dim=f.generator_hidden_dim,
            condition_slots=condition_slots,
            fusion_dim=fusion,
        )
        return generator, discriminator
    if f.vae_arch == "tokenwise":
        tokenwise = TokenwiseVAEGenerator(
            **common,
            hidden_dim=f.generator_token_hidden_dim,
            condition_slots=condition_slots,
            fusion_dim=fusion,
            learned_upsampler=learned,
        )
        return tokenwise, None
    flat_args = dict(common, hidden_dim=f.generator_hidden_dim, learned_upsampler=learned)
    if not condition_slots:
        return VAEGenerator(**flat_args), None
    if fusion is not None:
        return MultiModalVAEGenerator(**flat_args, condition_slots=condition_slots, fusion_dim=fusion), None
    return ConditionedVAEGenerator(**flat_args, condition_slots=condition_slots), None


def expected_architecture(f: FedA2VSettings, condition_slots: dict[str, list[int]]) -> tuple[str, dict[str, Any]]:
    """The generator class and width arguments the config asks for (what ``_build`` makes), to
    compare a loaded generator with, without building one."""
    fusion = f.generator_fusion_dim if len(condition_slots) > 1 else None
    widths: dict[str, Any] = {"latent_dim": f.generator_latent_dim, "hidden_dim": f.generator_hidden_dim}
    if f.generator_type == "gan":
        return "GANGenerator", {**widths, "fusion_dim": fusion}
    if f.vae_arch == "tokenwise":
        return "TokenwiseVAEGenerator", {**widths, "hidden_dim": f.generator_token_hidden_dim, "fusion_dim": fusion}
    if not condition_slots:
        return "VAEGenerator", widths
    if fusion is not None:
        return "MultiModalVAEGenerator", {**widths, "fusion_dim": fusion}
    return "ConditionedVAEGenerator", widths


class GeneratorLearner:
    """One generator with its optimizers, loss schedules and epoch counter."""

    def __init__(
        self,
        model: SequenceGenerator,
        *,
        discriminator: GANDiscriminator | None = None,
        learning_rate: float,
        total_epochs: int,
        beta_max: float = 0.01,
        device: str | torch.device = "cpu",
    ):
        if (model.kind == "gan") != (discriminator is not None):
            raise ValueError("a GAN generator needs a discriminator, and only a GAN has one")
        self.model = model.to(device)
        self.discriminator = discriminator.to(device) if discriminator is not None else None
        self.learning_rate = learning_rate
        self.optimizer = adamw(self.model.parameters(), lr=learning_rate, weight_decay=WEIGHT_DECAY)
        self.discriminator_optimizer = (
            adamw(self.discriminator.parameters(), lr=learning_rate, weight_decay=WEIGHT_DECAY)
            if discriminator is not None
            else None
        )
        self.loss = VAELoss(total_epochs=total_epochs, beta_max=beta_max)
        # Every epoch this generator has trained, across rounds and runs. The schedules (beta
        # warm-up, cosine weight, learning rate) follow it, so a loaded generator does not warm up
        # again: past this run's total it fine-tunes at 10 % of the learning rate.
        self.epochs_done = 0
        self.skipped_batches = 0

    @property
    def kind(self) -> str:
        return self.model.kind

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    # ---- training --------------------------------------------------------------------------
    def step(
        self,
        x: torch.Tensor,
        condition: Condition | None = None,
        *,
        noise_std: float = 0.0,
        rng: torch.Generator | None = None,
    ) -> dict[str, float] | None:
        """One optimisation step on real sequences x (B, T, D); ``None`` if the batch was skipped.

        Augmentation: the condition gets N(0, (noise_std/2)²); a VAE encodes x + N(0, noise_std²)
        and must reproduce the clean x (denoising), a GAN's discriminator sees the clean x. With a
        learned upsampler the step also teaches it to rebuild the T-token x from its L-token pooling.
        """
        self.model.train()
        clean = pool_tokens(x, self.model.sequence_length)  # (B, L, D)
        inputs = clean
        if noise_std > 0:
            inputs = clean + noise_std * draw_normal(clean.shape, clean, rng)
            if condition is not None:
                condition = {k: v + 0.5 * noise_std * draw_normal(v.shape, v, rng) for k, v in condition.items()}
        if self.kind == "gan":
            losses = self._gan_step(clean, condition, x, rng)
        else:
            losses = self._vae_step(inputs, clean, condition, x, rng)
        if losses is None:
            self.skipped_batches += 1
        return losses

    def _upsampler_loss(self, clean: torch.Tensor, full: torch.Tensor) -> torch.Tensor | None:
        if self.model.upsampler is None or full.shape[1] == clean.shape[1]:
            return None
        return F.mse_loss(self.model.upsampler(clean, full.shape[1]), full)

    def _vae_step(self, inputs, clean, condition, full, rng) -> dict[str, float] | None:
        recon, mu, logvar = self.model(inputs, condition, generator=rng)
        total, recon_loss, kl, sim = self.loss(recon, clean, mu, logvar, self.epochs_done)
        return self._step_generator({"loss": total, "recon": recon_loss, "kl": kl, "sim": sim}, total, clean, full)

    def _gan_step(self, clean, condition, full, rng) -> dict[str, float] | None:
        assert self.discriminator is not None and self.discriminator_optimizer is not None
        self.discriminator.train()
        z = draw_normal((clean.shape[0], self.model.latent_dim), clean, rng)
        fake = self.model(z, condition)
        d_loss = gan_discriminator_loss(
            self.discriminator(clean, condition), self.discriminator(fake.detach(), condition)
        )
        if not torch.isfinite(d_loss):
            return None
        self._apply(self.discriminator_optimizer, self.discriminator, d_loss)
        g_loss = gan_generator_loss(self.discriminator(fake, condition))
        return self._step_generator({"loss": g_loss, "discriminator": d_loss.detach()}, g_loss, clean, full)

    def _step_generator(
        self, losses: dict[str, torch.Tensor], total: torch.Tensor, clean: torch.Tensor, full: torch.Tensor
    ) -> dict[str, float] | None:
        """Add the learned upsampler's loss, then step the generator unless the total is not finite."""
        upsample = self._upsampler_loss(clean, full)
        if upsample is not None:
            losses["upsample"] = upsample
            total = total + upsample
        if not torch.isfinite(total):
            return None
        self._apply(self.optimizer, self.model, total)
        return {k: v.item() for k, v in losses.items()}

    @staticmethod
    def _apply(optimizer: torch.optim.Optimizer, module: nn.Module, loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(module.parameters(), GRAD_CLIP)
        optimizer.step()

    def finish_epoch(self) -> None:
        """Count the epoch and set the learning rate for the next one (cosine decay to 10 % over
        the run's generator epochs: long runs at a constant 1e-3 blew up after ~1000 steps)."""
        self.epochs_done += 1
        self._schedule_learning_rate()

    def _schedule_learning_rate(self) -> None:
        lr = scheduled_lr(self.learning_rate, self.epochs_done, self.loss.total_epochs, min_ratio=0.1)
        for optimizer in (self.optimizer, self.discriminator_optimizer):
            for group in optimizer.param_groups if optimizer is not None else []:
                group["lr"] = lr

    def sample(self, num_samples: int, condition: Condition | None = None, **kwargs: Any) -> torch.Tensor:
        self.model.eval()
        return self.model.sample(num_samples, condition, **kwargs)

    # ---- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        disc = self.discriminator
        return {
            "generator_type": self.kind,
            "generator_class": type(self.model).__name__,
            "generator_args": self.model.constructor_args(),
            "generator_state": self.model.state_dict(),
            "generator_optimizer_state": self.optimizer.state_dict(),
            "discriminator_args": disc.constructor_args() if disc is not None else None,
            "discriminator_state": disc.state_dict() if disc is not None else None,
            "discriminator_optimizer_state": (
                self.discriminator_optimizer.state_dict() if self.discriminator_optimizer is not None else None
            ),
            "generator_epochs": self.epochs_done,
        }

    @classmethod
    def from_state(
        cls,
        state: dict[str, Any],
        *,
        expected_type: str,
        learning_rate: float,
        total_epochs: int,
        beta_max: float = 0.01,
        device: str | torch.device = "cpu",
        source: str = "checkpoint",
    ) -> GeneratorLearner:
        """Rebuild exactly the saved generator (class + constructor args, weights, optimizers,
        epoch count); the type must match."""
        saved_type = state.get("generator_type")
        if saved_type != expected_type:
            raise GeneratorMismatchError(
                f"{source} holds a '{saved_type}' generator but this run is configured with generator_type "
                f"'{expected_type}': set generator_type to '{saved_type}' or load a '{expected_type}' generator"
            )
        model = build_generator(state["generator_class"], state["generator_args"])
        model.load_state_dict(state["generator_state"])
        discriminator = None
        if state.get("discriminator_args") is not None:
            discriminator = build_generator("GANDiscriminator", state["discriminator_args"])
            discriminator.load_state_dict(state["discriminator_state"])
        learner = cls(
            model,
            discriminator=discriminator,
            learning_rate=learning_rate,
            total_epochs=total_epochs,
            beta_max=beta_max,
            device=device,
        )
        load_optimizer_state(learner.optimizer, state["generator_optimizer_state"])
        if learner.discriminator_optimizer is not None and state.get("discriminator_optimizer_state"):
            load_optimizer_state(learner.discriminator_optimizer, state["discriminator_optimizer_state"])
        learner.epochs_done = int(state.get("generator_epochs", 0))
        learner._schedule_learning_rate()  # this run's schedule, not the saved learning rate
        return learner

    def check_compatible(
        self, *, input_dim: int, condition_slots: dict[str, list[int]], interpolation: str, source: str
    ) -> None:
        """A loaded generator must make embeddings of this run's size, from this run's conditions,
        with this run's interpolation."""
        model = self.model
        if interpolation == "learned" and model.upsampler is None:
            raise GeneratorMismatchError(
                f"{source} has no learned upsampler but generator_interpolation is 'learned': use 'linear', "
                "'nearest' or 'cubic' with this generator, or train one with generator_interpolation 'learned'"
            )
        if model.input_dim != input_dim:
            raise GeneratorMismatchError(
                f"{source} makes {model.input_dim}-d embeddings but this run's audio encoder gives {input_dim}-d"
            )
        if model.condition.slots != {k: list(v) for k, v in sorted(condition_slots.items())}:
            raise GeneratorMismatchError(
                f"{source} is conditioned on {model.condition.slots or 'nothing'} but this run's "
                f"generator_conditioning gives {condition_slots or 'nothing'}"
            )


@dataclass(frozen=True)
class GeneratorFactory:
    """How one run builds and restores generators (the server's and the nodes'): the config ->
    learner mapping and the compatibility checks live here once."""

    settings: FedA2VSettings
    input_dim: int
    condition_slots: dict[str, list[int]]
    total_epochs: int
    device: str | torch.device = "cpu"

    def new(self, *, sequence_length: int, seed: int) -> GeneratorLearner:
        f = self.settings
        model, discriminator = build_from_settings(
            f,
            input_dim=self.input_dim,
            sequence_length=sequence_length,
            condition_slots=self.condition_slots,
            seed=seed,
        )
        return GeneratorLearner(
            model,
            discriminator=discriminator,
            learning_rate=f.generator_learning_rate,
            total_epochs=self.total_epochs,
            beta_max=f.generator_beta_max,
            device=self.device,
        )

    def restore(self, state: dict[str, Any], source: str) -> GeneratorLearner:
        """The saved generator rebuilt exactly, after checking it can serve this run."""
        f = self.settings
        learner = GeneratorLearner.from_state(
            state,
            expected_type=f.generator_type,
            learning_rate=f.generator_learning_rate,
            total_epochs=self.total_epochs,
            beta_max=f.generator_beta_max,
            device=self.device,
            source=source,
        )
        learner.check_compatible(
            input_dim=self.input_dim,
            condition_slots=self.condition_slots,
            interpolation=f.generator_interpolation,
            source=source,
        )
        name, widths = expected_architecture(f, self.condition_slots)
        saved_args = state["generator_args"] or {}
        differing = {key: (saved_args.get(key), value) for key, value in widths.items() if saved_args.get(key) != value}
        if state["generator_class"] != name or differing:
            settings = ", ".join(f"{key} {saved} (config: {wanted})" for key, (saved, wanted) in differing.items())
            raise GeneratorMismatchError(
                f"{source} holds a {state['generator_class']}{' with ' + settings if settings else ''}, but this "
                f"run's config (generator_type '{f.generator_type}', vae_arch '{f.vae_arch}', generator_*_dim) "
                f"asks for a {name}: set those keys to the checkpoint's, or do not load it"
            )
        return learner
