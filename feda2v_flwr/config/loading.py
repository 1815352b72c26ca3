"""Load an experiment JSON, apply run-config overrides, validate with readable errors."""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from feda2v_flwr.config.schema import ExperimentConfig

PROJECT_ROOT = Path(__file__).resolve().parents[2]

_MIGRATION_TARGET_SEQUENCE_LENGTH = """\
'generator_target_sequence_length' was removed: it mixed two different things.
Replace it with the two keys that split them (seed 000, 'Migration Guide'):
    "generator_training_sequence_length": 4,      # sizes the generator (memory)
    "generator_output_sequence_length": null      # length of generated samples (null = same)
or, for full-length generation from a compact generator:
    "generator_training_sequence_length": 4,
    "generator_output_sequence_length": 1214"""


class ConfigError(ValueError):
    """A configuration problem a user can fix; the message says what to change."""


def load_config(path: str | Path, overrides: str | Mapping[str, Any] | None = None) -> ExperimentConfig:
    """Read ``path`` (relative paths resolve against the project), apply overrides, validate."""
    file = resolve_project_path(path)
    if not file.is_file():
        raise ConfigError(f"Config file not found: {file}")
    try:
        raw = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{file} is not valid JSON: {err}") from err
    if isinstance(overrides, str):
        overrides = parse_overrides(overrides)
    return validate_config(apply_overrides(raw, overrides or {}), source=str(file))


def validate_config(raw: Mapping[str, Any], source: str = "config") -> ExperimentConfig:
    _reject_removed_keys(raw, source)
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_explain(err, source)) from None


def parse_overrides(text: str) -> dict[str, Any]:
    """``"federation.global_rounds=3; feda2v.use_generator=false"`` -> ``{dotted key: value}``.

    Values are JSON when they parse as JSON (numbers, booleans, null, lists), else strings.
    """
    result: dict[str, Any] = {}
    for item in (part.strip() for part in text.split(";")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"Override '{item}' is not of the form section.key=value")
        try:
            result[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            result[key.strip()] = value.strip()
    return result


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(raw))
    for dotted, value in overrides.items():
        node = merged
        *parents, leaf = dotted.split(".")
        for name in parents:
            child = node.setdefault(name, {})
            if not isinstance(child, dict):
                raise ConfigError(f"Override '{dotted}': '{name}' is a value, not a section")
            node = child
        node[leaf] = value
    return merged


def resolve_project_path(path: str | Path) -> Path:
    """Absolute paths stay; relative ones resolve against the project (app) directory."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else (PROJECT_ROOT / path).resolve()


def resolve_run_path(path: str | Path) -> Path:
    """Paths of run inputs and outputs (checkpoints, pretrained generators): absolute paths stay,
    relative ones resolve against the working directory the run was launched from."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else (Path.cwd() / path).resolve()


def config_hash(config: ExperimentConfig) -> str:
    return hashlib.sha256(config_json(config).encode()).hexdigest()[:16]


def config_json(config: ExperimentConfig) -> str:
    return json.dumps(config.model_dump(mode="json"), sort_keys=True)


def _reject_removed_keys(raw: Any, source: str, where: str = "") -> None:
    if not isinstance(raw, Mapping):
        return
    for key, value in raw.items():
        if key == "generator_target_sequence_length":
            raise ConfigError(f"{source}: {where}{key}\n{_MIGRATION_TARGET_SEQUENCE_LENGTH}")
        _reject_removed_keys(value, source, f"{where}{key}.")


def _explain(err: ValidationError, source: str) -> str:
    lines = [f"Invalid configuration in {source}:"]
    for item in err.errors():
        loc = [str(part) for part in item["loc"]]
        path = ".".join(loc)
        if item["type"] == "extra_forbidden":
            valid = _field_names_at(ExperimentConfig, loc[:-1])
            close = difflib.get_close_matches(loc[-1], valid, n=1, cutoff=0.5)
            hint = f" Did you mean '{'.'.join([*loc[:-1], close[0]])}'?" if close else ""
            lines.append(f"  - unknown key '{path}'.{hint}")
        else:
            allowed = item.get("ctx", {}).get("expected")
            extra = f" (allowed: {allowed})" if allowed and str(allowed) not in item["msg"] else ""
            lines.append(f"  - {path}: {item['msg']}{extra}; got {item.get('input')!r}")
    return "\n".join(lines)


def _field_names_at(model: type[BaseModel], loc: list[str]) -> list[str]:
    """Names of the fields of the (sub)model reached by ``loc`` (dict keys are skipped)."""
    current: Any = model
    skip_dict_key = False
    for part in loc:
        if skip_dict_key:
            skip_dict_key = False
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(part)
        if field is None:
            return []
        current = field.annotation
        args = getattr(current, "__args__", ())
        if args and getattr(current, "__origin__", None) is dict:
            current, skip_dict_key = args[1], True
            continue
        for arg in args:
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                current = arg
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []
