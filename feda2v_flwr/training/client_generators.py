"""A node's own generators (SPEC 4, step 3), free of Flower.

* **Which generators**: ``generator_granularity`` ``unified`` (one for the node), ``per_class``
  or ``per_group`` (``generator_class_groups``; classes in no group share the group
  ``other``); per node, ``generator_granularity``, ``generator_train_classes`` (a subset of its
  classes) and ``generator_class_group`` (all its classes in one named group) override that.
* **Continuity**: generators live in the node's state and keep learning across rounds. A saved
  generator whose classes differ from the ones it now serves is re-initialised when
  ``reset_generator_on_class_change`` (else it is kept, with a warning).
* **Pretrained**: ``pretrained_generator_path`` (a client checkpoint or a folder of them) gives
  each generator its starting point, matched by generator key (``class_dog``, ``unified``, ...).
* **Checkpoints**: ``{base}_node{id}_{key}_round_{r}.pt`` with the classes, the generator class
  and its constructor arguments, so they reload exactly (``weights_only=True``).

Generators are conditioned (``generator_conditioning``) on the class's text targets, which the
node knows; they are trained on the node's real train-split embeddings and never leave it.
"""

from __future__ import annotations

import io
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from feda2v_flwr.checkpointing.nodes import load_client_generator, save_client_generator
from feda2v_flwr.config.paths import ConfigError, resolve_run_path
from feda2v_flwr.config.schema import ExperimentConfig
from feda2v_flwr.data.datasets import DatasetError
from feda2v_flwr.data.partition import partition_classes
from feda2v_flwr.models.sequence import pool_tokens, resize_tokens
from feda2v_flwr.seeding import client_generator_seed
from feda2v_flwr.training.generator_learner import (
    GeneratorFactory,
    GeneratorLearner,
    GeneratorMismatchError,
    condition_slots_for,
)
from feda2v_flwr.training.generator_plan import generator_plan
from feda2v_flwr.training.loop import shuffled_batches

log = logging.getLogger(__name__)

EVALUATION_SAMPLES = 8


def check_client_generator_setup(config: ExperimentConfig, pretrained_path: Path | None, classes: list[str]) -> None:
    """Everything about client generators that can be wrong, checked on the server before any
    training: groups against the federation's ``classes``, every node's plan (when the server
    can see which classes a node holds), and the pretrained files (readable, right type)."""
    f = config.feda2v
    seen: dict[str, str] = {}
    for group, members in sorted((f.generator_class_groups or {}).items()):
        for member in members:
            if member not in classes:
                raise ConfigError(f"feda2v.generator_class_groups.{group} lists '{member}', not a class of this run")
            if member in seen:
                raise ConfigError(f"class '{member}' is in two generator_class_groups: '{seen[member]}' and '{group}'")
            seen[member] = group
    num_clients = config.federation.num_clients
    granularities = {config.node(pid).generator_granularity or f.generator_granularity for pid in range(num_clients)}
    node_groups = any(config.node(pid).generator_class_group for pid in range(num_clients))
    if "per_group" in granularities and not f.generator_class_groups and not node_groups:
        raise ConfigError(
            "generator_granularity 'per_group' needs feda2v.generator_class_groups (e.g. "
            '{"animals": ["dog", "rooster"]}) or nodes.<id>.generator_class_group; without groups use \'unified\''
        )
    if config.data.partitioning != "local":  # under 'local' only the node knows its classes
        try:
            node_classes = [partition_classes(config, pid, num_clients) for pid in range(num_clients)]
        except DatasetError:  # no copy of the data on this server: each node checks its own plan
            node_classes = []
        for pid, held in enumerate(node_classes):
            generator_plan(config, pid, held)
    if pretrained_path is None:
        return
    if not pretrained_path.exists():
        raise ConfigError(
            f"feda2v.pretrained_generator_path {pretrained_path} does not exist. Train client generators first (for "
            "example with configs/example_vae_memory_efficient.json) and point this key at their checkpoints."
        )
    files = [pretrained_path] if pretrained_path.is_file() else sorted(pretrained_path.glob("*.pt"))
    if not files:
        raise ConfigError(f"feda2v.pretrained_generator_path {pretrained_path} holds no .pt generator checkpoints")
    for file in files:
        saved_type = load_client_generator(file)["learner"]["generator_type"]
        if saved_type != f.generator_type:
            raise GeneratorMismatchError(
                f"{file} holds a '{saved_type}' generator but this run is configured with generator_type "
                f"'{f.generator_type}': set generator_type to '{saved_type}' or change pretrained_generator_path"
            )


@dataclass
class NodeGenerator:
    key: str
    classes: list[str]
    learner: GeneratorLearner

    @property
    def class_specific(self) -> bool:
        """Whether a sample can be attributed to a class (conditioned, or serving one class)."""
        return self.learner.model.conditioned or len(self.classes) == 1


class ClientGenerators:
    def __init__(
        self,
        *,
        config: ExperimentConfig,
        partition_id: int,
        classes: list[str],
        class_index: dict[str, int],
        targets: dict[str, torch.Tensor],
        input_dim: int,
        device: str | torch.device,
    ):
        self.config, self.f = config, config.feda2v
        self.partition_id = partition_id
        self.class_index = class_index
        self.targets = targets  # slot -> (num federation classes, *slot shape), standardised
        self.plan = generator_plan(config, partition_id, classes)
        slot_shapes = {slot: tuple(t.shape[1:]) for slot, t in targets.items()}
        self.condition_slots = condition_slots_for(self.f.generator_conditioning, slot_shapes)
        self.factory = GeneratorFactory(
            settings=self.f,
            input_dim=input_dim,
            condition_slots=self.condition_slots,
            total_epochs=self.f.generator_training_epochs * config.federation.global_rounds,
            device=device,
        )
        self.generators: dict[str, NodeGenerator] = {}

    # ---- setup -------------------------------------------------------------------------------
    def prepare(self, saved: bytes | None, audio_length: int, pretrained_path: Path | None = None) -> None:
        """Restore the generators from the node state, else from pretrained files
        (``pretrained_path``, default: ``pretrained_generator_path`` from the working directory),
        else build new ones."""
        entries = torch.load(io.BytesIO(saved), map_location="cpu", weights_only=True) if saved else {}
        if pretrained_path is None and self.f.pretrained_generator_path:
            pretrained_path = resolve_run_path(self.f.pretrained_generator_path)
        pretrained = self._pretrained(pretrained_path) if not entries and pretrained_path else {}
        self.generators = {}
        for key, classes in self.plan.items():
            learner = None
            entry, source = entries.get(key), "the node state"
            seed = client_generator_seed(self.config.training.seed, self.partition_id, key)
            if entry is None and key in pretrained:
                entry, source = pretrained[key]
            if entry is not None:
                learner = self._restore(entry, source, classes)
            if learner is None:
                sequence_length = self.f.generator_training_sequence_length or audio_length
                learner = self.factory.new(sequence_length=sequence_length, seed=seed)
            self.generators[key] = NodeGenerator(key, classes, learner)

    def _restore(self, entry: dict[str, Any], source: str, classes: list[str]) -> GeneratorLearner | None:
        learner = self.factory.restore(entry["learner"], source)
        if sorted(entry["classes"]) != sorted(classes):
            if self.f.reset_generator_on_class_change:
                log.info(
                    "node %d: generator from %s served %s, now %s: re-initialised",
                    self.partition_id,
                    source,
                    entry["classes"],
                    classes,
                )
                return None
            log.warning(
                "node %d: generator from %s served %s, now %s; kept (reset_generator_on_class_change is false)",
                self.partition_id,
                source,
                entry["classes"],
                classes,
            )
        return learner

    def _pretrained(self, path: Path) -> dict[str, tuple[dict[str, Any], str]]:
        """Generator key -> (entry, file) from a checkpoint or a folder of them; this node's own
        files and later rounds win."""
        if not path.exists():
            raise ConfigError(
                f"pretrained_generator_path {path} does not exist. Train client generators first (for example with "
                "configs/example_vae_memory_efficient.json) and point this key at their checkpoint folder."
            )
        files = [path] if path.is_file() else sorted(path.glob("*.pt"))
        best: dict[str, tuple[tuple[bool, int], dict[str, Any], str]] = {}
        for file in files:
            payload = load_client_generator(file)
            rank = (payload["node"] == self.partition_id, int(payload["round"]))
            key = payload["generator_key"]
            if key not in best or rank > best[key][0]:
                best[key] = (rank, payload, str(file))
        if path.is_file() and not set(best) & set(self.plan):
            raise ConfigError(
                f"{path} holds generator '{next(iter(best))}', but node {self.partition_id} needs {sorted(self.plan)}"
            )
        missing = sorted(set(self.plan) - set(best))
        if missing:
            log.warning(
                "node %d: no pretrained generator for %s in %s; they start fresh", self.partition_id, missing, path
            )
        return {key: (payload, file) for key, (_, payload, file) in best.items()}

    # ---- training ----------------------------------------------------------------------------
    def _condition(self, labels: torch.Tensor) -> dict[str, torch.Tensor] | None:
        return {slot: self.targets[slot][labels] for slot in self.condition_slots} or None

    def train(self, embeddings: torch.Tensor, labels: torch.Tensor, rng: torch.Generator) -> dict[str, float]:
        """``generator_training_epochs`` epochs of every generator on its classes' real embeddings."""
        start = time.perf_counter()
        last_losses, skipped = [], 0
        for gen in self.generators.values():
            wanted = torch.tensor([self.class_index[c] for c in gen.classes], device=labels.device)
            mask = torch.isin(labels, wanted)
            if not mask.any():
                continue
            skipped_before = gen.learner.skipped_batches
            loss = self._train_one(gen, embeddings[mask], labels[mask], rng)
            skipped += gen.learner.skipped_batches - skipped_before
            if loss is not None:
                last_losses.append(loss)
                log.info(
                    "node %d generator %s (%s): %d clips, %d epochs so far, loss %.4f",
                    self.partition_id,
                    gen.key,
                    ",".join(gen.classes),
                    int(mask.sum()),
                    gen.learner.epochs_done,
                    loss,
                )
        metrics = {
            "num_generators": len(self.generators),
            "generator_parameters": int(sum(g.learner.num_parameters for g in self.generators.values())),
            "generator_skipped_batches": skipped,
            "generator_epochs": int(max((g.learner.epochs_done for g in self.generators.values()), default=0)),
            "generator_train_s": time.perf_counter() - start,
        }
        if last_losses:
            metrics["generator_loss"] = float(np.mean(last_losses))
        return metrics

    def _train_one(self, gen: NodeGenerator, x: torch.Tensor, y: torch.Tensor, rng: torch.Generator) -> float | None:
        """Mini-batch epochs with denoising augmentation; returns the last epoch's mean loss."""
        f, batch_size = self.f, self.config.training.batch_size
        noise = f.generator_augmentation_noise if f.generator_augmentation else 0.0
        last = None
        for _ in range(f.generator_training_epochs):
            losses = []
            for idx in shuffled_batches(len(y), batch_size, rng, y.device):
                step = gen.learner.step(x[idx], self._condition(y[idx]), noise_std=noise, rng=rng)
                if step is not None:
                    losses.append(step["loss"])
            gen.learner.finish_epoch()
            last = float(np.mean(losses)) if losses else last
        return last

    # ---- evaluation --------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(
        self, adapters: nn.ModuleDict, embeddings: torch.Tensor, labels: torch.Tensor, rng: torch.Generator
    ) -> dict[str, float]:
        """Synthetic samples (at the output length) of each class vs the class's real mean
        (``generator_similarity``), and whether the adapters map them to their class
        (``synthetic_retrieval_top1``, the nearest class target among all federation classes)."""
        similarities, hits, total = [], 0.0, 0
        length = embeddings.shape[1]
        out_len = self.f.generator_output_sequence_length or length
        adapters.eval()
        for gen in self.generators.values():
            if not gen.class_specific:
                continue
            for name in gen.classes:
                real = embeddings[labels == self.class_index[name]]
                if len(real) == 0:
                    continue
                index = torch.full((EVALUATION_SAMPLES,), self.class_index[name], device=labels.device)
                synthetic = self._sample(gen, index, out_len, rng)
                fake_mean = _to_length(synthetic, length).mean(0)
                similarities.append(F.cosine_similarity(fake_mean.flatten(), real.mean(0).flatten(), dim=0).item())
                for slot, module in adapters.items():
                    out = F.normalize(module(synthetic).flatten(1), dim=1)
                    sims = out @ F.normalize(self.targets[slot].flatten(1), dim=1).T  # (N, classes)
                    hits += (sims.argmax(1) == index).float().sum().item()
                    total += len(index)
        if not similarities:
            return {}
        return {"generator_similarity": float(np.mean(similarities)), "synthetic_retrieval_top1": hits / total}

    @torch.no_grad()
    def class_samples(self, name: str, num_samples: int, length: int, rng: torch.Generator) -> torch.Tensor | None:
        """``num_samples`` samples (num_samples, length, D) of class ``name`` from the node's
        generator that serves it (``synthetic_source: clients``); None when no generator can
        make samples of that class alone (it serves none, or several without conditioning)."""
        gen = next((g for g in self.generators.values() if name in g.classes and g.class_specific), None)
        if gen is None:
            return None
        index = torch.full((num_samples,), self.class_index[name], dtype=torch.long)
        samples = self._sample(gen, index, self.f.generator_output_sequence_length or length, rng)
        return _to_length(samples, length).cpu()

    def _sample(self, gen: NodeGenerator, index: torch.Tensor, length: int, rng: torch.Generator) -> torch.Tensor:
        """One sample per entry of ``index`` (class indices) from ``gen``, at ``length`` tokens."""
        return gen.learner.sample(
            len(index),
            self._condition(index),
            generator=rng,
            target_sequence_length=length,
            interpolation=self.f.generator_interpolation,
        )

    # ---- state and checkpoints ---------------------------------------------------------------
    def state_bytes(self) -> bytes:
        entries = {key: {"classes": g.classes, "learner": g.learner.state_dict()} for key, g in self.generators.items()}
        buffer = io.BytesIO()
        torch.save(entries, buffer)
        return buffer.getvalue()

    def save_checkpoints(self, directory: Path, server_round: int, keep_last: int) -> list[Path]:
        """Every generator of the node, one file each (``{base}_node{id}_{key}_round_{r}.pt``)."""
        granularity = {"unified": "unified", "class": "per_class", "group": "per_group"}
        paths = []
        for key, gen in self.generators.items():
            fields = {
                "node": self.partition_id,
                "generator_key": key,
                "granularity": granularity[key.split("_")[0]],
                "classes": list(gen.classes),
                "learner": gen.learner.state_dict(),
            }
            stem = f"{self.f.client_generator_base_name}_node{self.partition_id}_{_safe(key)}"
            paths.append(save_client_generator(directory, stem, server_round, fields, keep_last=keep_last))
        return paths


def _to_length(x: torch.Tensor, length: int) -> torch.Tensor:
    """Compare sequences at the real length: pool longer ones, interpolate shorter ones."""
    return pool_tokens(x, length) if x.shape[1] >= length else resize_tokens(x, length)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", name)
