"""What a node saves: its state between rounds (``<run>/client_state/node_{id}_round_{r}.pt``:
the byte blobs it keeps in Flower's context) and its generators
(``<run>/client_generators/{base}_node{id}_{key}_round_{r}.pt``, reusable as
``pretrained_generator_path``)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from feda2v_flwr.checkpointing.files import (
    CheckpointError,
    atomic_torch_save,
    prune_rounds,
    read_payload,
    round_file,
    saved_rounds,
)

log = logging.getLogger(__name__)

CLIENT_GENERATOR_FORMAT_VERSION = 1


# ---- a node's state --------------------------------------------------------------------------------
def client_state_path(directory: Path, partition_id: int, server_round: int) -> Path:
    return round_file(directory, f"node_{partition_id}", server_round)


def save_client_state(
    directory: Path, partition_id: int, server_round: int, record: dict[str, bytes], *, keep_last: int
) -> Path:
    """A node's state after its fit of ``server_round`` (the byte blobs it keeps in Flower's
    context), written atomically; older rounds beyond ``keep_last`` are removed."""
    directory.mkdir(parents=True, exist_ok=True)
    path = client_state_path(directory, partition_id, server_round)
    blobs = {name: torch.frombuffer(bytearray(blob), dtype=torch.uint8) for name, blob in record.items()}
    atomic_torch_save({"round": server_round, "partition_id": partition_id, "state": blobs}, path)
    prune_rounds(directory, f"node_{partition_id}", keep_last)
    return path


def load_client_state(directory: Path, partition_id: int, *, before_round: int) -> dict[str, bytes] | None:
    """The node's latest saved state from a round before ``before_round`` (None: nothing saved)."""
    rounds = [r for r in saved_rounds(directory, f"node_{partition_id}") if r < before_round]
    if not rounds:
        return None
    path = client_state_path(directory, partition_id, rounds[-1])
    blobs = read_client_state(path)["state"]
    log.info("node %d: state restored from %s", partition_id, path)
    return {name: bytes(tensor.numpy().tobytes()) for name, tensor in blobs.items()}


def read_client_state(path: Path) -> dict[str, Any]:
    """A node state file as data: ``round``, ``partition_id``, ``state`` ({name: uint8 tensor});
    a truncated file is an error naming it (a node never starts silently fresh)."""
    return checked_client_state(read_payload(path, "Node state"), path)


def checked_client_state(payload: Any, path: Path) -> dict[str, Any]:
    """``payload`` if it is a node state (a ``state`` record of byte tensors)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("state"), dict):
        raise CheckpointError(f"Node state {path} is corrupt or truncated (it holds no 'state' record)")
    return payload


# ---- a node's generators ---------------------------------------------------------------------------
def save_client_generator(
    directory: Path, stem: str, server_round: int, fields: dict[str, Any], *, keep_last: int
) -> Path:
    """One of a node's generators after ``server_round``: ``fields`` (node, key, granularity,
    classes, learner state) with the kind, format version, round and time; older rounds of the
    same generator beyond ``keep_last`` are removed."""
    directory.mkdir(parents=True, exist_ok=True)
    payload = {
        "format_version": CLIENT_GENERATOR_FORMAT_VERSION,
        "kind": "client_generator",
        "round": server_round,
        "timestamp": time.time(),
        **fields,
    }
    path = round_file(directory, stem, server_round)
    atomic_torch_save(payload, path)
    prune_rounds(directory, stem, keep_last)
    return path


def load_client_generator(path: Path) -> dict[str, Any]:
    """A client generator checkpoint as data (never code); errors name the file."""
    return checked_client_generator(read_payload(path, "Generator checkpoint"), path)


def checked_client_generator(payload: Any, path: Path) -> dict[str, Any]:
    """``payload`` if it is a client generator checkpoint of this format version."""
    if not isinstance(payload, dict) or payload.get("kind") != "client_generator":
        raise CheckpointError(f"{path} is not a client generator checkpoint (kind 'client_generator')")
    if payload.get("format_version") != CLIENT_GENERATOR_FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format version {payload.get('format_version')}, expected {CLIENT_GENERATOR_FORMAT_VERSION}"
        )
    return payload
