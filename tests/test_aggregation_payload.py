import dataclasses
import json

import numpy as np
import pytest

from feda2v_flwr.payload import ExpectedUpdate, PayloadError, decode_update, encode_update
from feda2v_flwr.server.recipe import state_problem
from feda2v_flwr.training.statistics import ClassStats
from strategies.aggregation import aggregate_adapters, coordinate_median, trimmed_mean, weighted_average

STATES = [{"w": np.array([1.0, 2.0], dtype=np.float32)}, {"w": np.array([3.0, 6.0], dtype=np.float32)}]


def test_weighted_average_matches_numpy_and_hand_numbers():
    out = aggregate_adapters("avg", STATES, [10, 30], current={})
    np.testing.assert_allclose(out["w"], [2.5, 5.0])
    np.testing.assert_allclose(out["w"], np.average([s["w"] for s in STATES], axis=0, weights=[10, 30]))
    assert out["w"].dtype == np.float32


def test_unweighted_average_and_standalone():
    np.testing.assert_allclose(aggregate_adapters("avg_unweighted", STATES, [10, 30], current={})["w"], [2.0, 4.0])
    current = {"w": np.array([9.0, 9.0], dtype=np.float32)}
    np.testing.assert_array_equal(aggregate_adapters("none", STATES, [10, 30], current)["w"], current["w"])
    with pytest.raises(ValueError, match="kd"):
        aggregate_adapters("kd", STATES, [1, 1], current)
    with pytest.raises(ValueError):
        weighted_average(STATES, [0, 0])


def test_coordinate_median_and_trimmed_mean_match_numpy_and_ignore_an_outlier():
    states = [{"w": np.array([v, -v], dtype=np.float32)} for v in (1.0, 2.0, 3.0, 4.0, 1e30)]
    np.testing.assert_array_equal(coordinate_median(states)["w"], [3.0, -3.0])
    np.testing.assert_array_equal(aggregate_adapters("median", states, [1] * 5, {})["w"], [3.0, -3.0])
    # 5 nodes, trim 0.2: the largest and the smallest value of each coordinate go
    np.testing.assert_allclose(trimmed_mean(states, 0.2)["w"], [3.0, -3.0])
    np.testing.assert_allclose(
        aggregate_adapters("trimmed_mean", states, [1] * 5, {}, trim_fraction=0.0)["w"],
        np.mean([s["w"] for s in states], axis=0, dtype=np.float64).astype(np.float32),
    )
    two = [{"w": np.array([1.0, 5.0], dtype=np.float32)}, {"w": np.array([3.0, 7.0], dtype=np.float32)}]
    np.testing.assert_array_equal(coordinate_median(two)["w"], [2.0, 6.0])  # even count: the middle two averaged
    assert trimmed_mean(two, 0.4)["w"].tolist() == [2.0, 6.0]  # floor(0.4 * 2) = 0 cut


def test_state_problem_names_non_finite_and_exploding_tensors():
    assert state_problem({"w": np.ones(3, np.float32)}, 10.0) is None
    assert state_problem({"w": np.array([1.0, np.nan], np.float32)}, 10.0) == "w holds NaN or Inf"
    assert "w holds values up to 1e+30, beyond federation.max_abs_value 10" in state_problem(
        {"w": np.array([1.0, 1e30], np.float32)}, 10.0
    )


def _stats(value: float = 1.0) -> ClassStats:
    return ClassStats(
        count=4,
        slot_means={"clip": np.full(3, value, np.float32), "t5": np.full((2, 3), value, np.float32)},
        audio_mean=np.full((5, 4), value, np.float32),
        audio_std=np.ones((5, 4), np.float32),
        val_count=2,
        val_audio_mean=np.zeros((5, 4), np.float32),
    )


EXPECTED = ExpectedUpdate(
    adapter_shapes={"w": (2,)},
    slot_shapes={"clip": (3,), "t5": (2, 3)},
    statistics_shape=(5, 4),
    classes=["dog", "rain"],
    max_abs_value=1e6,
    class_sizes={"dog": 3000, "rain": 3000},
)


def test_payload_round_trip():
    arrays, manifest = encode_update({"w": STATES[0]["w"]}, {"dog": _stats(2.0)})
    adapters, stats, problem = decode_update(arrays, manifest, EXPECTED)
    assert problem is None
    np.testing.assert_array_equal(adapters["w"], STATES[0]["w"])
    assert stats["dog"].count == 4 and stats["dog"].val_count == 2
    np.testing.assert_array_equal(stats["dog"].slot_means["t5"], np.full((2, 3), 2.0))


def _replace(arrays, manifest, name, array):
    """The reply with tensor ``name`` swapped for ``array``, manifest updated to match."""
    entries = json.loads(manifest)
    index = next(i for i, e in enumerate(entries) if e["name"] == name)
    entries[index].update(shape=list(array.shape), dtype=str(array.dtype))
    return arrays[:index] + [array] + arrays[index + 1 :], json.dumps(entries)


def _drop(arrays, manifest, name):
    entries = json.loads(manifest)
    index = next(i for i, e in enumerate(entries) if e["name"] == name)
    return arrays[:index] + arrays[index + 1 :], json.dumps(entries[:index] + entries[index + 1 :])


@pytest.mark.parametrize(
    "corrupt, reason",
    [
        (lambda a, m: (a[:1] + [a[1] * np.nan] + a[2:], m), "NaN"),
        (lambda a, m: ([a[0][:1]] + a[1:], m), "shape"),
        (lambda a, m: (a, m.replace("stats/dog", "stats/cat")), "unknown class 'cat'"),
        (lambda a, m: (a[1:], json.dumps(json.loads(m)[1:])), "adapter tensors differ"),
        (lambda a, m: (a, "not json"), "manifest"),
        (lambda a, m: (a, 42), "the manifest is a int, not a JSON string"),
        (
            lambda a, m: (a, json.dumps([{k: v for k, v in e.items() if k != "shape"} for e in json.loads(m)])),
            "exactly name, shape and dtype",
        ),
        (lambda a, m: (a, json.dumps([{**e, "name": 7} for e in json.loads(m)])), "is not adapter/... or stats/..."),
        (lambda a, m: (a, json.dumps([{**e, "shape": [True]} for e in json.loads(m)])), "is not a list of sizes"),
        (lambda a, m: (a[:-1] + [a[0]], json.dumps(json.loads(m)[:-1] + json.loads(m)[:1])), "names a tensor twice"),
        (lambda a, m: (a[:2] + [a[2] * 1e30] + a[3:], m), "beyond federation.max_abs_value"),
        (lambda a, m: _replace(a, m, "stats/dog/count", np.zeros((0,), np.float32)), "count shape"),
        (
            lambda a, m: _replace(a, m, "stats/dog/count", np.array([2.5], np.float32)),
            "count 2.5 is not a whole number",
        ),
        (lambda a, m: _replace(a, m, "stats/dog/count", np.array([1e15], np.float32)), "in 1..3000"),
        (lambda a, m: _replace(a, m, "stats/dog/audio_mean", np.ones((7, 4), np.float32)), "audio_mean shape"),
        (lambda a, m: _replace(a, m, "stats/dog/audio_std", np.ones((5, 4, 1), np.float32)), "audio_std shape"),
        (lambda a, m: _replace(a, m, "stats/dog/val_audio_mean", np.ones((5,), np.float32)), "val_audio_mean shape"),
        (lambda a, m: _replace(a, m, "stats/dog/audio_std", -np.ones((5, 4), np.float32)), "negative audio std"),
        (lambda a, m: _drop(a, m, "stats/dog/audio_std"), "missing statistics \\['audio_std'\\]"),
        (lambda a, m: _drop(a, m, "stats/dog/val_count"), "val_count and val_audio_mean come together"),
    ],
)
def test_bad_replies_are_rejected_with_a_reason(corrupt, reason):
    arrays, manifest = encode_update({"w": STATES[0]["w"]}, {"dog": _stats()})
    with pytest.raises(PayloadError, match=reason):
        decode_update(*corrupt(list(arrays), manifest), EXPECTED)


def test_float16_transfer_halves_the_bytes_keeps_counts_exact_and_decodes_to_float32():
    stats = _stats(1.0 / 3.0)
    stats = ClassStats(**{**stats.__dict__, "count": 2049})  # not representable in float16
    full, _ = encode_update({"w": STATES[0]["w"]}, {"dog": stats})
    half, manifest = encode_update({"w": STATES[0]["w"]}, {"dog": stats}, "float16")
    counts = [a for a, entry in zip(half, json.loads(manifest), strict=True) if entry["name"].endswith("count")]
    assert all(a.dtype == np.float32 for a in counts)
    assert sum(a.nbytes for a in half) < 0.6 * sum(a.nbytes for a in full)
    expected_half = dataclasses.replace(EXPECTED, transfer_dtype="float16")
    adapters, decoded, _ = decode_update(half, manifest, expected_half)
    assert adapters["w"].dtype == np.float32 and decoded["dog"].count == 2049
    np.testing.assert_allclose(decoded["dog"].slot_means["clip"], 1.0 / 3.0, rtol=1e-3)
    with pytest.raises(PayloadError, match="adapter/w: dtype float16 \\(manifest: float16\\), expected float32"):
        decode_update(half, manifest, EXPECTED)  # a float32 federation takes float32 only
    with pytest.raises(PayloadError, match="dtype float32 \\(manifest: float32\\), expected float16"):
        decode_update(full, json.dumps([{**e, "dtype": "float32"} for e in json.loads(manifest)]), expected_half)

    overflow, manifest = encode_update({"w": np.array([1e5, 0.0], np.float32)}, {"dog": stats}, "float16")
    adapters, decoded, problem = decode_update(overflow, manifest, expected_half)  # only the adapters overflowed
    assert adapters is None and "adapter/w: contains NaN or Inf (float16 overflows beyond" in problem
    assert decoded["dog"].count == 2049
    mislabelled = json.dumps([{**entry, "dtype": "float32"} for entry in json.loads(manifest)])
    with pytest.raises(PayloadError, match="manifest: float32"):
        decode_update(half, mislabelled, expected_half)


def test_bad_adapter_values_drop_the_adapters_but_keep_the_statistics():
    arrays, manifest = encode_update({"w": STATES[0]["w"]}, {"dog": _stats(2.0)})
    for bad in (np.array([1e30, 0.0], np.float32), np.array([np.inf, 0.0], np.float32)):
        adapters, stats, problem = decode_update([bad, *arrays[1:]], manifest, EXPECTED)
        assert adapters is None and problem.startswith("adapter/w: ")
        np.testing.assert_array_equal(stats["dog"].slot_means["t5"], np.full((2, 3), 2.0))
