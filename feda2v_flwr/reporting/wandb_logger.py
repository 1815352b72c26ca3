"""W&B from the ServerApp only (clients never call ``wandb.init``); offline unless asked."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from feda2v_flwr.config.schema import WandbSettings

log = logging.getLogger(__name__)


def wandb_mode(settings: WandbSettings) -> str:
    """``wandb.mode`` when the config sets it; else ``WANDB_MODE`` from the environment; else
    online when ``WANDB_API_KEY`` is set; else offline."""
    if "mode" in settings.model_fields_set:
        return settings.mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_API_KEY") else settings.mode


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
        mode = wandb_mode(settings)
        if not settings.enabled or mode == "disabled":
            return
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        options = dict(
            project=settings.project,
            entity=settings.entity,
            dir=str(run_dir),
            name=run_name,
            id=run_id,
            resume="allow" if run_id else None,
            config=config,
        )
        try:
            self.run = wandb.init(mode=mode, **options)
        except Exception as err:  # noqa: BLE001 (no network, bad key: keep the run, log offline)
            if mode != "online":
                raise
            log.warning("W&B online failed (%s); logging offline instead (`wandb sync` later)", err)
            mode = "offline"
            self.run = wandb.init(mode=mode, **options)
        self.run.define_metric("round")
        self.run.define_metric("*", step_metric="round")
        log.info("W&B run %s (%s) in %s", self.run.id, mode, run_dir)

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
