"""ServerApp: reads the experiment config, builds the FedA2V strategy (thin glue)."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import torch
from flwr.app import Context
from flwr.server import ServerApp, ServerAppComponents, ServerConfig

from feda2v_flwr.checkpoint import find_checkpoint, load_checkpoint, saved_adapters
from feda2v_flwr.config import ConfigError, ExperimentConfig, load_config, resolve_run_path
from feda2v_flwr.config.schema import FedA2VSettings, unused_settings
from feda2v_flwr.data.datasets import DatasetError
from feda2v_flwr.data.partition import federation_classes, partition_classes
from feda2v_flwr.data.sample_partitions import check_classes_per_node
from feda2v_flwr.devices import resolve_device
from feda2v_flwr.encoders import audio_embed_dim, load_text_targets, target_slots
from feda2v_flwr.images.pipelines import import_diffusers
from feda2v_flwr.logging_setup import setup_logging
from feda2v_flwr.reporting import MetricsLog, WandbLogger
from feda2v_flwr.resume import (
    carry_client_state,
    check_resumable,
    final_evaluation_pending,
    run_folder_of,
    trim_metrics,
)
from feda2v_flwr.training.adapters import build_model
from feda2v_flwr.training.client_generators import check_client_generator_setup
from strategies.feda2v import FedA2VStrategy
from strategies.server_trainer import ServerGeneratorTrainer

log = logging.getLogger("feda2v_flwr.server")


def run_directory(run_config: dict, config_file: str) -> Path:
    """``<output-dir>/<run-name>``; relative output dirs resolve against the working directory."""
    output_dir = Path(str(run_config.get("output-dir") or "outputs")).expanduser()
    name = str(run_config.get("run-name") or "") or f"{Path(config_file).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    return (output_dir if output_dir.is_absolute() else Path.cwd() / output_dir).resolve() / name


def server_classes(config: ExperimentConfig) -> list[str]:
    """The federation's classes. The server needs no copy of the data when ``data.classes``
    names them all (a deployment's server machine): then they are taken as given, in that order."""
    named = config.data.classes
    try:
        return federation_classes(config)  # under partitioning 'local': data.classes, read nothing
    except DatasetError:
        if not named or not all(isinstance(c, str) for c in named):
            raise
        log.info("No copy of the dataset on the server: the federation's classes are data.classes %s", named)
        return list(dict.fromkeys(named))


def check_node_classes(config: ExperimentConfig, classes: list[str]) -> None:
    """Every node's class choice (``selected_classes`` / ``excluded_classes``, round robin) and
    the k-classes-per-node arithmetic, checked on the server before any training: a mistake fails
    here, naming the node, not in every node's fit round after round. The class choices are
    skipped when the server has no copy of the data."""
    data, num_clients = config.data, config.federation.num_clients
    if data.partitioning == "classes_per_node":
        check_classes_per_node(data.classes_per_node, num_clients, len(classes))
    if data.partitioning != "by_class":
        return  # the nodes draw clip-level partitions themselves
    try:
        for partition_id in range(num_clients):
            partition_classes(config, partition_id, num_clients)
    except DatasetError:
        return


def checked_classes(config: ExperimentConfig) -> list[str]:
    """The federation's classes after the checks that need no training: keys the run ignores
    (one warning each) and each node's share of the classes."""
    for sentence in unused_settings(config):
        log.warning(sentence)
    classes = server_classes(config)
    check_node_classes(config, classes)
    return classes


def adapter_checkpoint_file(f: FedA2VSettings) -> Path:
    """The checkpoint ``adapter_load_checkpoint`` starts the global adapters from."""
    return resolve_run_path(f.adapter_checkpoint_path or f.generator_checkpoint_path or "")


def generator_checkpoint_file(f: FedA2VSettings) -> Path:
    """The checkpoint ``generator_load_checkpoint`` starts the server generator from."""
    return resolve_run_path(f.generator_checkpoint_path or "")


def new_trainer(config: ExperimentConfig, slots: tuple, in_dim: int, device: str = "cpu") -> ServerGeneratorTrainer:
    return ServerGeneratorTrainer(
        config=config,
        adapters=build_model(config, slots, in_dim),
        input_dim=in_dim,
        slot_shapes={s.name: s.shape for s in slots},
        device=device,
    )


def check_client_generators(config: ExperimentConfig, classes: list[str]) -> None:
    """Client generator mistakes (classes, groups, pretrained files) fail on the server before
    any training, not in every client's fit."""
    f = config.feda2v
    if f.client_generators:
        pretrained = resolve_run_path(f.pretrained_generator_path) if f.pretrained_generator_path else None
        check_client_generator_setup(config, pretrained, classes)


def build_strategy(
    config: ExperimentConfig, run_dir: Path, *, resume: str | Path | None = None, stop_after_round: int | None = None
) -> FedA2VStrategy:
    """Everything the server needs, from the validated config (no Flower context needed).

    ``resume``: a checkpoint (file, pointer, checkpoint folder or run folder) to continue from at
    its round + 1. ``stop_after_round``: end this session after that round (checkpointed), as if
    the run had been stopped there; schedules still follow ``federation.global_rounds``.
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
    if resumed is not None:
        initial_state = saved_adapters(resumed, initial_state, resume_path)
    trainer = new_trainer(config, slots, in_dim, resolve_device(config.training.device))
    if f.generator_load_checkpoint:
        path = generator_checkpoint_file(f)
        payload = load_checkpoint(path)
        trainer.load_generator(payload, source=str(path))
        if adapter_path == path:  # the fine-tuning optimizer belongs to the adapters it was saved with
            trainer.load_finetune_state(payload)
    start_round, evaluation_only = 0, False
    if resumed is not None:
        if ServerGeneratorTrainer.holds_generator(resumed):
            trainer.load_generator(resumed, source=str(resume_path))
        trainer.load_finetune_state(resumed)
        saved_round = int(resumed["round"])
        if stop_after_round is not None and stop_after_round <= saved_round:
            raise ConfigError(f"stop-after-round {stop_after_round} is not after the resumed round {saved_round}")
        evaluation_only = final_evaluation_pending(config, resumed, resume_path)
        start_round = saved_round - 1 if evaluation_only else saved_round  # evaluation only: round N again
        dropped = trim_metrics(run_dir / "metrics.jsonl", saved_round)
        copied = carry_client_state(resume_path, run_dir)
        log.info(
            "Resuming from %s %s (%d metric lines of unfinished rounds dropped%s)",
            resume_path,
            f"for round {saved_round}'s evaluation only" if evaluation_only else f"at round {saved_round + 1}",
            dropped,
            f"; {copied} node state files copied from the checkpoint's run" if copied else "",
        )
    check_client_generators(config, classes)

    checkpoint_dir = Path(f.generator_checkpoint_dir)
    checkpoint_dir = checkpoint_dir if checkpoint_dir.is_absolute() else run_dir / checkpoint_dir
    wandb_logger = WandbLogger(
        config.wandb,
        run_dir=run_dir,
        run_name=run_dir.name,
        config=config.model_dump(mode="json"),
        run_id=resumed["wandb_run_id"] if resumed is not None else None,
    )
    return FedA2VStrategy(
        config=config,
        trainer=trainer,
        initial_state=initial_state,
        slot_shapes={s.name: s.shape for s in slots},
        classes=classes,
        run_dir=run_dir,
        cache_dir=cache_dir,
        checkpoint_dir=checkpoint_dir,
        metrics_log=MetricsLog(run_dir / "metrics.jsonl", wandb=wandb_logger),
        wandb_logger=wandb_logger,
        start_round=start_round,
        evaluation_only=evaluation_only,
        last_round=min(config.federation.global_rounds, stop_after_round or config.federation.global_rounds),
    )


def server_fn(context: Context) -> ServerAppComponents:
    setup_logging()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    run_config = dict(context.run_config)
    config_file = str(run_config.get("config", "configs/default.json"))
    config = load_config(config_file, str(run_config.get("overrides", "")))
    resume = str(run_config.get("resume") or "")
    run_dir = run_directory(run_config, config_file)
    if resume and not run_config.get("run-name"):  # go on in the checkpoint's own run folder
        run_dir = run_folder_of(find_checkpoint(resolve_run_path(resume)).resolve()) or run_dir
    log.info("FedA2V run: outputs in %s", run_dir)
    stop_after = int(run_config.get("stop-after-round") or 0) or None
    strategy = build_strategy(config, run_dir, resume=resume, stop_after_round=stop_after)
    server_config = ServerConfig(
        num_rounds=strategy.last_round - strategy.round_offset, round_timeout=config.federation.round_timeout
    )
    return ServerAppComponents(strategy=strategy, config=server_config)


app = ServerApp(server_fn=server_fn)
