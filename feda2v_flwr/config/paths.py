"""What every module that reads paths or configs needs and nothing else: the user-facing config
error and where relative paths resolve. No imports from the rest of the package, so the data
modules can use it while ``loading`` measures ``data.clip_seconds: "auto"`` from the data."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class ConfigError(ValueError):
    """A configuration problem a user can fix; the message says what to change."""


def resolve_project_path(path: str | Path) -> Path:
    """Absolute paths stay; relative ones resolve against the project (app) directory."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else (PROJECT_ROOT / path).resolve()


def resolve_run_path(path: str | Path) -> Path:
    """Paths of run inputs and outputs (checkpoints, pretrained generators): absolute paths stay,
    relative ones resolve against the working directory the run was launched from."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else (Path.cwd() / path).resolve()
