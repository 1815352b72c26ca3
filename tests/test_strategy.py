"""FedA2VStrategy.aggregate_fit with fake FitRes replies (real client payloads, no simulation)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, RecordDict
from flwr.common import Code, EvaluateRes, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.client_manager import SimpleClientManager

from conftest import FakeClientProxy, tiny_config
from feda2v_flwr.checkpointing.nodes import load_client_state
from feda2v_flwr.checkpointing.run import REQUIRED_KEYS, load_checkpoint
from feda2v_flwr.config.paths import ConfigError
from feda2v_flwr.data.datasets import DatasetError
from feda2v_flwr.reporting import read_metrics
from feda2v_flwr.reporting.metrics import reported_missing_partitions
from feda2v_flwr.server.run_log import weighted_split_metrics
from feda2v_flwr.server_app import build_strategy
from feda2v_flwr.training.task import ClientTask


def _strategy(tmp_path, cache_dir, name="run", **feda2v):
    config = tiny_config(feda2v=feda2v, data={"cache_dir": str(cache_dir)})
    return build_strategy(config, tmp_path / name)


def _replies(strategy, cache_dir):
    """Real client updates from both partitions, as Flower FitRes."""
    arrays = parameters_to_ndarrays(strategy.initial_parameters)
    replies = []
    for pid in range(2):
        outcome = ClientTask(strategy.config, pid, 2, cache_dir).fit(arrays, 1, None, None)
        res = FitRes(
            Status(Code.OK, "ok"),
            ndarrays_to_parameters(outcome.arrays),
            outcome.num_examples,
            outcome.metrics,
        )
        replies.append((FakeClientProxy(str(pid)), res))
    return replies


def _adapters(params) -> list[np.ndarray]:
    return parameters_to_ndarrays(params)


PLAIN = dict(use_generator=False, global_model_train_from_nodes_adapters=False)


def test_weighted_and_unweighted_aggregation_match_numpy(tmp_path, cache_dir):
    # node 1 keeps half of its clips for training, node 0 seven in ten: unequal weights
    config = tiny_config(feda2v=PLAIN, data={"cache_dir": str(cache_dir)}, nodes={"1": {"train_ratio": 0.5}})
    strategy = build_strategy(config, tmp_path / "run")
    replies = _replies(strategy, cache_dir)
    weights = [r.num_examples for _, r in replies]
    assert weights == [14, 10]
    n = len(strategy.adapter_keys)  # replies carry adapters first, then statistics
    client_arrays = [parameters_to_ndarrays(r.parameters)[:n] for _, r in replies]
    weighted, _ = strategy.aggregate_fit(1, replies, [])
    for got, a, b in zip(_adapters(weighted), *client_arrays, strict=True):
        np.testing.assert_allclose(got, np.average([a, b], axis=0, weights=weights), rtol=1e-6, atol=1e-7)

    unweighted = build_strategy(
        tiny_config(
            feda2v={**PLAIN, "adapter_aggregation_mode": "avg_unweighted"},
            data={"cache_dir": str(cache_dir)},
            nodes={"1": {"train_ratio": 0.5}},
        ),
        tmp_path / "u",
    )
    params, _ = unweighted.aggregate_fit(1, replies, [])
    for got, a, b in zip(_adapters(params), *client_arrays, strict=True):
        np.testing.assert_allclose(got, (a + b) / 2, rtol=1e-6, atol=1e-7)


def test_replies_in_any_order_give_bitwise_identical_results(tmp_path, cache_dir):
    replies = _replies(_strategy(tmp_path, cache_dir, name="probe"), cache_dir)
    forward, _ = _strategy(tmp_path, cache_dir, name="a").aggregate_fit(1, replies, [])
    backward, _ = _strategy(tmp_path, cache_dir, name="b").aggregate_fit(1, replies[::-1], [])
    for x, y in zip(_adapters(forward), _adapters(backward), strict=True):
        np.testing.assert_array_equal(x, y)


def test_nan_adapters_are_dropped_their_statistics_kept_and_the_round_goes_on(tmp_path, cache_dir):
    strategy = _strategy(tmp_path, cache_dir, **PLAIN)
    good, bad = _replies(strategy, cache_dir)
    arrays = parameters_to_ndarrays(bad[1].parameters)
    arrays[0] = arrays[0] * np.nan
    bad[1].parameters = ndarrays_to_parameters(arrays)
    params, metrics = strategy.aggregate_fit(1, [good, bad], [RuntimeError("node crashed")])
    assert (metrics["num_updates"], metrics["dropped"], metrics["adapters_dropped"]) == (2, 0, 1)
    expected_arrays = parameters_to_ndarrays(good[1].parameters)[: len(strategy.adapter_keys)]
    for got, expected in zip(_adapters(params), expected_arrays, strict=True):
        np.testing.assert_array_equal(got, expected)  # only the good reply's adapters entered the average
    fit_line = next(m for m in read_metrics(tmp_path / "run" / "metrics.jsonl") if m["phase"] == "fit")
    (dropped,) = fit_line["dropped"]
    assert dropped["part"] == "adapters" and dropped["partition_id"] == "1"
    assert dropped["reason"].startswith("adapters dropped, class statistics kept: ") and "NaN" in dropped["reason"]
    assert sorted(fit_line["clients"]) == ["0", "1"] and "node crashed" in fit_line["failures"][0]
    bad_stats = parameters_to_ndarrays(bad[1].parameters)
    bad_stats[-1] = bad_stats[-1] * np.nan  # a statistic, not an adapter: the whole reply goes
    bad[1].parameters = ndarrays_to_parameters(bad_stats)
    _, metrics = _strategy(tmp_path, cache_dir, name="stats", **PLAIN).aggregate_fit(1, [good, bad], [])
    assert (metrics["num_updates"], metrics["dropped"]) == (1, 1) and "adapters_dropped" not in metrics


def test_two_replies_for_one_partition_are_both_dropped_whatever_their_order(tmp_path, cache_dir):
    strategy = _strategy(tmp_path, cache_dir, **PLAIN)
    first, second = _replies(strategy, cache_dir)
    impostor = (FakeClientProxy("intruder"), first[1])  # claims partition 0 too, from another node
    for order, name in (([impostor, first, second], "a"), ([second, first, impostor], "b")):
        strategy = _strategy(tmp_path, cache_dir, name=name, **PLAIN)
        _, metrics = strategy.aggregate_fit(1, order, [])
        assert metrics["num_updates"] == 1 and metrics["dropped"] == 2
        reasons = {d["reason"] for d in read_metrics(tmp_path / name / "metrics.jsonl")[0]["dropped"]}
        assert reasons == {"2 replies from nodes 0, intruder claim partition 0: none is used"}


def test_once_bound_a_partition_refuses_another_node_while_its_own_is_connected(tmp_path, cache_dir):
    strategy = _strategy(tmp_path, cache_dir, **PLAIN)
    first, second = _replies(strategy, cache_dir)
    strategy.replies.connected = {"0", "1"}
    assert strategy.aggregate_fit(1, [first, second], [])[1]["num_updates"] == 2
    impostor = (FakeClientProxy("intruder"), first[1])
    strategy.replies.connected = {"0", "1", "intruder"}
    _, metrics = strategy.aggregate_fit(2, [impostor, second], [])  # arrives first, node 0 is slow
    assert metrics["num_updates"] == 1
    fits = [m for m in read_metrics(tmp_path / "run" / "metrics.jsonl") if m["phase"] == "fit"]
    assert fits[-1]["dropped"][0]["reason"] == "partition 0 belongs to node 0, which is still connected"
    assert list(fits[-1]["clients"]) == ["1"]


def test_statistics_of_classes_a_node_does_not_hold_are_dropped(tmp_path, cache_dir):
    strategy = _strategy(tmp_path, cache_dir, **PLAIN)
    first, second = _replies(strategy, cache_dir)
    first[1].metrics["partition_id"] = 1  # node 0's statistics under node 1's name
    second[1].metrics["partition_id"] = 7  # no such partition
    params, metrics = strategy.aggregate_fit(1, [first, second], [])
    assert params is None and metrics == {"skipped": 1}
    reasons = read_metrics(tmp_path / "run" / "metrics.jsonl")[-1]["dropped"]
    assert "statistics for classes ['dog', 'siren'] that partition 1 does not hold" in reasons[0]["reason"]
    assert reasons[1]["reason"] == "partition_id is 7, expected an integer in 0..1"


def test_too_few_valid_replies_skip_the_round_not_the_run(tmp_path, cache_dir):
    config = tiny_config(feda2v=PLAIN, federation={"min_fit_clients": 2}, data={"cache_dir": str(cache_dir)})
    strategy = build_strategy(config, tmp_path / "run")
    good, _ = _replies(strategy, cache_dir)
    params, metrics = strategy.aggregate_fit(1, [good], [RuntimeError("boom")])
    assert params is None and metrics == {"skipped": 1}
    assert read_metrics(tmp_path / "run" / "metrics.jsonl")[-1]["phase"] == "skipped"


def test_server_step_checkpoints_with_the_documented_keys_and_logs_every_phase(tmp_path, cache_dir):
    strategy = _strategy(tmp_path, cache_dir)
    params, metrics = strategy.aggregate_fit(1, _replies(strategy, cache_dir), [])
    assert {"generator_loss", "adapter_finetuning_loss"} <= set(metrics)
    checkpoint = tmp_path / "run" / "checkpoints" / "server_generator_round_1.pt"
    assert checkpoint.exists() and (checkpoint.parent / "server_generator_latest.json").exists()
    payload = load_checkpoint(checkpoint)
    assert set(REQUIRED_KEYS) <= set(payload)
    assert payload["round"] == 1 and payload["generator_type"] == "vae"
    for saved, returned in zip(payload["global_adapters"].values(), _adapters(params), strict=True):
        np.testing.assert_array_equal(saved.numpy(), returned)
    phases = {m["phase"] for m in read_metrics(tmp_path / "run" / "metrics.jsonl")}
    assert {"fit", "generator", "validation", "finetune", "checkpoint", "round"} <= phases


def test_configure_fit_sends_round_and_cache_dir(tmp_path, cache_dir):
    strategy = _strategy(tmp_path, cache_dir)
    manager = SimpleClientManager()
    for cid in ("a", "b"):
        manager.register(FakeClientProxy(cid))
    pairs = strategy.configure_fit(3, strategy.initial_parameters, manager)
    assert len(pairs) == 2
    assert all(ins.config["server_round"] == 3 and ins.config["cache-dir"] == str(cache_dir) for _, ins in pairs)


def test_float16_transfer_goes_both_ways_and_the_server_aggregates_in_float32(tmp_path, cache_dir):
    strategy = _strategy(tmp_path, cache_dir, transfer_dtype="float16", **PLAIN)
    manager = SimpleClientManager()
    for cid in ("a", "b"):
        manager.register(FakeClientProxy(cid))
    (_, ins), *_ = strategy.configure_fit(1, strategy.initial_parameters, manager)
    assert {a.dtype for a in parameters_to_ndarrays(ins.parameters)} == {np.dtype(np.float16)}
    replies = _replies(strategy, cache_dir)
    assert np.dtype(np.float16) in {a.dtype for a in parameters_to_ndarrays(replies[0][1].parameters)}
    params, metrics = strategy.aggregate_fit(1, replies, [])
    assert metrics["num_updates"] == 2 and metrics["dropped"] == 0
    assert {a.dtype for a in _adapters(params)} == {np.dtype(np.float32)}


def test_partial_participation_draws_partition_ids_from_the_seed_and_skips_the_others(tmp_path, cache_dir):
    config = tiny_config(
        feda2v=PLAIN, federation={"num_clients": 4, "clients_per_round": 2}, data={"cache_dir": str(cache_dir)}
    )
    strategy = build_strategy(config, tmp_path / "run")
    drawn = [strategy.participants(r) for r in range(1, 6)]
    assert drawn == [build_strategy(config, tmp_path / "again").participants(r) for r in range(1, 6)]
    assert all(len(p) == 2 and p == sorted(set(p)) for p in drawn) and len({tuple(p) for p in drawn}) > 1
    other = tiny_config(federation={"num_clients": 4, "clients_per_round": 2}, training={"seed": 1})
    assert drawn != [build_strategy(other, tmp_path / "other").participants(r) for r in range(1, 6)]

    from feda2v_flwr.client_app import FedA2VClient

    sitting_out = next(pid for pid in range(4) if pid not in drawn[0])
    client = FedA2VClient(
        run_config={}, node_config={"partition-id": sitting_out, "num-partitions": 4}, state=RecordDict()
    )
    arrays, examples, metrics = client.fit([], {"server_round": 1, "participants": ",".join(map(str, drawn[0]))})
    assert (arrays, examples, metrics) == ([], 0, {"partition_id": sitting_out, "sat_out": 1})
    # Sitting out a checkpoint round still saves the node's (unchanged) state for a resume.
    client.state["feda2v"] = ConfigRecord({"optimizer": b"state"})
    sit_out = {"participants": ",".join(map(str, drawn[0])), "client-state-dir": str(tmp_path / "states")}
    client.fit([], {"server_round": 1, "save-client-state": 1, **sit_out})
    assert load_client_state(tmp_path / "states", sitting_out, before_round=2) == {"optimizer": b"state"}
    with pytest.raises(ValueError, match="clients_per_round .1. is below min_fit_clients .2."):
        tiny_config(federation={"clients_per_round": 1, "min_fit_clients": 2})


def test_evaluation_metrics_are_weighted_by_each_split_count():
    metrics = weighted_split_metrics(
        [
            {"test_examples": 10, "test_retrieval_top1": 1.0, "val_examples": 0},
            {"test_examples": 30, "test_retrieval_top1": 0.5, "val_examples": 4, "val_retrieval_top1": 0.25},
        ]
    )
    assert metrics["test_retrieval_top1"] == pytest.approx((10 * 1.0 + 30 * 0.5) / 40)
    assert metrics["val_retrieval_top1"] == pytest.approx(0.25)


def test_initial_adapters_depend_only_on_the_seed(tmp_path, cache_dir):
    a = _adapters(_strategy(tmp_path, cache_dir, name="s1").initial_parameters)
    torch.manual_seed(123)  # global RNG state must not leak in
    b = _adapters(_strategy(tmp_path, cache_dir, name="s2").initial_parameters)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_a_server_without_the_data_takes_the_named_classes(tmp_path, cache_dir):
    data = {"dataset": "audiofolder", "root": str(tmp_path / "only-on-the-nodes"), "cache_dir": str(cache_dir)}
    config = tiny_config(feda2v=PLAIN, data={**data, "classes": ["dog", "rain"]})
    assert build_strategy(config, tmp_path / "run").recipe.classes == ["dog", "rain"]
    with pytest.raises(DatasetError, match="only-on-the-nodes is not a directory"):
        build_strategy(tiny_config(feda2v=PLAIN, data={**data, "classes": None}), tmp_path / "unnamed")
    # a deployment's server with no data.root at all, nodes holding their own shares
    local = {"dataset": "audiofolder", "partitioning": "local", "cache_dir": str(cache_dir)}
    config = tiny_config(feda2v=PLAIN, data={**local, "classes": ["rain", "dog", "siren"]})
    assert build_strategy(config, tmp_path / "local").recipe.classes == ["rain", "dog", "siren"]
    by_class = tiny_config(feda2v=PLAIN, data={"dataset": "audiofolder", "classes": ["dog", "rain"], **data})
    by_class = by_class.model_copy(update={"data": by_class.data.model_copy(update={"root": None})})
    assert build_strategy(by_class, tmp_path / "no-root").recipe.classes == ["dog", "rain"]


def test_an_unknown_selected_class_fails_on_the_server_before_training(tmp_path, cache_dir):
    config = tiny_config(nodes={"1": {"selected_classes": ["dog", "unicorn"]}}, data={"cache_dir": str(cache_dir)})
    with pytest.raises(ConfigError, match="Node 1: selected_classes lists 'unicorn'"):
        build_strategy(config, tmp_path / "run")


def test_each_round_logs_one_summary_line(tmp_path, cache_dir, caplog):
    config = tiny_config(federation={"eval_gap": 0}, data={"cache_dir": str(cache_dir)})
    strategy = build_strategy(config, tmp_path / "summary")  # no evaluation: the line comes with aggregate_fit
    with caplog.at_level("INFO", logger="feda2v_flwr.server.run_log"):
        strategy.aggregate_fit(1, _replies(strategy, cache_dir), [RuntimeError("node 3 crashed")])
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Round 1/")]
    fields = line.split(" | ")
    assert fields[:2] == ["Round 1/2", "2 ok, 1 failed"]
    (fit,) = [m for m in read_metrics(tmp_path / "summary" / "metrics.jsonl") if m["phase"] == "fit"]
    (step,) = [m for m in read_metrics(tmp_path / "summary" / "metrics.jsonl") if m["phase"] == "round"]
    assert fields[2] == f"client loss {np.mean(list(fit['client_loss_mean'].values())):.3f}"
    assert fields[3] == f"generator {step['generator_loss']:.3f}"
    assert fields[4] == f"fine-tune {step['adapter_finetuning_loss']:.3f}"
    assert fields[-1] == f"up {np.mean(fit['payload_bytes_per_client']) / 1e6:.1f} MB/node"


def test_the_summary_line_waits_for_the_rounds_evaluation(tmp_path, cache_dir, caplog):
    strategy = _strategy(tmp_path, cache_dir, name="summary-eval")
    with caplog.at_level("INFO", logger="feda2v_flwr.server.run_log"):
        strategy.aggregate_fit(1, _replies(strategy, cache_dir), [])
        assert not [r for r in caplog.records if r.getMessage().startswith("Round 1/")]
        metrics = {"partition_id": 0, "val_examples": 0, "test_examples": 4, "test_retrieval_top1": 0.75}
        result = EvaluateRes(Status(Code.OK, "ok"), 0.5, 4, metrics)
        strategy.aggregate_evaluate(1, [(FakeClientProxy("0"), result)], [])
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Round 1/")]
    assert line.endswith("| top-1 0.750")


def test_classes_per_node_that_cannot_cover_the_classes_fails_before_training(tmp_path, cache_dir):
    config = tiny_config(data={"partitioning": "classes_per_node", "classes_per_node": 1, "cache_dir": str(cache_dir)})
    with pytest.raises(ConfigError, match="classes_per_node = 1 with 2 nodes cannot cover the 4 classes"):
        build_strategy(config, tmp_path / "uncovered")
    assert not (tmp_path / "uncovered" / "metrics.jsonl").exists()


@pytest.mark.parametrize(
    "feda2v", [{}, {"use_cls_token_only": True}, {"statistics_sequence_length": 3}], ids=["full", "cls", "pooled"]
)
def test_the_server_expects_the_statistics_shape_the_nodes_send(tmp_path, cache_dir, feda2v):
    strategy = _strategy(tmp_path, cache_dir, **PLAIN, **feda2v)
    (_, reply), _ = _replies(strategy, cache_dir)
    manifest = json.loads(reply.metrics["manifest"])
    sent = {tuple(e["shape"]) for e in manifest if e["name"].endswith(("/audio_mean", "/audio_std"))}
    assert sent == {strategy.replies.expected.statistics_shape}
    assert strategy.aggregate_fit(1, _replies(strategy, cache_dir), [])[1]["num_updates"] == 2


def test_a_node_with_its_own_token_choice_needs_one_statistics_length():
    with pytest.raises(ConfigError, match="set feda2v.statistics_sequence_length"):
        tiny_config(nodes={"1": {"use_cls_token_only": True}})
    tiny_config(nodes={"1": {"use_cls_token_only": True}}, feda2v={"statistics_sequence_length": 1})


def test_partitions_that_never_contribute_are_named_in_the_summary(tmp_path, cache_dir, caplog):
    strategy = _strategy(tmp_path, cache_dir, **PLAIN)  # 2 rounds
    first, second = _replies(strategy, cache_dir)
    strategy.aggregate_fit(1, [second], [RuntimeError("node 0 crashed")])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["missing_partitions"] == [0]
    with caplog.at_level("WARNING", logger="feda2v_flwr.server.run_log"):
        strategy.aggregate_fit(2, [second], [RuntimeError("node 0 crashed")])
    assert reported_missing_partitions([r.getMessage() for r in caplog.records]) == [0]
    other = _strategy(tmp_path, cache_dir, name="both", **PLAIN)
    other.aggregate_fit(1, [first, second], [])
    assert json.loads((tmp_path / "both" / "summary.json").read_text())["missing_partitions"] == []
