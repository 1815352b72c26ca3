from pathlib import Path

import pytest

from feda2v_flwr.config import ConfigError, load_config, parse_overrides, validate_config
from feda2v_flwr.config.loading import PROJECT_ROOT


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
    with pytest.raises(ConfigError, match=r"feda2v.adapter_aggregation_mode.*'avg', 'avg_unweighted', 'none' or 'kd'"):
        validate_config({"feda2v": {"adapter_aggregation_mode": "median"}})
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
