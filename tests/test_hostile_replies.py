"""One broken or hostile node cannot stop or poison the round: real replies from ClientTask.fit,
mutated as the crash and poisoning reproductions of issue 17 did, then fuzzed with hypothesis."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from flwr.common import Code, EvaluateRes, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import FakeClientProxy, tiny_config
from feda2v_flwr.checkpointing.run import load_checkpoint
from feda2v_flwr.reporting import read_metrics
from feda2v_flwr.server import trainer_state
from feda2v_flwr.server_app import build_strategy
from feda2v_flwr.training.task import ClientTask

PLAIN = dict(use_generator=False, global_model_train_from_nodes_adapters=False)


@pytest.fixture(scope="module")
def replies(cache_dir):
    """(arrays, num_examples, metrics) of both partitions' first-round fit, and their evaluations."""
    config = tiny_config(data={"cache_dir": str(cache_dir)})
    probe = build_strategy(config, cache_dir.parent / "probe")
    arrays = parameters_to_ndarrays(probe.initial_parameters)
    fits, evaluations = [], []
    for pid in range(2):
        task = ClientTask(config, pid, 2, cache_dir)
        outcome = task.fit(arrays, 1, None, None)
        fits.append((outcome.arrays, outcome.num_examples, outcome.metrics))
        evaluations.append(task.evaluate(arrays, None, server_round=1))
    return fits, evaluations


def _fit_res(arrays, num_examples, metrics) -> FitRes:
    return FitRes(Status(Code.OK, "ok"), ndarrays_to_parameters(arrays), num_examples, metrics)


def _pairs(fits):
    return [(FakeClientProxy(str(pid)), _fit_res(*fit)) for pid, fit in enumerate(fits)]


def _strategy(tmp_path, cache_dir, name="run", **feda2v):
    return build_strategy(tiny_config(feda2v=feda2v, data={"cache_dir": str(cache_dir)}), tmp_path / name)


def _with_manifest(fit, change):
    """``fit`` with its manifest entries passed through ``change(entries) -> entries``."""
    arrays, examples, metrics = fit
    return arrays, examples, {**metrics, "manifest": json.dumps(change(json.loads(metrics["manifest"])))}


def _with_tensor(fit, name, array):
    """``fit`` with tensor ``name`` replaced by ``array`` (manifest updated to match)."""
    arrays, examples, metrics = fit
    entries = json.loads(metrics["manifest"])
    index = next(i for i, e in enumerate(entries) if e["name"] == name)
    entries[index].update(shape=list(array.shape), dtype=str(array.dtype))
    arrays = [*arrays[:index], array, *arrays[index + 1 :]]
    return arrays, examples, {**metrics, "manifest": json.dumps(entries)}


def _first_class(fit) -> str:
    return next(e["name"].split("/")[1] for e in json.loads(fit[2]["manifest"]) if e["name"].startswith("stats/"))


def _tensor(fit, name: str) -> np.ndarray:
    arrays, _, metrics = fit
    return next(a for a, e in zip(arrays, json.loads(metrics["manifest"]), strict=True) if e["name"] == name)


def _without(key: str):
    return lambda entries: [{k: v for k, v in entries[0].items() if k != key}, *entries[1:]]


def _mutations(fit):
    """Issue 17's reproductions, each as (label, mutated fit reply, expected words of the reason)."""
    arrays, examples, metrics = fit
    stats = f"stats/{_first_class(fit)}/"
    L, D = _tensor(fit, stats + "audio_mean").shape
    clip_mean = _tensor(fit, stats + "slot_mean/clip")
    zeros, ones = np.zeros, np.ones
    return [
        ("entry without shape", _with_manifest(fit, _without("shape")), "exactly name, shape and dtype"),
        ("entry without name", _with_manifest(fit, _without("name")), "exactly name, shape and dtype"),
        ("count of shape (0,)", _with_tensor(fit, stats + "count", zeros(0, np.float32)), "count shape"),
        ("another L", _with_tensor(fit, stats + "audio_mean", zeros((L + 3, D), np.float32)), "audio_mean shape"),
        ("another D", _with_tensor(fit, stats + "audio_std", ones((L, D + 1), np.float32)), "audio_std shape"),
        ("val mean", _with_tensor(fit, stats + "val_audio_mean", zeros((2, D), np.float32)), "val_audio_mean shape"),
        ("0 tokens", _with_tensor(fit, stats + "audio_mean", zeros((0, D), np.float32)), "audio_mean shape"),
        ("str payload_bytes", (arrays, examples, {**metrics, "payload_bytes": "1"}), "metric payload_bytes: a str"),
        ("str loss", (arrays, examples, {**metrics, "train_loss_clip": "low"}), "metric train_loss_clip: a str"),
        ("50 MB", (arrays, examples, {**metrics, "classes": "x" * 50_000_000}), "metric classes: expected a string"),
        ("1e30 adapters", ([np.full_like(arrays[0], 1e30), *arrays[1:]], examples, metrics), "max_abs_value"),
        ("1e30 slot mean", _with_tensor(fit, stats + "slot_mean/clip", np.full_like(clip_mean, 1e30)), "max_abs_value"),
        ("num_examples 1e15", (arrays, 10**15, metrics), "num_examples is 1000000000000000"),
        ("count 1e15", _with_tensor(fit, stats + "count", np.array([1e15], np.float32)), "not a whole number in 1..10"),
    ]


def test_each_reproduction_is_dropped_with_its_reason_and_the_round_goes_on(tmp_path, cache_dir, replies):
    fits, _ = replies
    adapter_tensors = len(_strategy(tmp_path, cache_dir, name="probe", **PLAIN).adapter_keys)  # first in a reply
    good_adapters = parameters_to_ndarrays(_pairs(fits)[1][1].parameters)[:adapter_tensors]
    for number, (label, mutated, words) in enumerate(_mutations(fits[0])):
        strategy = _strategy(tmp_path, cache_dir, name=f"m{number}", **PLAIN)
        pairs = [(FakeClientProxy("0"), _fit_res(*mutated)), _pairs(fits)[1]]
        params, metrics = strategy.aggregate_fit(1, pairs, [])
        if label == "1e30 adapters":  # only the adapters go; node 0's class statistics serve the server step
            assert (metrics["num_updates"], metrics["dropped"], metrics["adapters_dropped"]) == (2, 0, 1)
            for got, expected in zip(parameters_to_ndarrays(params), good_adapters, strict=True):
                np.testing.assert_array_equal(got, expected)
        else:
            assert params is not None and metrics["num_updates"] == 1 and metrics["dropped"] == 1, label
        (fit_line,) = [m for m in read_metrics(tmp_path / f"m{number}" / "metrics.jsonl") if m["phase"] == "fit"]
        assert words in fit_line["dropped"][0]["reason"], (label, fit_line["dropped"][0]["reason"])
        assert all(np.isfinite(a).all() and np.abs(a).max() < 1e6 for a in parameters_to_ndarrays(params))


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"test_mse": "0.1"}, "metric test_mse: a str"),
        ({"test_examples": "8"}, "metric test_examples: a str"),
        ({"image_count": 1, "image_labels": 7, "image_predictions": "0"}, "metric image_labels: expected a string"),
        ({"test_retrieval_top1": 1e300}, "metric test_retrieval_top1: 1e+300 is not a finite number"),
        ({"test_retrieval_top1": 3.0}, "test_retrieval_top1 is 3.0, outside [0, 1]"),
    ],
)
def test_a_hostile_evaluation_is_dropped_and_the_others_are_reported(tmp_path, cache_dir, replies, change, words):
    fits, evaluations = replies
    strategy = _strategy(tmp_path, cache_dir, **PLAIN)
    strategy.aggregate_fit(1, _pairs(fits), [])
    results = [
        (FakeClientProxy(str(pid)), EvaluateRes(Status(Code.OK, "ok"), 0.0, 1, {**m, **(change if pid == 0 else {})}))
        for pid, m in enumerate(evaluations)
    ]
    _, metrics = strategy.aggregate_evaluate(1, results, [])
    assert metrics["test_retrieval_top1"] == evaluations[1]["test_retrieval_top1"]  # node 1's alone
    (line,) = [m for m in read_metrics(tmp_path / "run" / "metrics.jsonl") if m["phase"] == "evaluate"]
    assert words in line["dropped"][0]["reason"]


def test_a_server_step_that_explodes_is_rolled_back_to_the_aggregated_adapters(tmp_path, cache_dir, replies):
    fits, _ = replies
    strategy = _strategy(tmp_path, cache_dir)
    strategy.aggregate_fit(1, _pairs(fits), [])  # a good round: the generator exists and has trained
    aggregated, _ = _strategy(tmp_path, cache_dir, name="plain", **PLAIN).aggregate_fit(2, _pairs(fits), [])
    before = trainer_state.snapshot(strategy.recipe.trainer)

    def finetune_gone_wrong(summaries, report, teachers=None):
        with torch.no_grad():
            for parameter in strategy.recipe.trainer.adapters.parameters():
                parameter.fill_(float("nan"))

    strategy.recipe.trainer.finetune = finetune_gone_wrong
    params, _ = strategy.aggregate_fit(2, _pairs(fits), [])
    for got, expected in zip(parameters_to_ndarrays(params), parameters_to_ndarrays(aggregated), strict=True):
        np.testing.assert_array_equal(got, expected)
    (line,) = [m for m in read_metrics(tmp_path / "run" / "metrics.jsonl") if m["phase"] == "rejected"]
    assert line["round"] == 2 and line["rejected"][0]["stage"] == "server_step"
    assert "holds NaN or Inf" in line["rejected"][0]["reason"]
    after = trainer_state.trainer_state(
        strategy.recipe.trainer
    )  # the generator as it was before round 2, not trained further
    assert after["generator_epochs"] == before["generator_epochs"] > 0
    for key, value in before["generator_state"].items():
        torch.testing.assert_close(after["generator_state"][key], value, rtol=0, atol=0)
    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / "server_generator_round_2.pt")
    assert all(torch.isfinite(t).all() for t in saved["global_adapters"].values())


# ---- fuzzing -------------------------------------------------------------------------------------
VALUES = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=8),
    st.booleans(),
    st.none(),
    st.lists(st.integers(-3, 3), max_size=4),
)


@st.composite
def mutated_replies(draw, fit):
    """A real reply with 1-3 of: a tensor of another shape or dtype, other values (NaN, Inf, huge),
    a manifest field of another type, another manifest, a metric of another type, another example
    count, a tensor left out."""
    arrays, examples, metrics = copy.deepcopy(fit)
    arrays = [a.copy() for a in arrays]
    entries = json.loads(metrics["manifest"])
    manifest: object = None  # a whole other manifest, when drawn
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["tensor", "values", "entry", "manifest", "metric", "examples", "drop"]))
        index = draw(st.integers(0, len(arrays) - 1))
        if kind == "tensor":
            shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
            arrays[index] = np.ones(shape, draw(st.sampled_from([np.float32, np.float16, np.float64, np.int32])))
        elif kind == "values":
            arrays[index] = np.full_like(arrays[index], draw(st.floats(allow_nan=True, allow_infinity=True, width=32)))
        elif kind == "entry" and index < len(entries):
            entries[index][draw(st.sampled_from(["name", "shape", "dtype", "extra"]))] = draw(VALUES)
        elif kind == "manifest":
            manifest = draw(st.one_of(st.just(json.dumps(entries[::-1])), st.just(json.dumps(entries[:-1])), VALUES))
        elif kind == "metric":
            name = draw(st.sampled_from(["partition_id", "payload_bytes", "train_loss_t5", "classes", "new"]))
            metrics[name] = draw(VALUES.filter(lambda v: not isinstance(v, list | type(None))))
        elif kind == "examples":
            examples = draw(st.integers(-5, 10**16))
        elif kind == "drop":
            del arrays[index]
    metrics["manifest"] = manifest if manifest is not None else json.dumps(entries, default=repr)
    return arrays, examples, metrics


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_no_mutated_reply_raises_out_of_aggregate_fit(data, tmp_path_factory, cache_dir, replies):
    fits, _ = replies
    mutated = data.draw(mutated_replies(fits[0]))
    strategy = _strategy(tmp_path_factory.mktemp("fuzz"), cache_dir, **PLAIN)
    try:
        res = _fit_res(*mutated)
    except Exception:  # noqa: BLE001 (Flower itself cannot serialise it: it could not have arrived)
        return
    params, metrics = strategy.aggregate_fit(1, [(FakeClientProxy("0"), res), _pairs(fits)[1]], [])
    assert params is not None and metrics["num_updates"] in (1, 2)
    assert all(np.isfinite(a).all() for a in parameters_to_ndarrays(params))


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_no_mutated_evaluation_raises_out_of_aggregate_evaluate(data, tmp_path_factory, cache_dir, replies):
    _, evaluations = replies
    metrics = dict(evaluations[0])
    names = [*metrics, "image_count", "image_labels", "image_predictions", "image_accuracy", "new"]
    for _ in range(data.draw(st.integers(1, 4))):
        metrics[data.draw(st.sampled_from(names))] = data.draw(
            st.one_of(VALUES.filter(lambda v: not isinstance(v, list | type(None))), st.just("0,1"), st.just("7,zz"))
        )
    strategy = _strategy(tmp_path_factory.mktemp("fuzz-eval"), cache_dir, **PLAIN)
    results = [
        (FakeClientProxy("0"), EvaluateRes(Status(Code.OK, "ok"), 0.0, 1, metrics)),
        (FakeClientProxy("1"), EvaluateRes(Status(Code.OK, "ok"), 0.0, 1, evaluations[1])),
    ]
    _, aggregated = strategy.aggregate_evaluate(1, results, [])
    # both dropped (e.g. node 0 now claims partition 1) or a top-1 made of valid values only
    assert aggregated == {} or 0.0 <= aggregated["test_retrieval_top1"] <= 1.0


def test_under_float16_transfer_replies_must_be_float16_and_the_state_fits_float16(tmp_path, cache_dir, replies):
    fits, _ = replies  # sent in float32
    config = tiny_config(feda2v={"transfer_dtype": "float16"}, data={"cache_dir": str(cache_dir)})
    strategy = build_strategy(config, tmp_path / "run")
    assert strategy.aggregate_fit(1, _pairs(fits), []) == (None, {"skipped": 1})
    (skipped,) = [m for m in read_metrics(tmp_path / "run" / "metrics.jsonl") if m["phase"] == "skipped"]
    assert "dtype float32 (manifest: float32), expected float16" in skipped["dropped"][0]["reason"]

    arrays = parameters_to_ndarrays(strategy.initial_parameters)
    halves = []
    for pid in range(2):
        outcome = ClientTask(config, pid, 2, cache_dir).fit(arrays, 1, None, None)
        halves.append((FakeClientProxy(str(pid)), _fit_res(outcome.arrays, outcome.num_examples, outcome.metrics)))

    def finetune_to_1e5(summaries, report, teachers=None):  # finite, below max_abs_value, but inf in float16
        with torch.no_grad():
            next(strategy.recipe.trainer.adapters.parameters()).fill_(1e5)

    strategy.recipe.trainer.finetune = finetune_to_1e5
    params, metrics = strategy.aggregate_fit(2, halves, [])
    assert metrics["num_updates"] == 2
    rejected = [m for m in read_metrics(tmp_path / "run" / "metrics.jsonl") if m["phase"] == "rejected"]
    assert "beyond federation.max_abs_value 65504" in rejected[0]["rejected"][0]["reason"]
    sent = strategy._for_transfer(params)
    assert all(np.isfinite(a).all() for a in parameters_to_ndarrays(sent))
