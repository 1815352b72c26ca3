"""The server step's state as checkpoint fields, and back: the server generator(s) with their
optimizers and epoch counts, the fine-tuning optimizer and the server's RNG. The recipe writes
these fields into the run checkpoint, reads them on resume and snapshots them to roll a round back.
"""

from __future__ import annotations

import copy
import logging

import torch

from feda2v_flwr.server.generator_trainer import ServerGeneratorTrainer
from feda2v_flwr.training.generator_learner import GeneratorMismatchError
from feda2v_flwr.training.optim import load_optimizer_state

log = logging.getLogger(__name__)

_EMPTY_GENERATOR_STATE = {
    "generator_class": None,
    "generator_args": None,
    "generator_state": None,
    "generator_optimizer_state": None,
    "discriminator_args": None,
    "discriminator_state": None,
    "discriminator_optimizer_state": None,
    "generator_epochs": 0,
}


def trainer_state(trainer: ServerGeneratorTrainer) -> dict:
    """Generator (class, args, weights, optimizers, epochs) + fine-tuning optimizer + RNG;
    per-class generators under ``generator_per_class`` ({class: the same fields})."""
    generator = trainer.learner.state_dict() if trainer.learner is not None else _EMPTY_GENERATOR_STATE
    return {
        **generator,
        "generator_per_class": {name: learner.state_dict() for name, learner in trainer.class_learners.items()},
        "generator_type": trainer.f.generator_type,
        "finetune_optimizer_state": trainer.finetune_optimizer.state_dict(),
        "rng_state": trainer.rng.get_state(),
    }


def holds_generator(state: dict) -> bool:
    """Whether a checkpoint holds trained server generator weights."""
    return bool(state.get("generator_class") or state.get("generator_per_class"))


def load_generator(trainer: ServerGeneratorTrainer, state: dict, source: str = "checkpoint") -> None:
    """Start from a saved server generator, rebuilt exactly as saved (with its epoch count)."""
    f = trainer.f
    per_class = state.get("generator_per_class") or {}
    if not state.get("generator_class") and not per_class:
        raise GeneratorMismatchError(
            f"{source} holds no trained generator (saved with use_generator false or generator_type "
            "'gaussian'): train one first or set generator_load_checkpoint to false"
        )
    if bool(per_class) != trainer.per_class:
        saved = "one unconditioned generator per class" if per_class else "one conditioned generator"
        raise GeneratorMismatchError(
            f"{source} holds {saved} but this run's generator_conditioning is "
            f"'{f.generator_conditioning}' (with generator_type '{f.generator_type}'): "
            f"set generator_conditioning to {'none' if per_class else 'clip or clip+t5'}"
        )
    if per_class:
        trainer.class_learners = {
            name: trainer.factory.restore(s, f"{source} (class '{name}')") for name, s in per_class.items()
        }
        log.info("Server generators loaded from %s: one per class for %d classes", source, len(per_class))
        return
    trainer.learner = trainer.factory.restore(state, source)
    log.info("Server generator loaded from %s: %s", source, type(trainer.learner.model).__name__)


def load_finetune_state(trainer: ServerGeneratorTrainer, state: dict) -> None:
    """The fine-tuning optimizer and the server RNG of a saved server step (load them only
    together with the adapters they belong to)."""
    load_optimizer_state(trainer.finetune_optimizer, state["finetune_optimizer_state"])
    trainer.rng.set_state(state["rng_state"])


def snapshot(trainer: ServerGeneratorTrainer) -> dict:
    """A copy of the server step's state (generators, optimizers, RNG), to roll a round back."""
    return copy.deepcopy(trainer_state(trainer))


def restore(trainer: ServerGeneratorTrainer, saved: dict) -> None:
    """Back to ``saved`` (from :func:`snapshot`): a rejected round leaves no trace."""
    trainer.learner, trainer.class_learners = None, {}
    if holds_generator(saved):
        load_generator(trainer, saved, source="the state before this round")
    load_finetune_state(trainer, saved)


def generator_problem(trainer: ServerGeneratorTrainer) -> str | None:
    """Why the server generator(s) cannot be kept (non-finite weights), or None."""
    learners = [trainer.learner] if trainer.learner is not None else list(trainer.class_learners.values())
    for learner in learners:
        for name, tensor in learner.model.state_dict().items():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                return f"the server generator's {name} holds NaN or Inf"
    return None
