from pathlib import Path

import pytest

from feda2v_flwr.config import ConfigError, load_config, parse_overrides, validate_config
from feda2v_flwr.config.paths import PROJECT_ROOT


def test_missing_keys_get_documented_defaults():
    config = validate_config({})
    assert config.feda2v.generator_training_epochs == 5
    assert config.feda2v.generator_training_sequence_length == 4
    assert config.feda2v.adapter_aggregation_mode == "avg"
    assert config.federation.global_rounds == 5


@pytest.mark.parametrize("path", sorted((PROJECT_ROOT / "configs").glob("*.json")), ids=lambda p: p.name)
def test_shipped_configs_validate(path: Path):
    load_config(path)


def test_unknown_key_names_the_closest_valid_key():
    with pytest.raises(ConfigError, match=r"unknown key 'feda2v.use_generatr'.*'feda2v.use_generator'"):
        validate_config({"feda2v": {"use_generatr": True}})


def test_unknown_key_inside_a_node_section():
    with pytest.raises(ConfigError, match=r"nodes.3.selected_clases.*nodes.3.selected_classes"):
        validate_config({"nodes": {"3": {"selected_clases": ["dog"]}}})


def test_bad_value_names_key_path_and_allowed_values():
    allowed = "'avg', 'avg_unweighted', 'none', 'kd', 'median' or 'trimmed_mean'"
    with pytest.raises(ConfigError, match=rf"feda2v.adapter_aggregation_mode.*{allowed}"):
        validate_config({"feda2v": {"adapter_aggregation_mode": "mean"}})
    with pytest.raises(ConfigError, match=r"federation.global_rounds"):
        validate_config({"federation": {"global_rounds": 0}})


def test_removed_key_prints_the_migration():
    with pytest.raises(ConfigError) as err:
        validate_config({"feda2v": {"generator_target_sequence_length": 4}})
    assert "generator_training_sequence_length" in str(err.value)
    assert "generator_output_sequence_length" in str(err.value)


def test_overrides_are_parsed_as_json_and_applied():
    assert parse_overrides('federation.global_rounds=3; feda2v.use_generator=false; data.classes=["dog"]') == {
        "federation.global_rounds": 3,
        "feda2v.use_generator": False,
        "data.classes": ["dog"],
    }
    config = load_config("configs/default.json", "federation.global_rounds=2; wandb.mode=disabled")
    assert config.federation.global_rounds == 2 and config.wandb.mode == "disabled"


def test_override_of_unknown_key_is_an_error():
    with pytest.raises(ConfigError, match="federation.global_round"):
        load_config("configs/default.json", "federation.global_round=2")


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.json")


def test_a_config_file_that_is_not_an_object_or_not_utf8_names_the_file(tmp_path):
    listed, binary = tmp_path / "listed.json", tmp_path / "binary.json"
    listed.write_text('[{"feda2v": {}}]')
    binary.write_bytes(b"\xff\xfe{}")
    with pytest.raises(ConfigError, match=r"listed.json must hold a JSON object with the sections feda2v, .*a list"):
        load_config(listed)
    with pytest.raises(ConfigError, match=r"binary.json is not valid JSON"):
        load_config(binary)


def test_a_rule_across_keys_is_reported_as_a_sentence_without_pydantic_wording():
    with pytest.raises(ConfigError) as err:
        validate_config({"data": {"train_ratio": 0.9, "val_ratio": 0.2}})
    assert str(err.value).splitlines()[1:] == [
        "  - data: train_ratio + val_ratio must leave room for a test split (< 1.0)"
    ]


def test_values_python_cannot_read_as_json_stay_text_and_deep_nesting_is_refused():
    assert parse_overrides("training.seed=" + "9" * 5000) == {"training.seed": "9" * 5000}
    with pytest.raises(ConfigError, match="training.seed: Input should be a valid integer; got '99999"):
        load_config("configs/default.json", "training.seed=" + "9" * 5000)
    deep: list = []
    for _ in range(600):
        deep = [deep]
    with pytest.raises(ConfigError, match="nests objects and lists more than 32 levels deep"):
        validate_config({"data": {"classes": deep}})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"federation": {"global_rounds": True}},
            "federation.global_rounds: Input should be a valid integer; got True",
        ),
        ({"federation": {"global_rounds": 3.0}}, "federation.global_rounds: Input should be a valid integer; got 3.0"),
        ({"feda2v": {"use_generator": "yes"}}, "feda2v.use_generator: Input should be a valid boolean; got 'yes'"),
        ({"nodes": {"7": {}}}, "nodes ['7'] are not partition ids of this federation (0..1"),
        ({"nodes": {"one": {}}}, "nodes ['one'] are not partition ids"),
    ],
)
def test_types_are_strict_and_node_keys_are_partition_ids(raw, message):
    with pytest.raises(ConfigError) as err:
        validate_config({**raw, "federation": {"num_clients": 2, **raw.get("federation", {})}})
    assert message in str(err.value)
