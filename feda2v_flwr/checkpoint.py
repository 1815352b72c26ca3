"""One checkpoint schema: atomic save, safe load (``weights_only=True``), retention."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

FORMAT_VERSION = 2
REQUIRED_KEYS = (
    "format_version",
    "round",
    "timestamp",
    "generator_type",
    "generator_class",
    "generator_args",
    "generator_state",
    "generator_optimizer_state",
    "discriminator_args",
    "discriminator_state",
    "discriminator_optimizer_state",
    "generator_epochs",
    "global_adapters",
    "finetune_optimizer_state",
    "rng_state",
    "config",
    "config_hash",
    "wandb_run_id",
)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file."""


def checkpoint_path(directory: Path, base_name: str, server_round: int) -> Path:
    return directory / f"{base_name}_round_{server_round}.pt"


def save_checkpoint(
    directory: Path, base_name: str, payload: dict[str, Any], *, keep_last: int, best_metric: float | None = None
) -> Path:
    """Write ``{base}_round_{r}.pt`` atomically, update ``{base}_latest.json``, prune old rounds.

    ``best_metric`` (higher is better) also copies the file to ``{base}_best.pt`` when it wins.
    """
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    assert not missing, f"checkpoint payload lacks {missing}"
    directory.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(directory, base_name, payload["round"])
    atomic_torch_save(payload, path)
    pointer = directory / f"{base_name}_latest.json"
    previous = json.loads(pointer.read_text()) if pointer.exists() else {}
    best = previous.get("best")
    if best_metric is not None and (best is None or best_metric > best["metric"]):
        atomic_torch_save(payload, directory / f"{base_name}_best.pt")
        best = {"round": payload["round"], "metric": best_metric, "file": f"{base_name}_best.pt"}
    info = {"round": payload["round"], "file": path.name, "timestamp": payload["timestamp"], "best": best}
    _atomic_write_text(pointer, json.dumps(info, indent=1))
    rounds = sorted(int(p.stem.rsplit("_", 1)[1]) for p in directory.glob(f"{base_name}_round_*.pt"))
    for old in rounds[:-keep_last]:
        checkpoint_path(directory, base_name, old).unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint as data (never code). Errors name the file and what is wrong."""
    path = Path(path)
    if path.suffix == ".json":  # a "latest" pointer
        try:
            path = path.parent / json.loads(path.read_text())["file"]
        except (OSError, KeyError, TypeError, json.JSONDecodeError) as err:
            raise CheckpointError(f"Cannot read checkpoint pointer {path}: {err}") from None
    if not path.is_file():
        raise CheckpointError(f"Checkpoint file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for truncated/corrupt files
        raise CheckpointError(f"Checkpoint {path} is corrupt or truncated ({type(err).__name__}: {err})") from None
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a feda2v checkpoint of format version {FORMAT_VERSION}")
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise CheckpointError(f"Checkpoint {path} lacks {missing}")
    return payload


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint file ``path`` stands for: a ``.pt`` file itself; a ``*_latest.json`` pointer's
    file; in a checkpoint directory, its newest pointer's file (else its highest round); in a run
    folder, the same in its checkpoint directory (its ``config.json``'s, default ``checkpoints/``)."""
    path = Path(path)
    if path.is_dir():
        folder = _checkpoint_folder(path)
        pointers = sorted(folder.glob("*_latest.json"), key=lambda p: p.stat().st_mtime)
        if pointers:
            path = pointers[-1]
        else:
            rounds = sorted(folder.glob("*_round_*.pt"), key=lambda p: _round_number(p) or -1)
            if not rounds:
                raise CheckpointError(f"{path} holds no checkpoint: no *_latest.json pointer, no *_round_<r>.pt file")
            return rounds[-1]
    if path.suffix == ".json":
        try:
            return path.parent / json.loads(path.read_text())["file"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"Cannot read checkpoint pointer {path}: {type(err).__name__}: {err}") from None
    return path


def _checkpoint_folder(directory: Path) -> Path:
    """``directory`` if it holds checkpoints, else the checkpoint directory of the run folder it is."""
    if any(directory.glob("*_latest.json")) or any(directory.glob("*_round_*.pt")):
        return directory
    try:
        name = json.loads((directory / "config.json").read_text())["feda2v"]["generator_checkpoint_dir"]
    except (OSError, ValueError, KeyError, TypeError):
        name = "checkpoints"
    folder = Path(str(name))
    return folder if folder.is_absolute() else directory / folder


def _round_number(path: Path) -> int | None:
    suffix = path.stem.rsplit("_", 1)[-1]
    return int(suffix) if suffix.isdigit() else None


def saved_adapters(payload: dict[str, Any], expected: dict[str, Any], path: Path) -> dict[str, Any]:
    """The checkpoint's global adapters as numpy arrays in ``expected``'s key order; a checkpoint
    of other adapters (size, profile, encoder) is a ``CheckpointError`` naming the file."""
    saved = {k: v.numpy() for k, v in payload["global_adapters"].items()}
    if {k: v.shape for k, v in saved.items()} != {k: tuple(v.shape) for k, v in expected.items()}:
        raise CheckpointError(
            f"{path} holds adapters of another size or profile than this run's (check target_profile, the audio "
            "encoder and the adapter_* keys)"
        )
    return {k: saved[k].copy() for k in expected}


def new_payload(**fields: Any) -> dict[str, Any]:
    return {"format_version": FORMAT_VERSION, "timestamp": time.time(), **fields}


def atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
