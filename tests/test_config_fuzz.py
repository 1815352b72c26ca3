"""Fuzzing the config validator: whatever JSON a user writes, the answer is a config or a ConfigError.

The shipped configs and random dicts are mutated at random key paths (every path of the schema,
``nodes.<id>.*`` included, plus unknown ones): keys dropped, unknown keys added, values replaced
by JSON values of any type (NaN and infinities too, and nestings deep enough to exhaust Python's
stack). Override strings (``"section.key=value; ..."``) and whole config files (any bytes) are
fuzzed the same way. Accepted configs must survive the round trip a run makes (written as JSON,
validated again); error messages must carry no pydantic internals. ``derandomize=True`` makes
every run draw the same examples (``--hypothesis-show-statistics`` shows accepted / rejected).
"""

from __future__ import annotations

import json
import math
import tempfile
import types
import typing
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from feda2v_flwr.config import ConfigError, ExperimentConfig, load_config, parse_overrides, validate_config
from feda2v_flwr.config.loading import apply_overrides
from feda2v_flwr.config.paths import PROJECT_ROOT

SHIPPED = {path.name: json.loads(path.read_text()) for path in sorted((PROJECT_ROOT / "configs").glob("*.json"))}
NODE_IDS = ("0", "1", "3", "10", "x", "")
FUZZ = settings(max_examples=500, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return next((m for m in map(_model_in, typing.get_args(annotation)) if m is not None), None)
    return None


def _schema_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every key path of the schema; ``nodes`` (a dict of sections) under a few node ids."""
    paths = []
    for name, field in model.model_fields.items():
        path = (*prefix, name)
        paths.append(path)
        if typing.get_origin(field.annotation) is dict and (sub := _model_in(typing.get_args(field.annotation)[1])):
            for node in NODE_IDS:
                paths += [(*path, node), *_schema_paths(sub, (*path, node))]
        elif sub := _model_in(field.annotation):
            paths += _schema_paths(sub, path)
    return paths


SCHEMA_PATHS = _schema_paths(ExperimentConfig)

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["avg", "vae", "gan", "esc50", "procedural", "minilm", "flux", "folds", "1e-3", "true", ""])
)


def _nested(depth: int) -> Any:
    value: Any = 1
    for i in range(depth):
        value = {"a": value} if i % 2 else [value]
    return value


json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
key_paths = st.sampled_from(SCHEMA_PATHS) | st.lists(
    st.sampled_from([*{p[-1] for p in SCHEMA_PATHS}, *NODE_IDS]) | st.text(max_size=8), min_size=1, max_size=4
).map(tuple)


@st.composite
def mutations(draw: st.DrawFn) -> tuple[str, tuple[str, ...], Any]:
    op = draw(st.sampled_from(["drop", "set", "set", "unknown", "removed", "deep"]))
    path = draw(key_paths)
    if op == "unknown":  # a misspelt or invented key next to real ones
        path = (*path[:-1], path[-1] + draw(st.sampled_from(["s", "_", "x", "_old"])))
    if op == "removed":
        path = (*path[:-1], "generator_target_sequence_length")
    return op, path, draw(json_values)


def _mutate(raw: Any, op: str, path: tuple[str, ...], value: Any) -> Any:
    if not isinstance(raw, dict):
        return raw
    node = raw
    for name in path[:-1]:
        child = node.get(name)
        if not isinstance(child, dict):
            if op == "drop":
                return raw
            child = node[name] = {}
        node = child
    if op == "drop":
        node.pop(path[-1], None)
    elif op == "deep":  # built here: hypothesis could not print so deep a drawn value
        node[path[-1]] = _nested(600)
    else:
        node[path[-1]] = value
    return raw


base_configs = (
    st.sampled_from(sorted(SHIPPED)).map(lambda name: json.loads(json.dumps(SHIPPED[name])))
    | st.dictionaries(
        st.sampled_from(list(ExperimentConfig.model_fields)) | st.text(max_size=8), json_values, max_size=5
    )
    | json_values
)


def _assert_readable(err: ConfigError) -> None:
    """A message for a person: no pydantic internals (class names, union tags, 'Value error')."""
    message = str(err)
    assert message.strip(), "a ConfigError without a message"
    for internal in ("instance of", "Value error", "Settings", "ExperimentConfig", ".str:", ".int:", "function-"):
        assert internal not in message, message


def _validate(raw: Any) -> ExperimentConfig | None:
    """The property: an ``ExperimentConfig`` or a readable ``ConfigError``, nothing else."""
    try:
        config = validate_config(raw)
    except ConfigError as err:
        _assert_readable(err)
        event("rejected")
        return None
    event("accepted")
    assert isinstance(config, ExperimentConfig)
    # What a run writes (config.json, the checkpoint's config) validates again to the same config.
    written = json.loads(json.dumps(config.model_dump(mode="json")))
    assert validate_config(written).model_dump(mode="json") == _nan_free(written)
    return config


def _nan_free(value: Any) -> Any:
    assert not (isinstance(value, float) and math.isnan(value)), "an accepted config holds NaN"
    if isinstance(value, dict):
        return {k: _nan_free(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_free(v) for v in value]
    return value


def test_schema_paths_cover_nested_sections():
    assert {
        ("feda2v", "ast", "model"),
        ("nodes", "3", "selected_classes"),
        ("data", "root"),
        ("images", "steps"),
    } <= set(SCHEMA_PATHS)


@FUZZ
@given(base=base_configs, edits=st.lists(mutations(), max_size=6))
def test_mutated_configs_validate_or_raise_config_error(base, edits):
    for op, path, value in edits:
        base = _mutate(base, op, path, value)
    _validate(base)


@FUZZ
@given(name=st.sampled_from(sorted(SHIPPED)), path=st.sampled_from(SCHEMA_PATHS), value=json_values)
def test_one_wrong_value_in_a_shipped_config_names_its_key_path(name, path, value):
    raw = _mutate(json.loads(json.dumps(SHIPPED[name])), "set", path, value)
    try:
        validate_config(raw)
    except ConfigError as err:
        message = str(err)
        # The error names the edited key, or a section above it whose rule the edit broke.
        assert any(".".join(path[:i]) in message for i in range(1, len(path) + 1)), message
        _assert_readable(err)


override_keys = st.sampled_from([".".join(p) for p in SCHEMA_PATHS]) | st.text(max_size=16)
# Texts Python's json cannot read although they look like JSON: too long a number, too deep a list.
unreadable_json = st.sampled_from(
    ["9" * 5000, "-" + "1" * 4301, "[" * 1200 + "]" * 1200, '{"a":' * 1200 + "1" + "}" * 1200]
)
# JSON that parses, yet copying or validating so deep a value would exhaust Python's stack.
deep_json = st.just(json.dumps(_nested(600)))
override_values = json_values.map(json.dumps) | st.text(max_size=16) | unreadable_json | deep_json
override_items = st.tuples(override_keys, st.sampled_from(["=", "==", ":", ""]), override_values).map("".join)
override_strings = st.lists(override_items, max_size=4).map("; ".join) | st.text(max_size=40)


@FUZZ
@given(name=st.sampled_from(sorted(SHIPPED)), text=override_strings)
def test_override_strings_parse_apply_and_validate_or_raise_config_error(name, text):
    try:
        overrides = parse_overrides(text)
        raw = apply_overrides(SHIPPED[name], overrides)
    except ConfigError as err:
        _assert_readable(err)
        return
    assert isinstance(overrides, dict) and all(isinstance(k, str) for k in overrides)
    _validate(raw)


@FUZZ
@given(raw=base_configs, overrides=st.dictionaries(override_keys, json_values, max_size=4))
def test_apply_overrides_never_crashes_and_never_edits_its_input(raw, overrides):
    before = json.dumps(raw, sort_keys=True)
    try:
        merged = apply_overrides(raw, overrides)
    except ConfigError as err:
        _assert_readable(err)
    else:
        assert isinstance(merged, dict)
    assert json.dumps(raw, sort_keys=True) == before


def test_override_values_are_json_when_they_parse_else_text():
    parsed = parse_overrides('a.b=NaN; a.c=1e400; a.d=[1, {"x": null}]; a.e=text with = sign; a.f=')
    assert math.isnan(parsed["a.b"]) and parsed["a.c"] == math.inf
    assert parsed["a.d"] == [1, {"x": None}] and parsed["a.e"] == "text with = sign" and parsed["a.f"] == ""


config_files = (
    base_configs.map(lambda raw: json.dumps(raw).encode())
    | (unreadable_json | deep_json).map(str.encode)
    | st.binary(max_size=64)
    | st.sampled_from([b"", b"\xff\xfe{}", b"{", b"NaN", b"[]", b"null", b'{"feda2v": {"use_generator": tru}}'])
)


@FUZZ
@given(content=config_files, text=override_strings)
def test_any_config_file_loads_or_raises_config_error_naming_the_file(content, text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzzed.json"
        path.write_bytes(content)
        try:
            config = load_config(path, text)
        except ConfigError as err:
            _assert_readable(err)
            assert "fuzzed.json" in str(err) or "Override" in str(err) or "the config" in str(err), str(err)
        else:
            assert isinstance(config, ExperimentConfig)
