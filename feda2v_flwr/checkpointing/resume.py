"""Resuming a run from a server checkpoint: which file, whether the config still fits it, and
the run folder's metrics trimmed back to the checkpoint's round.

The run checkpoint (``run.py``) holds the server's state; the nodes keep their own
(``nodes.py``) in ``<run>/client_state/`` on the same rounds. Together they continue a run at
round r+1 exactly as if it had never stopped.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from feda2v_flwr.checkpointing.files import CheckpointError
from feda2v_flwr.config.loading import validate_config
from feda2v_flwr.config.paths import ConfigError
from feda2v_flwr.config.schema import ExperimentConfig

log = logging.getLogger(__name__)

# Keys a resumed run may change: how long it runs, how it reports and where it reads caches.
# Anything else (architecture, data, seeds, training settings) must equal the checkpoint's.
CHANGEABLE = (
    "federation.global_rounds",
    "federation.eval_gap",
    "federation.round_timeout",
    "federation.node_wait_timeout",
    "federation.allow_missing_nodes",
    "federation.accept_failures",
    "federation.min_fit_clients",
    "training.device",
    "data.cache_dir",
    "feda2v.generator_checkpoint_frequency",
    "feda2v.checkpoint_keep_last",
    "images.",
    "wandb.",
)


def check_resumable(config: ExperimentConfig, payload: dict[str, Any], path: Path) -> None:
    """Refuse a config that differs from the checkpoint's in anything but ``CHANGEABLE`` keys, or
    that has no rounds left to run."""
    try:  # defaults for keys added since the checkpoint was written
        saved_config = validate_config(json.loads(payload["config"])).model_dump(mode="json")
    except (ConfigError, ValueError) as err:
        raise CheckpointError(f"{path} holds a config this version cannot read: {err}") from None
    saved = _flatten(saved_config)
    current = _flatten(config.model_dump(mode="json"))
    differing = sorted(
        key
        for key in saved.keys() | current.keys()
        if saved.get(key) != current.get(key) and not key.startswith(CHANGEABLE)
    )
    if differing:
        shown = ", ".join(f"{k} ({saved.get(k)!r} -> {current.get(k)!r})" for k in differing[:8])
        more = f" and {len(differing) - 8} more" if len(differing) > 8 else ""
        raise ConfigError(
            f"Cannot resume from {path}: this config differs from the checkpoint's in {shown}{more}. Resume with "
            "the run's own config (outputs/<run>/config.json); only the number of rounds, evaluation, logging, "
            "pictures and caches may change."
        )
    if payload["round"] >= config.federation.global_rounds and not final_evaluation_pending(config, payload, path):
        raise ConfigError(
            f"{path} is from round {payload['round']}, and federation.global_rounds is "
            f"{config.federation.global_rounds}: nothing left to run. Raise federation.global_rounds to go on."
        )


def final_evaluation_pending(config: ExperimentConfig, payload: dict[str, Any], path: Path) -> bool:
    """The checkpoint is the run's last round, that round's evaluation is due, and the run's
    ``metrics.jsonl`` holds none: the run was stopped (a SIGTERM) after its final checkpoint and
    before its final evaluation, so resuming runs that evaluation alone."""
    last = int(payload["round"])
    if last != config.federation.global_rounds or not config.evaluation_due(last):
        return False
    run = run_folder_of(Path(path).resolve())
    if run is None:
        return False
    return not any(_phase_and_round(line) == ("evaluate", last) for line in _lines(run / "metrics.jsonl"))


def trim_metrics(path: Path, last_round: int) -> int:
    """Drop the lines of rounds after ``last_round`` (rounds the stopped run did not checkpoint)
    and a line cut short by the kill; returns how many were dropped."""
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines()
    kept = [line for line in lines if (r := _round_of(line)) is not None and r <= last_round]
    if len(kept) != len(lines):
        path.write_text("".join(line + "\n" for line in kept))
    return len(lines) - len(kept)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.is_file() else []


def _phase_and_round(line: str) -> tuple[str | None, int] | None:
    """A metrics line's (phase, round); None for a line cut short by a kill."""
    try:
        record = json.loads(line)
        return record.get("phase"), int(record["round"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _round_of(line: str) -> int | None:
    parsed = _phase_and_round(line)
    return None if parsed is None else parsed[1]


def run_folder_of(checkpoint: Path) -> Path | None:
    """The run folder a checkpoint file belongs to (``<run>/<checkpoint dir>/<file>``)."""
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        if (folder / "config.json").is_file() and (folder / "metrics.jsonl").exists():
            return folder
    return None


def carry_client_state(checkpoint: Path, run_dir: Path) -> int:
    """Resuming into another folder than the checkpoint's run: copy that run's node states
    (simulation: the nodes read ``<run_dir>/client_state``); returns how many files."""
    source = run_folder_of(checkpoint.resolve())
    if source is None or source == run_dir.resolve() or not (source / "client_state").is_dir():
        return 0
    files = list((source / "client_state").glob("node_*_round_*.pt"))
    target = run_dir / "client_state"
    target.mkdir(parents=True, exist_ok=True)
    for file in files:
        shutil.copy2(file, target / file.name)
    return len(files)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, inner in value.items():
            flat.update(_flatten(inner, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}
