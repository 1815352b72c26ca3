"""ServerApp: reads the experiment config and builds the server from it (thin glue).

The server's science and state are the recipe's (``feda2v_flwr.server.recipe``), what the run
reports is the run log's (``feda2v_flwr.server.run_log``), the Flower hooks are the strategy's
(``strategies/feda2v.py``).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from flwr.app import Context
from flwr.server import ServerApp, ServerAppComponents, ServerConfig

from feda2v_flwr.checkpointing.resume import run_folder_of
from feda2v_flwr.checkpointing.run import find_checkpoint
from feda2v_flwr.config import ExperimentConfig, load_config, resolve_run_path
from feda2v_flwr.logging_setup import setup_logging
from feda2v_flwr.reporting import MetricsLog, WandbLogger
from feda2v_flwr.server.recipe import ServerRecipe
from feda2v_flwr.server.run_log import RunLog
from strategies.feda2v import FedA2VStrategy

log = logging.getLogger("feda2v_flwr.server")


def build_strategy(
    config: ExperimentConfig, run_dir: Path, *, resume: str | Path | None = None, stop_after_round: int | None = None
) -> FedA2VStrategy:
    """The strategy with its recipe and run log (no Flower context needed); ``resume`` and
    ``stop_after_round`` as in :meth:`ServerRecipe.setup`."""
    recipe = ServerRecipe.setup(config, run_dir, resume=resume, stop_after_round=stop_after_round)
    dump = config.model_dump(mode="json")
    wandb = WandbLogger(config.wandb, run_dir=run_dir, run_name=run_dir.name, config=dump, run_id=recipe.wandb_run_id)
    run_log = RunLog(
        run_dir,
        MetricsLog(run_dir / "metrics.jsonl", wandb=wandb),
        num_rounds=config.federation.global_rounds,
        num_classes=len(recipe.classes),
        wandb=wandb,
        resumed=recipe.start_round > 0,
    )
    return FedA2VStrategy(recipe=recipe, run_log=run_log)


def run_directory(run_config: dict, config_file: str) -> Path:
    """``<output-dir>/<run-name>``; relative output dirs resolve against the working directory."""
    output_dir = Path(str(run_config.get("output-dir") or "outputs")).expanduser()
    name = str(run_config.get("run-name") or "") or f"{Path(config_file).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    return (output_dir if output_dir.is_absolute() else Path.cwd() / output_dir).resolve() / name


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
    rounds = strategy.recipe.last_round - strategy.recipe.start_round
    server_config = ServerConfig(num_rounds=rounds, round_timeout=config.federation.round_timeout)
    return ServerAppComponents(strategy=strategy, config=server_config)


app = ServerApp(server_fn=server_fn)
