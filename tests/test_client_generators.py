"""Client-side generators through real ClientTask fits and FedA2VStrategy.aggregate_fit."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

from conftest import FakeClientProxy, tiny_config
from feda2v_flwr.checkpointing.files import CheckpointError, checkpoint_due
from feda2v_flwr.checkpointing.nodes import load_client_generator
from feda2v_flwr.config.paths import ConfigError
from feda2v_flwr.reporting import read_metrics
from feda2v_flwr.server_app import build_strategy
from feda2v_flwr.training.generator_learner import GeneratorMismatchError
from feda2v_flwr.training.task import ClientTask

NO_SERVER_STEP = dict(use_generator=False, global_model_train_from_nodes_adapters=False)
# node 0 holds siren + dog, node 1 rain + engine (round-robin over the tiny config's classes)
GROUPS = {"generator_class_groups": {"loud": ["siren", "engine"]}}


def _fit_round(config, cache_dir, generator_dir, server_round=1, arrays=None, states=None):
    """Fit both partitions; returns (FitRes replies, outcomes)."""
    replies, outcomes = [], []
    global_rounds = config.federation.global_rounds
    for pid in range(2):
        task = ClientTask(config, pid, 2, cache_dir)
        outcome = task.fit(
            arrays if arrays is not None else task.initial_arrays(),
            server_round,
            None,
            None,
            generator_state=(states or {}).get(pid),
            generator_dir=generator_dir if checkpoint_due(config.feda2v, server_round, global_rounds) else None,
        )
        res = FitRes(
            Status(Code.OK, "ok"), ndarrays_to_parameters(outcome.arrays), outcome.num_examples, outcome.metrics
        )
        replies.append((FakeClientProxy(str(pid)), res))
        outcomes.append(outcome)
    return replies, outcomes


@pytest.mark.parametrize(
    ("settings", "expected_keys"),
    [
        ({"generator_training_mode": True}, [["unified"], ["unified"]]),
        (
            {"generator_training_mode": True, "generator_granularity": "per_class"},
            [["class_dog", "class_siren"], ["class_engine", "class_rain"]],
        ),
        (
            {"generator_training_mode": True, "generator_granularity": "per_group", **GROUPS},
            [["group_loud", "group_other"], ["group_loud", "group_other"]],
        ),
    ],
    ids=["unified", "per_class", "per_group"],
)
def test_generator_training_mode_for_each_granularity(tmp_path, cache_dir, settings, expected_keys):
    config = tiny_config(feda2v=settings, data={"cache_dir": str(cache_dir)})
    strategy = build_strategy(config, tmp_path / "run")
    generator_dir = tmp_path / "run" / "client_generators"
    replies, outcomes = _fit_round(
        config, cache_dir, generator_dir, arrays=parameters_to_ndarrays(strategy.initial_parameters)
    )
    params, metrics = strategy.aggregate_fit(1, replies, [])
    assert params is not None and metrics["num_updates"] == 2

    fit = next(m for m in read_metrics(tmp_path / "run" / "metrics.jsonl") if m["phase"] == "fit")
    for pid, keys in enumerate(expected_keys):
        client = fit["clients"][str(pid)]
        assert client["num_generators"] == len(keys)
        assert client["generator_epochs"] == config.feda2v.generator_training_epochs
        assert np.isfinite(client["generator_loss"]) and 0 <= client["synthetic_retrieval_top1"] <= 1
        assert client["train_loss_clip"] > 0  # adapters were trained too
        files = sorted(p.name for p in generator_dir.glob(f"client_generator_node{pid}_*_round_1.pt"))
        assert files == [f"client_generator_node{pid}_{k}_round_1.pt" for k in keys]
    assert {"generator_loss", "synthetic_retrieval_top1"} <= set(fit["client_loss_mean"])
    saved = load_client_generator(generator_dir / f"client_generator_node0_{expected_keys[0][0]}_round_1.pt")
    assert saved["learner"]["generator_class"] == "ConditionedVAEGenerator" and saved["node"] == 0
    assert saved["classes"] and saved["learner"]["generator_args"]["condition_slots"] == {"clip": [384]}


def test_generator_only_mode_leaves_the_adapters_untouched(tmp_path, cache_dir):
    settings = {"generator_only_mode": True, "generator_granularity": "per_class", **NO_SERVER_STEP}
    config = tiny_config(feda2v=settings, data={"cache_dir": str(cache_dir)})
    strategy = build_strategy(config, tmp_path / "run")
    initial = parameters_to_ndarrays(strategy.initial_parameters)
    replies, _ = _fit_round(config, cache_dir, tmp_path / "gens", arrays=initial)
    params, _ = strategy.aggregate_fit(1, replies, [])
    for got, expected in zip(parameters_to_ndarrays(params), initial, strict=True):
        np.testing.assert_array_equal(got, expected)
    fit = next(m for m in read_metrics(tmp_path / "run" / "metrics.jsonl") if m["phase"] == "fit")
    assert all("train_loss_clip" not in c and c["num_generators"] == 2 for c in fit["clients"].values())


def _learner_state(outcome, key):
    return torch.load(io.BytesIO(outcome.generator_state), weights_only=True)[key]


def test_generators_keep_learning_across_rounds(tmp_path, cache_dir):
    config = tiny_config(feda2v={"generator_training_mode": True}, data={"cache_dir": str(cache_dir)})
    _, first = _fit_round(config, cache_dir, None)
    _, second = _fit_round(config, cache_dir, None, server_round=2, states={0: first[0].generator_state})
    epochs = config.feda2v.generator_training_epochs
    assert second[0].metrics["generator_epochs"] == 2 * epochs  # continued from round 1
    assert second[1].metrics["generator_epochs"] == epochs  # node 1 had no saved state: a fresh start
    assert _learner_state(second[0], "unified")["learner"]["generator_epochs"] == 2 * epochs


def test_pretrained_generators_load_and_reset_on_class_change(tmp_path, cache_dir):
    base = {"generator_training_mode": True, "generator_training_epochs": 2}
    config = tiny_config(feda2v=base, data={"cache_dir": str(cache_dir)})
    _fit_round(config, cache_dir, tmp_path / "gens")  # run A writes client_generator_node{0,1}_unified_round_1.pt
    pretrained = {**base, "pretrained_generator_path": str(tmp_path / "gens")}

    _, same = _fit_round(tiny_config(feda2v=pretrained, data={"cache_dir": str(cache_dir)}), cache_dir, None)
    assert same[0].metrics["generator_epochs"] == 4  # 2 from run A + 2 now

    narrowed = {"0": {"generator_train_classes": ["dog"]}}  # node 0's unified generator now serves only dog
    reset_cfg = tiny_config(feda2v=pretrained, nodes=narrowed, data={"cache_dir": str(cache_dir)})
    _, reset = _fit_round(reset_cfg, cache_dir, None)
    assert reset[0].metrics["generator_epochs"] == 2 and reset[1].metrics["generator_epochs"] == 4
    keep_cfg = tiny_config(
        feda2v={**pretrained, "reset_generator_on_class_change": False},
        nodes=narrowed,
        data={"cache_dir": str(cache_dir)},
    )
    _, kept = _fit_round(keep_cfg, cache_dir, None)
    assert kept[0].metrics["generator_epochs"] == 4


def test_pretrained_generator_of_another_type_or_a_corrupt_file_fails_clearly(tmp_path, cache_dir):
    config = tiny_config(feda2v={"generator_training_mode": True}, data={"cache_dir": str(cache_dir)})
    _fit_round(config, cache_dir, tmp_path / "gens")
    gan = tiny_config(
        feda2v={
            "generator_training_mode": True,
            "generator_type": "gan",
            "pretrained_generator_path": str(tmp_path / "gens"),
        },
        data={"cache_dir": str(cache_dir)},
    )
    with pytest.raises(
        GeneratorMismatchError, match="holds a 'vae' generator but this run is configured with generator_type 'gan'"
    ):
        _fit_round(gan, cache_dir, None)
    with pytest.raises(GeneratorMismatchError, match="holds a 'vae' generator"):
        build_strategy(gan, tmp_path / "run")  # the server checks the files before any training
    with pytest.raises(ValueError, match="with generator_type 'gan' leave vae_arch at 'flat'"):
        tiny_config(feda2v={"generator_type": "gan", "vae_arch": "tokenwise"})
    (tmp_path / "gens" / "client_generator_node0_unified_round_1.pt").write_bytes(b"not a checkpoint")
    vae = tiny_config(
        feda2v={"generator_training_mode": True, "pretrained_generator_path": str(tmp_path / "gens")},
        data={"cache_dir": str(cache_dir)},
    )
    with pytest.raises(CheckpointError, match="client_generator_node0_unified_round_1.pt is corrupt"):
        _fit_round(vae, cache_dir, None)


def test_kd_aggregation_through_aggregate_fit(tmp_path, cache_dir):
    config = tiny_config(
        feda2v={"adapter_aggregation_mode": "kd", "kd_training_epochs": 2, "global_model_train_epochs": 0},
        data={"cache_dir": str(cache_dir)},
    )
    strategy = build_strategy(config, tmp_path / "run")
    replies, _ = _fit_round(config, cache_dir, None, arrays=parameters_to_ndarrays(strategy.initial_parameters))
    n = len(strategy.adapter_keys)
    client_arrays = [parameters_to_ndarrays(r.parameters)[:n] for _, r in replies]
    weights = [r.num_examples for _, r in replies]
    params, _ = strategy.aggregate_fit(1, replies, [])
    average = [np.average([a, b], axis=0, weights=weights) for a, b in zip(*client_arrays, strict=True)]
    moved = {
        key.split(".")[0]
        for key, got, avg in zip(strategy.adapter_keys, parameters_to_ndarrays(params), average, strict=True)
        if not np.allclose(got, avg, atol=1e-6)
    }
    assert moved == {"clip", "t5"}  # distillation moved both slots away from the plain average
    kd = next(m for m in read_metrics(tmp_path / "run" / "metrics.jsonl") if m["phase"] == "kd")
    assert set(kd["loss_per_slot"]) == {"clip", "t5"}


def test_kd_needs_the_server_generator():
    with pytest.raises(ValueError, match="'kd' distils on the server generator's samples"):
        tiny_config(feda2v={"adapter_aggregation_mode": "kd", "use_generator": False})


def test_a_corrupt_checkpoint_error_names_the_file(tmp_path):
    path = tmp_path / "x.pt"
    path.write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="x.pt"):
        load_client_generator(path)


def test_round_two_starts_from_round_one_weights(tmp_path, cache_dir):
    config = tiny_config(feda2v={"generator_training_mode": True}, data={"cache_dir": str(cache_dir)})
    _, first = _fit_round(config, cache_dir, None)
    task = ClientTask(config, 0, 2, cache_dir)
    task.generators.prepare(first[0].generator_state, audio_length=task.split("train")[0].shape[1])
    restored = task.generators.generators["unified"].learner.model.state_dict()
    saved = _learner_state(first[0], "unified")["learner"]["generator_state"]
    assert all(torch.equal(restored[k], saved[k]) for k in saved)


@pytest.mark.parametrize(
    ("feda2v", "nodes", "message"),
    [
        ({"generator_granularity": "per_group"}, {}, "'per_group' needs feda2v.generator_class_groups"),
        ({"generator_class_groups": {"a": ["dog"], "b": ["dog"]}}, {}, "'dog' is in two generator_class_groups"),
        ({"generator_class_groups": {"a": ["whale"]}}, {}, "lists 'whale', not a class of this run"),
        ({}, {"1": {"generator_train_classes": ["dog"]}}, r"nodes.1.generator_train_classes lists \['dog'\]"),
        ({"pretrained_generator_path": "no/such/dir"}, {}, "pretrained_generator_path .* does not exist"),
    ],
)
def test_client_generator_mistakes_fail_before_any_training(tmp_path, cache_dir, feda2v, nodes, message):
    config = tiny_config(
        feda2v={"generator_training_mode": True, **feda2v}, nodes=nodes, data={"cache_dir": str(cache_dir)}
    )
    with pytest.raises(ConfigError, match=message):
        build_strategy(config, tmp_path / "run")
