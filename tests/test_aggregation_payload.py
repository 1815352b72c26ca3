import json

import numpy as np
import pytest

from feda2v_flwr.payload import PayloadError, decode_update, encode_update
from feda2v_flwr.training.statistics import ClassStats
from strategies.aggregation import aggregate_adapters, weighted_average

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


def _stats(value: float = 1.0) -> ClassStats:
    return ClassStats(
        count=4,
        slot_means={"clip": np.full(3, value, np.float32), "t5": np.full((2, 3), value, np.float32)},
        audio_mean=np.full((5, 4), value, np.float32),
        audio_std=np.ones((5, 4), np.float32),
        val_count=2,
        val_audio_mean=np.zeros((5, 4), np.float32),
    )


DECODE = dict(adapter_shapes={"w": (2,)}, known_classes=["dog", "rain"], slot_shapes={"clip": (3,), "t5": (2, 3)})


def test_payload_round_trip():
    arrays, manifest = encode_update({"w": STATES[0]["w"]}, {"dog": _stats(2.0)})
    adapters, stats = decode_update(arrays, manifest, **DECODE)
    np.testing.assert_array_equal(adapters["w"], STATES[0]["w"])
    assert stats["dog"].count == 4 and stats["dog"].val_count == 2
    np.testing.assert_array_equal(stats["dog"].slot_means["t5"], np.full((2, 3), 2.0))


@pytest.mark.parametrize(
    "corrupt, reason",
    [
        (lambda a, m: (a[:1] + [a[1] * np.nan] + a[2:], m), "NaN"),
        (lambda a, m: ([a[0][:1]] + a[1:], m), "shape"),
        (lambda a, m: (a, m.replace("stats/dog", "stats/cat")), "unknown class 'cat'"),
        (lambda a, m: (a[1:], json.dumps(json.loads(m)[1:])), "adapter tensors differ"),
        (lambda a, m: (a, "not json"), "manifest"),
    ],
)
def test_bad_replies_are_rejected_with_a_reason(corrupt, reason):
    arrays, manifest = encode_update({"w": STATES[0]["w"]}, {"dog": _stats()})
    with pytest.raises(PayloadError, match=reason):
        decode_update(*corrupt(list(arrays), manifest), **DECODE)


def test_float16_transfer_halves_the_bytes_keeps_counts_exact_and_decodes_to_float32():
    stats = _stats(1.0 / 3.0)
    stats = ClassStats(**{**stats.__dict__, "count": 2049})  # not representable in float16
    full, _ = encode_update({"w": STATES[0]["w"]}, {"dog": stats})
    half, manifest = encode_update({"w": STATES[0]["w"]}, {"dog": stats}, "float16")
    counts = [a for a, entry in zip(half, json.loads(manifest), strict=True) if entry["name"].endswith("count")]
    assert all(a.dtype == np.float32 for a in counts)
    assert sum(a.nbytes for a in half) < 0.6 * sum(a.nbytes for a in full)
    adapters, decoded = decode_update(half, manifest, **DECODE)
    assert adapters["w"].dtype == np.float32 and decoded["dog"].count == 2049
    np.testing.assert_allclose(decoded["dog"].slot_means["clip"], 1.0 / 3.0, rtol=1e-3)

    overflow, manifest = encode_update({"w": np.array([1e5, 0.0], np.float32)}, {"dog": stats}, "float16")
    with pytest.raises(PayloadError, match="overflows beyond"):
        decode_update(overflow, manifest, **DECODE)
    mislabelled = json.dumps([{**entry, "dtype": "float32"} for entry in json.loads(manifest)])
    with pytest.raises(PayloadError, match="as in the manifest"):
        decode_update(half, mislabelled, **DECODE)
