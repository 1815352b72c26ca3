"""``metrics.jsonl``: one JSON line per round and phase."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from feda2v_flwr.reporting.wandb_logger import WandbLogger


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def scalar_items(prefix: str, value: Any) -> dict[str, float]:
    """The numbers in ``value`` under '/'-joined key paths (``evaluate/test_mse``,
    ``fit/client_loss_mean/train_loss_clip``); lists, strings and missing values are left out."""
    if isinstance(value, dict):
        items: dict[str, float] = {}
        for key, inner in value.items():
            items.update(scalar_items(f"{prefix}/{key}", inner))
        return items
    if isinstance(value, bool):
        return {prefix: float(value)}
    if isinstance(value, int | float) and math.isfinite(value):
        return {prefix: float(value)}
    return {}


class MetricsLog:
    """Appends one JSON line per (round, phase) to ``path``; with a W&B logger, logs the same
    numbers there under the same names (``<phase>/<key>``)."""

    def __init__(self, path: Path, wandb: WandbLogger | None = None):
        self.path = path
        self.wandb = wandb
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, server_round: int, phase: str, **values: Any) -> None:
        line = json.dumps(_clean({"round": server_round, "phase": phase, **values}), sort_keys=True)
        with open(self.path, "a") as f:
            f.write(line + "\n")
        if self.wandb is not None:
            self.wandb.log(server_round, scalar_items(phase, values))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def read_summary(run_dir: Path) -> dict[str, Any]:
    """A run's ``summary.json`` ({} when the run wrote none)."""
    path = Path(run_dir) / "summary.json"
    return dict(json.loads(path.read_text())) if path.exists() else {}


def round_summary_line(
    server_round: int,
    num_rounds: int,
    *,
    ok: int,
    failed: int,
    client_loss: float | None,
    generator_loss: float | None,
    finetune_loss: float | None,
    seconds: float,
    upload_bytes: float,
) -> str:
    """One line per round for the server log, e.g. ``Round 3/5 | 5 ok, 0 failed | client loss
    0.812 | generator 0.640 | fine-tune 0.331 | 8.3 s | up 9.6 MB/node``."""
    parts = [f"Round {server_round}/{num_rounds}", f"{ok} ok, {failed} failed"]
    for label, value in (("client loss", client_loss), ("generator", generator_loss), ("fine-tune", finetune_loss)):
        if value is not None:
            parts.append(f"{label} {value:.3f}")
    parts += [f"{seconds:.1f} s", f"up {upload_bytes / 1e6:.1f} MB/node"]
    return " | ".join(parts)


MISSING_PARTITIONS = "Missing partitions"  # the server log's last word on nodes that never contributed


def missing_partitions_line(missing: list[int]) -> str:
    """The warning a run's last round logs when partitions never contributed. ``feda2v-deploy
    run`` finds it in the streamed server log (``summary.json`` stays on the server machine)."""
    return (
        f"{MISSING_PARTITIONS} {missing}: they never contributed a valid update this run (see 'failures' and "
        "'dropped' in metrics.jsonl), so the global model did not learn from their data"
    )


def reported_missing_partitions(log_lines: list[str]) -> list[int]:
    """The partitions named by the last :func:`missing_partitions_line` in a server log ([] if none)."""
    found: list[int] = []
    for line in log_lines:
        match = re.search(rf"{MISSING_PARTITIONS} \[([\d, ]*)\]", line)
        if match:
            found = [int(p) for p in match.group(1).split(",") if p.strip()]
    return found
