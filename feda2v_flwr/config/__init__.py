"""Experiment configuration: one pydantic schema, JSON files, run-config overrides."""

from feda2v_flwr.config.loading import (
    config_hash,
    config_json,
    load_config,
    parse_overrides,
    validate_config,
)
from feda2v_flwr.config.paths import ConfigError, resolve_project_path, resolve_run_path
from feda2v_flwr.config.schema import ExperimentConfig

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "config_hash",
    "config_json",
    "load_config",
    "parse_overrides",
    "resolve_project_path",
    "resolve_run_path",
    "validate_config",
]
