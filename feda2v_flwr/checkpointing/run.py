"""The run checkpoint: the server's whole state after a round in one dict (the schema below),
its ``*_latest.json`` pointer and ``*_best.pt`` copy, and finding one from a file, pointer,
checkpoint folder or run folder."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from feda2v_flwr.checkpointing.files import (
    CheckpointError,
    atomic_torch_save,
    atomic_write_text,
    prune_rounds,
    read_payload,
    round_file,
)

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


def save_checkpoint(
    directory: Path, base_name: str, payload: dict[str, Any], *, keep_last: int, best_metric: float | None = None
) -> Path:
    """Write ``{base}_round_{r}.pt`` atomically, update ``{base}_latest.json``, prune old rounds.

    ``best_metric`` (higher is better) also copies the file to ``{base}_best.pt`` when it wins.
    """
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    assert not missing, f"checkpoint payload lacks {missing}"
    directory.mkdir(parents=True, exist_ok=True)
    path = round_file(directory, base_name, payload["round"])
    atomic_torch_save(payload, path)
    pointer = directory / f"{base_name}_latest.json"
    previous = json.loads(pointer.read_text()) if pointer.exists() else {}
    best = previous.get("best")
    if best_metric is not None and (best is None or best_metric > best["metric"]):
        atomic_torch_save(payload, directory / f"{base_name}_best.pt")
        best = {"round": payload["round"], "metric": best_metric, "file": f"{base_name}_best.pt"}
    info = {"round": payload["round"], "file": path.name, "timestamp": payload["timestamp"], "best": best}
    atomic_write_text(pointer, json.dumps(info, indent=1))
    prune_rounds(directory, base_name, keep_last)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint as data (never code). Errors name the file and what is wrong."""
    path = Path(path)
    if path.suffix == ".json":  # a "latest" pointer
        try:
            path = path.parent / json.loads(path.read_text())["file"]
        except (OSError, KeyError, TypeError, json.JSONDecodeError) as err:
            raise CheckpointError(f"Cannot read checkpoint pointer {path}: {err}") from None
    return checked_run_payload(read_payload(path, "Checkpoint"), path)


def checked_run_payload(payload: Any, path: Path) -> dict[str, Any]:
    """``payload`` if it is a run checkpoint of this format version with every required key."""
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
