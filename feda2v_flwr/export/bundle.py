"""The export folder: ``adapters.safetensors`` + ``config.json`` + ``README.md``.

:func:`export_run` writes it from a finished run folder (its config and a checkpoint; no dataset,
no network); :func:`load_adapters` rebuilds the adapters from the folder alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from feda2v_flwr.checkpointing.run import find_checkpoint, load_checkpoint, saved_adapters
from feda2v_flwr.config import ExperimentConfig, load_config, resolve_run_path
from feda2v_flwr.data.datasets import DatasetError
from feda2v_flwr.encoders import SlotSpec, audio_embed_dim, build_audio_encoder, target_slots
from feda2v_flwr.export.model_card import MINILM_MODEL, model_card
from feda2v_flwr.models.adapter import build_adapters
from feda2v_flwr.reporting import read_metrics
from feda2v_flwr.server.checks import server_classes
from feda2v_flwr.training.adapters import adapter_arguments, build_model

FORMAT = "feda2v-adapters"
FORMAT_VERSION = 1
WEIGHTS_FILE, CONFIG_FILE, CARD_FILE = "adapters.safetensors", "config.json", "README.md"


class ExportError(RuntimeError):
    """A run folder that cannot be exported, or a folder that holds no export; the message says what to do."""


@dataclass(frozen=True)
class ExportedAdapters:
    """An export loaded back: one ``SlotAdapter`` per slot (eval mode) and the folder's config.json."""

    modules: nn.ModuleDict
    config: dict[str, Any]

    @property
    def class_names(self) -> list[str] | None:
        """The federation's classes in label order (None: the export could not tell them)."""
        return self.config["class_names"]

    @property
    def slot_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per slot, the shape of one clip's output: (dim,) or (n_latents, dim)."""
        return {name: tuple(slot["shape"]) for name, slot in self.config["slots"].items()}


def export_run(
    run_dir: str | Path, out_dir: str | Path, *, checkpoint: str | Path | None = None, force: bool = False
) -> dict[str, Any]:
    """Write the global adapters of ``run_dir``'s latest checkpoint (or of ``checkpoint``) to
    ``out_dir``; returns the export's config.json. ``force`` writes into a non-empty ``out_dir``
    (the export's files are replaced, others are left as they are)."""
    run_dir, out_dir = resolve_run_path(run_dir), resolve_run_path(out_dir)
    if not (run_dir / "config.json").is_file():
        raise ExportError(
            f"{run_dir} is not a run folder (it holds no config.json): give a run's folder, outputs/<run>"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir} is a file: give a folder to export into")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise ExportError(f"{out_dir} exists and is not empty: choose a new folder, or overwrite with --force")
    config = load_config(run_dir / "config.json")
    checkpoint_file = find_checkpoint(resolve_run_path(checkpoint) if checkpoint else run_dir)
    payload = load_checkpoint(checkpoint_file)
    slots = target_slots(config.feda2v)
    in_dim = audio_embed_dim(config)
    state = saved_adapters(payload, build_model(config, slots, in_dim).state_dict(), checkpoint_file)
    server_round = int(payload["round"])
    export = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "feda2v_flwr_version": _package_version(),
        "run": run_dir.name,
        "round": server_round,
        "checkpoint": checkpoint_file.name,
        "config_hash": payload["config_hash"],
        "slots": {s.name: {"n_latents": s.n_latents, "dim": s.dim, "shape": list(s.shape)} for s in slots},
        "adapter": adapter_arguments(config, in_dim),
        "audio_encoder": _audio_encoder(config),
        "target": _target(config),
        **_class_names(config),
    }
    evaluation, evaluation_source = _evaluation(run_dir, server_round)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {name: torch.from_numpy(array).contiguous() for name, array in state.items()}
    metadata = {"format": "pt", "round": str(server_round), FORMAT: str(FORMAT_VERSION)}
    save_file(tensors, out_dir / WEIGHTS_FILE, metadata=metadata)
    (out_dir / CONFIG_FILE).write_text(json.dumps(export, indent=1) + "\n")
    (out_dir / CARD_FILE).write_text(model_card(config, export, evaluation, evaluation_source))
    return export


def load_adapters(out_dir: str | Path, *, device: str | torch.device = "cpu") -> ExportedAdapters:
    """The adapters of an export folder, rebuilt from its config.json and loaded with strict key
    checking, in eval mode on ``device``. Needs no run config, dataset or network."""
    folder = Path(out_dir)
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, ValueError) as err:
        raise ExportError(f"Cannot read {folder / CONFIG_FILE} ({err}): give a folder feda2v-export wrote") from None
    if not isinstance(config, dict) or (config.get("format"), config.get("format_version")) != (FORMAT, FORMAT_VERSION):
        raise ExportError(f"{folder / CONFIG_FILE} is not a {FORMAT} export of format version {FORMAT_VERSION}")
    slots = tuple(SlotSpec(name, slot["n_latents"], slot["dim"]) for name, slot in config["slots"].items())
    modules = build_adapters(slots, **config["adapter"])
    try:
        modules.load_state_dict(load_file(folder / WEIGHTS_FILE), strict=True)
    except (OSError, SafetensorError, RuntimeError) as err:
        raise ExportError(
            f"{folder / WEIGHTS_FILE} does not hold the adapters {CONFIG_FILE} describes: {err}"
        ) from None
    return ExportedAdapters(modules=modules.to(device).eval(), config=config)


def _audio_encoder(config: ExperimentConfig) -> dict[str, Any]:
    """The frozen encoder the adapters read, and the key of its embeddings in the embedding cache."""
    f, data = config.feda2v, config.data
    encoder = build_audio_encoder(config)  # ast: reads the model's config, not its weights
    info: dict[str, Any] = {
        "id": f.audio_encoder,
        "embedding_cache_key": encoder.cache_key(),
        "sample_rate": data.sample_rate,
        "clip_seconds": data.clip_seconds,
        "use_cls_token_only": f.use_cls_token_only,
    }
    if f.audio_encoder == "ast":
        info.update(model=f.ast.model, max_length=encoder.max_length)
    elif f.audio_encoder == "mel-patch":
        info["mel_patch"] = f.mel_patch.model_dump()
    elif f.audio_encoder == "aisfx":
        info["aisfx"] = f.aisfx.model_dump()
    return info


def _target(config: ExperimentConfig) -> dict[str, Any]:
    """The prompt embeddings the adapters predict (standardised per feature over the class targets)."""
    f = config.feda2v
    encoders = {
        "minilm": {"minilm": MINILM_MODEL},
        "flux": {"clip": f.text_encoders.clip_model, "t5": f.text_encoders.t5_model},
        "sd": {"clip": f.text_encoders.clip_model},
    }[f.target_profile]
    return {
        "profile": f.target_profile,
        "prompt_template": f.prompt_template,
        "text_encoders": None if f.targets_file else encoders,
        "targets_file": Path(f.targets_file).name if f.targets_file else None,
        "standardized": True,
    }


def _class_names(config: ExperimentConfig) -> dict[str, Any]:
    """Neither checkpoints nor summaries store the classes: they are computed as the server does."""
    try:
        names: list[str] | None = server_classes(config)
        source = "computed from the run's config as the server does (server_classes)"
    except DatasetError as err:
        names, source = None, f"unknown: the classes come from the dataset, which is not on this machine ({err})"
    return {"class_names": names, "class_names_source": source}


def _evaluation(run_dir: Path, server_round: int) -> tuple[dict[str, float], str | None]:
    """The evaluation of the exported round: summary.json's when it is of that round, else the
    round's ``evaluate`` line in metrics.jsonl; ({}, None) when neither holds one."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        summary = {}
    if isinstance(summary, dict) and summary.get("round") == server_round and summary.get("evaluation"):
        return summary["evaluation"], "summary.json"
    try:
        lines = read_metrics(run_dir / "metrics.jsonl")
    except (OSError, ValueError):
        return {}, None
    for line in reversed(lines):
        if line.get("phase") == "evaluate" and line.get("round") == server_round:
            return {k: v for k, v in line.items() if k.startswith(("test_", "val_"))}, "metrics.jsonl"
    return {}, None


def _package_version() -> str:
    try:
        return version("feda2v-flwr")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown"
