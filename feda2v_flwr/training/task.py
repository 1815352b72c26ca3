"""One node's work, free of Flower: load data, train adapters, compute statistics, evaluate."""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from feda2v_flwr.config.schema import ExperimentConfig
from feda2v_flwr.data.partition import PartitionData, load_partition
from feda2v_flwr.devices import resolve_device
from feda2v_flwr.encoders import (
    EmbeddingCache,
    build_audio_encoder,
    load_text_targets,
    target_slots,
)
from feda2v_flwr.images.drawing import ImageMaker, encode_labels, pick_per_class
from feda2v_flwr.images.scoring import image_metrics
from feda2v_flwr.payload import encode_update, module_to_ndarrays, ndarrays_to_module
from feda2v_flwr.seeding import node_round_seed
from feda2v_flwr.training.adapters import (
    build_model,
    evaluate_adapters,
    make_optimizers,
    predict,
    train_adapters,
)
from feda2v_flwr.training.client_generators import ClientGenerators
from feda2v_flwr.training.optim import load_optimizer_state
from feda2v_flwr.training.statistics import class_statistics

log = logging.getLogger(__name__)


@dataclass
class FitOutcome:
    arrays: list[np.ndarray]
    num_examples: int
    metrics: dict[str, float | int | str]
    optimizer_state: bytes
    local_adapters: bytes
    generator_state: bytes | None = None


class ClientTask:
    def __init__(self, config: ExperimentConfig, partition_id: int, num_partitions: int, cache_dir: str | Path):
        self.config = config
        self.partition_id = partition_id
        self.partition: PartitionData = load_partition(config, partition_id, num_partitions)
        self.device = resolve_device(config.training.device)
        encoder = build_audio_encoder(config, device=self.device)
        self.cache = EmbeddingCache(cache_dir, encoder)
        f = config.feda2v
        self.slots = target_slots(f)
        self.targets = load_text_targets(f, self.partition.federation_classes, cache_dir)
        self.class_index = {c: i for i, c in enumerate(self.partition.federation_classes)}
        self.target_tensors = {
            s.name: torch.from_numpy(self.targets.standardized(s.name)).to(self.device) for s in self.slots
        }
        self.model = build_model(config, self.slots, encoder.embed_dim).to(self.device)
        node = config.node(partition_id)
        self.cls_only = f.use_cls_token_only if node.use_cls_token_only is None else node.use_cls_token_only
        self._data: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.generators = (
            ClientGenerators(
                config=config,
                partition_id=partition_id,
                classes=self.partition.classes,
                class_index=self.class_index,
                targets=self.target_tensors,
                input_dim=encoder.embed_dim,
                device=self.device,
            )
            if f.client_generators
            else None
        )

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(embeddings (N, T, D), labels (N,)) of a split; encoded once, then from the cache."""
        if name not in self._data:
            clips = self.partition.splits[name]
            if clips:
                emb = torch.from_numpy(self.cache.embed(clips))
                clips = [c for c in clips if c.identity not in self.cache.failed]  # undecodable audio left out
            else:
                emb = torch.zeros((0, 1, self.cache.encoder.embed_dim))
            if self.cls_only:
                emb = emb[:, :1].clone()  # after the cache (never stored sliced); clone frees the full stack
            labels = torch.tensor([self.class_index[c.class_name] for c in clips], dtype=torch.long)
            self._data[name] = (emb.to(self.device), labels.to(self.device))
        return self._data[name]

    def _load_adapters(self, global_arrays: list[np.ndarray], local_adapters: bytes | None) -> None:
        if self.config.feda2v.adapter_aggregation_mode == "none" and local_adapters:
            self.model.load_state_dict(torch.load(io.BytesIO(local_adapters), map_location="cpu", weights_only=True))
        else:
            ndarrays_to_module(self.model, global_arrays)

    def fit(
        self,
        global_arrays: list[np.ndarray],
        server_round: int,
        optimizer_state: bytes | None,
        local_adapters: bytes | None,
        *,
        generator_state: bytes | None = None,
        generator_dir: Path | None = None,
        pretrained_path: Path | None = None,
    ) -> FitOutcome:
        """Train adapters (unless ``generator_only_mode``), then the node's generators (when
        configured; checkpointed into ``generator_dir`` when given: on the rounds the server
        names), then compute the per-class statistics the server needs."""
        start = time.perf_counter()
        encoder_calls = self.cache.encoder.calls
        cfg = self.config
        fault = cfg.node(self.partition_id).simulate_fault
        if fault == "hang":  # a node stuck (a dead disk, a deadlock): the server stops waiting at round_timeout
            log.warning("node %d: simulated hang (nodes.%d.simulate_fault)", self.partition_id, self.partition_id)
            time.sleep(2 * cfg.federation.round_timeout)
        if fault in ("raise", "hang"):
            raise RuntimeError(
                f"simulated fault on node {self.partition_id} (nodes.{self.partition_id}.simulate_fault: {fault})"
            )
        self._load_adapters(global_arrays, local_adapters)
        optimizers = make_optimizers(self.model, cfg)
        if optimizer_state:
            saved = torch.load(io.BytesIO(optimizer_state), map_location=self.device, weights_only=True)
            for slot, optimizer in optimizers.items():
                load_optimizer_state(optimizer, saved[slot])
        emb, labels = self.split("train")
        load_s = time.perf_counter() - start

        epochs = 0 if cfg.feda2v.generator_only_mode else cfg.federation.local_epochs
        seed = node_round_seed(cfg.training.seed, server_round, self.partition_id)
        torch.manual_seed(seed)  # whatever draws from torch's global generator (e.g. GAN dropout): resumable
        generator = torch.Generator().manual_seed(seed)
        losses = train_adapters(
            self.model,
            optimizers,
            emb,
            labels,
            self.target_tensors,
            config=cfg,
            epochs=epochs,
            first_epoch=(server_round - 1) * epochs,
            total_epochs=cfg.federation.global_rounds * epochs,
            generator=generator,
        )
        train_s = time.perf_counter() - start - load_s

        val_emb, val_labels = self.split("val")
        generator_metrics: dict[str, float] = {}
        if self.generators is not None:
            generator_metrics = self._fit_generators(
                generator_state,
                generator,
                server_round,
                generator_dir,
                pretrained_path,
            )
        outputs = {slot: out.cpu() for slot, out in predict(self.model, emb).items()}
        stats = class_statistics(
            classes=self.partition.classes,
            class_index=self.class_index,
            train_embeddings=emb.cpu(),
            train_labels=labels.cpu(),
            train_outputs=outputs,
            val_embeddings=val_emb.cpu(),
            val_labels=val_labels.cpu(),
            sequence_length=cfg.feda2v.statistics_sequence_length,
            components=cfg.feda2v.statistics_components,
            seed=seed,
        )
        if cfg.feda2v.synthetic_source == "clients" and self.generators is not None:
            for name, entry in stats.items():  # the node's own generator, at the statistics length
                samples = self.generators.class_samples(
                    name, cfg.feda2v.synthetic_samples_per_class, entry.audio_mean.shape[0], generator
                )
                entry.samples = None if samples is None else samples.numpy()
        adapter_state = {k: v.detach().cpu().numpy() for k, v in self.model.state_dict().items()}
        arrays, manifest = encode_update(adapter_state, stats, cfg.feda2v.transfer_dtype)
        if fault == "nan":  # a corrupted reply, for fault-tolerance drills
            arrays[0] = np.full_like(arrays[0], np.nan)
        if fault == "huge":  # a poisoning reply: every adapter value 1e30 (arrays start with the adapters)
            arrays[: len(adapter_state)] = [np.full_like(a, 1e30) for a in arrays[: len(adapter_state)]]
        payload_bytes = int(sum(a.nbytes for a in arrays))
        metrics: dict[str, float | int | str] = {
            "partition_id": self.partition_id,
            "manifest": manifest,
            "payload_bytes": payload_bytes,
            "classes": ",".join(self.partition.classes),
            "load_s": load_s,
            "train_s": train_s,
            "fit_s": time.perf_counter() - start,
            "encoder_calls": self.cache.encoder.calls - encoder_calls,  # 0 once the cache holds every clip
            **{f"train_loss_{slot}": value for slot, value in losses.items()},
            **generator_metrics,
        }
        log.info(
            "node %d round %d: adapters trained %d epochs on %d clips (%s); losses %s; upload %.1f KiB",
            self.partition_id,
            server_round,
            epochs,
            len(labels),
            metrics["classes"],
            {k: round(v, 4) for k, v in losses.items()},
            payload_bytes / 1024,
        )
        return FitOutcome(
            arrays=arrays,
            num_examples=len(labels),
            metrics=metrics,
            optimizer_state=_to_bytes({slot: opt.state_dict() for slot, opt in optimizers.items()}),
            local_adapters=_to_bytes(self.model.state_dict()),
            generator_state=self.generators.state_bytes() if self.generators is not None else None,
        )

    def _fit_generators(
        self,
        saved: bytes | None,
        rng: torch.Generator,
        server_round: int,
        directory: Path | None,
        pretrained_path: Path | None,
    ) -> dict[str, float]:
        """Train the node's generators on the train split, score them, checkpoint them into
        ``directory`` (None: not this round)."""
        assert self.generators is not None
        emb, labels = self.split("train")
        self.generators.prepare(saved, audio_length=emb.shape[1], pretrained_path=pretrained_path)
        metrics = self.generators.train(emb, labels, rng)
        val_emb, val_labels = self.split("val")
        reference = (val_emb, val_labels) if len(val_labels) else (emb, labels)
        metrics.update(self.generators.evaluate(self.model, *reference, rng))
        if directory is not None:
            paths = self.generators.save_checkpoints(directory, server_round, self.config.feda2v.checkpoint_keep_last)
            log.info("node %d: %d generator checkpoints in %s", self.partition_id, len(paths), directory)
        return metrics

    def evaluate(
        self,
        global_arrays: list[np.ndarray],
        local_adapters: bytes | None,
        *,
        server_round: int = 0,
        image_dir: Path | None = None,
    ) -> dict[str, float | int | str]:
        """Val and test metrics (prefixed ``val_`` / ``test_``) with their example counts; on
        ``images.every_rounds`` rounds also pictures and their CLIP scores (``image_*``)."""
        self._load_adapters(global_arrays, local_adapters)
        metrics: dict[str, float | int | str] = {"partition_id": self.partition_id}
        for split in ("val", "test"):
            emb, labels = self.split(split)
            metrics[f"{split}_examples"] = len(labels)
            if len(labels):
                for key, value in evaluate_adapters(self.model, emb, labels, self.target_tensors).items():
                    metrics[f"{split}_{key}"] = value
        if image_dir is not None and self.config.images.due(server_round):
            maker = ImageMaker(self.config.feda2v.target_profile, self.config.images, self.device)
            try:  # the pipeline is big: loaded for this round only
                metrics.update(self.draw_images(maker, image_dir / f"round_{server_round:03d}"))
            finally:
                maker.release()
        return metrics

    def draw_images(self, maker: ImageMaker, directory: Path) -> dict[str, float | int | str]:
        """Pictures of up to ``images.per_class`` clips per class of the ``images.split`` split,
        from the adapters as loaded, in ``<directory>/node_<id>/<class>.png``; returns their
        zero-shot scores and the labels / predictions (class indices, comma-separated)."""
        settings = self.config.images
        emb, labels = self.split(settings.split)
        rows = torch.from_numpy(pick_per_class(labels.cpu().numpy(), settings.per_class))
        if not len(rows):
            log.info("node %d: no %s clips to draw pictures of", self.partition_id, settings.split)
            return {"image_count": 0}
        with torch.no_grad():
            outputs = predict(self.model, emb[rows.to(emb.device)])
        embeddings = {slot: self.targets.to_original(slot, out.float().cpu().numpy()) for slot, out in outputs.items()}
        chosen = labels[rows.to(labels.device)].cpu().numpy()
        classes = self.partition.federation_classes
        predictions = maker.draw(embeddings, chosen, classes, directory / f"node_{self.partition_id}")
        scores = image_metrics(chosen, predictions, len(classes))
        log.info("node %d: pictures of %d clips, CLIP zero-shot %s", self.partition_id, len(chosen), scores)
        return {
            "image_count": len(chosen),
            **{f"image_{k}": v for k, v in scores.items()},
            "image_labels": encode_labels(chosen),
            "image_predictions": encode_labels(predictions),
        }

    def initial_arrays(self) -> list[np.ndarray]:
        return module_to_ndarrays(self.model)


def _to_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()
