"""W&B from the ServerApp only (clients never call ``wandb.init``); offline by default."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from feda2v_flwr.config.schema import WandbSettings

log = logging.getLogger(__name__)


class WandbLogger:
    def __init__(
        self,
        settings: WandbSettings,
        *,
        run_dir: Path,
        run_name: str,
        config: dict[str, Any],
        run_id: str | None = None,
    ):
        self.run = None
        if not settings.enabled or settings.mode == "disabled":
            return
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        self.run = wandb.init(
            project=settings.project,
            entity=settings.entity,
            mode=settings.mode,
            dir=str(run_dir),
            name=run_name,
            id=run_id,
            resume="allow" if run_id else None,
            config=config,
        )
        self.run.define_metric("round")
        self.run.define_metric("*", step_metric="round")
        log.info("W&B run %s (%s) in %s", self.run.id, settings.mode, run_dir)

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run is not None else None

    def log(self, server_round: int, metrics: dict[str, float]) -> None:
        if self.run is not None:
            self.run.log({"round": server_round, **metrics})

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
