"""Run outputs: metrics.jsonl and W&B."""

from feda2v_flwr.reporting.metrics import MetricsLog, read_metrics
from feda2v_flwr.reporting.wandb_logger import WandbLogger

__all__ = ["MetricsLog", "WandbLogger", "read_metrics"]
