"""What every checkpoint kind shares: atomic writes, loading as data with one error for a file
that cannot be read, ``{stem}_round_{r}.pt`` names, the retention rule and the "due" rule."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from feda2v_flwr.config.schema import FedA2VSettings


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file."""


def round_file(directory: Path, stem: str, server_round: int) -> Path:
    return directory / f"{stem}_round_{server_round}.pt"


def saved_rounds(directory: Path, stem: str) -> list[int]:
    """The rounds of ``{stem}_round_{r}.pt`` files in ``directory``, ascending."""
    if not directory.is_dir():
        return []
    return sorted(int(p.stem.rsplit("_", 1)[1]) for p in directory.glob(f"{stem}_round_*.pt"))


def prune_rounds(directory: Path, stem: str, keep_last: int) -> None:
    """The retention rule of every kind (``feda2v.checkpoint_keep_last``): the ``keep_last``
    latest rounds of ``stem`` stay, older ones are removed."""
    for old in saved_rounds(directory, stem)[:-keep_last]:
        round_file(directory, stem, old).unlink(missing_ok=True)


def checkpoint_due(settings: FedA2VSettings, server_round: int, *last_rounds: int) -> bool:
    """Every ``generator_checkpoint_frequency`` rounds and at each of ``last_rounds`` (the run's
    and the session's last), when ``generator_save_checkpoint``. The server and the nodes save on
    the same rounds, so any run checkpoint can be resumed with the nodes' state of its round."""
    periodic = server_round % settings.generator_checkpoint_frequency == 0
    return settings.generator_save_checkpoint and (periodic or server_round in last_rounds)


def read_payload(path: Path, what: str = "Checkpoint") -> Any:
    """``path`` loaded as data (``weights_only``); a missing, truncated or corrupt file is a
    ``CheckpointError`` saying which ``what`` it is."""
    if not path.is_file():
        raise CheckpointError(f"{what} file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for truncated/corrupt files
        raise CheckpointError(f"{what} {path} is corrupt or truncated ({type(err).__name__}: {err})") from None


def atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
