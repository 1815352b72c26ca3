"""Load an experiment JSON, apply run-config overrides, validate with readable errors."""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from feda2v_flwr.config.paths import ConfigError, resolve_project_path
from feda2v_flwr.config.schema import ExperimentConfig

_MIGRATION_TARGET_SEQUENCE_LENGTH = """\
'generator_target_sequence_length' was removed: it mixed two different things.
Replace it with the two keys that split them (seed 000, 'Migration Guide'):
    "generator_training_sequence_length": 4,      # sizes the generator (memory)
    "generator_output_sequence_length": null      # length of generated samples (null = same)
or, for full-length generation from a compact generator:
    "generator_training_sequence_length": 4,
    "generator_output_sequence_length": 1214"""


def load_config(
    path: str | Path, overrides: str | Mapping[str, Any] | None = None, *, measure: bool = True
) -> ExperimentConfig:
    """Read ``path`` (relative paths resolve against the project), apply overrides, validate.

    ``data.clip_seconds: "auto"`` is measured from the dataset's files here, so a loaded config
    holds a number (``measure=False``: left as ``"auto"``)."""
    file = resolve_project_path(path)
    if not file.is_file():
        raise ConfigError(f"Config file not found: {file}")
    try:
        raw = json.loads(file.read_text())
    except (ValueError, RecursionError) as err:  # not UTF-8, not JSON, nested too deep, a 5000-digit number
        raise ConfigError(f"{file} is not valid JSON: {err}") from err
    _require_sections(raw, str(file))
    if isinstance(overrides, str):
        overrides = parse_overrides(overrides)
    config = validate_config(apply_overrides(raw, overrides or {}), source=str(file))
    if measure and config.data.clip_seconds == "auto":
        from feda2v_flwr.data.durations import with_measured_clip_seconds  # noqa: PLC0415 (reads the dataset: heavy)

        config = with_measured_clip_seconds(config)
    return config


def validate_config(raw: Mapping[str, Any], source: str = "config") -> ExperimentConfig:
    _require_sections(raw, source)
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
        except (ValueError, RecursionError):  # not JSON (or too deep / too long a number for Python)
            result[key.strip()] = value.strip()
    return result


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    _require_sections(raw, "the config")
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


def config_hash(config: ExperimentConfig) -> str:
    return hashlib.sha256(config_json(config).encode()).hexdigest()[:16]


def config_json(config: ExperimentConfig) -> str:
    return json.dumps(config.model_dump(mode="json"), sort_keys=True)


def _require_sections(raw: Any, source: str) -> None:
    if not isinstance(raw, Mapping):
        sections = ", ".join(ExperimentConfig.model_fields)
        raise ConfigError(
            f"{source} must hold a JSON object with the sections {sections}; it holds a {type(raw).__name__}"
        )
    # Checked level by level, without recursion: copying or validating a deeper nesting would
    # exhaust Python's stack (RecursionError) before any useful message.
    level: list[Any] = [raw]
    for _ in range(_MAX_NESTING):
        level = [child for v in level if isinstance(v, Mapping | list) for child in _children(v)]
        if not level:
            return
    raise ConfigError(
        f"{source} nests objects and lists more than {_MAX_NESTING} levels deep; "
        "the deepest keys of a config are 4 levels down (nodes.<id>.selected_classes[i])"
    )


_MAX_NESTING = 32


def _children(value: Mapping | list) -> Iterable[Any]:
    return value.values() if isinstance(value, Mapping) else value


def _reject_removed_keys(raw: Any, source: str, where: str = "") -> None:
    if not isinstance(raw, Mapping):
        return
    for key, value in raw.items():
        if key == "generator_target_sequence_length":
            raise ConfigError(f"{source}: {where}{key}\n{_MIGRATION_TARGET_SEQUENCE_LENGTH}")
        _reject_removed_keys(value, source, f"{where}{key}.")


def _explain(err: ValidationError, source: str) -> str:
    lines = [f"Invalid configuration in {source}:"]
    unions: dict[tuple, tuple[Any, list[str]]] = {}  # list item -> (its value, the types it may have)
    for item in err.errors():
        loc = tuple(item["loc"])
        if len(loc) >= 2 and isinstance(loc[-2], int) and isinstance(loc[-1], str):
            # Our lists hold no sections, so a name after an index is pydantic's tag of a union
            # member (``selected_classes: list[str | int]`` -> loc (..., 0, 'str')): one line for all.
            unions.setdefault(loc[:-1], (item.get("input"), []))[1].append(_TYPE_NAMES.get(loc[-1], loc[-1]))
        else:
            lines.append(_explain_item(item, loc))
    for loc, (value, types) in unions.items():
        lines.append(f"  - {_key_path(loc)}: must be {' or '.join(types)}; got {_shortened(repr(value))}")
    return "\n".join(lines)


def _explain_item(item: Any, loc: tuple) -> str:
    path, got = _key_path(loc), _shortened(repr(item.get("input")))
    if item["type"] == "extra_forbidden":
        names = [str(part) for part in loc]
        close = difflib.get_close_matches(names[-1], _field_names_at(ExperimentConfig, names[:-1]), n=1, cutoff=0.5)
        hint = f" Did you mean '{_key_path((*loc[:-1], close[0]))}'?" if close else ""
        return f"  - unknown key '{path}'.{hint}"
    if item["type"] == "value_error":  # a rule across keys (a model validator); its message names them
        rule = item["msg"].removeprefix("Value error, ")
        return f"  - {path}: {rule}" if path else f"  - {rule}"
    if item["type"] == "model_type":  # pydantic would name the section's class; the user wrote JSON
        return f"  - {path}: must be a section (a JSON object of keys); got {got}"
    allowed = item.get("ctx", {}).get("expected")
    extra = f" (allowed: {allowed})" if allowed and str(allowed) not in item["msg"] else ""
    return f"  - {path}: {item['msg']}{extra}; got {got}"


_TYPE_NAMES = {"str": "a string", "int": "an integer", "float": "a number", "bool": "a boolean"}


def _key_path(loc: tuple) -> str:
    """``('nodes', '1', 'selected_classes', 0)`` -> ``nodes.1.selected_classes[0]``."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).removeprefix(".")


def _shortened(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


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


def pinned_overrides(config_file: str, overrides: str, config: ExperimentConfig) -> str:
    """``overrides`` plus ``data.clip_seconds=<measured>`` when the config says ``"auto"``: the
    launchers measure once and every process of the run (server, nodes) uses that number."""
    if load_config(config_file, overrides, measure=False).data.clip_seconds != "auto":
        return overrides
    return "; ".join(part for part in (overrides, f"data.clip_seconds={config.data.clip_seconds}") if part)
