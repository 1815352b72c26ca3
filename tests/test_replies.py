"""Checks of what nodes send: metric types and sizes, evaluation values, partition ownership."""

from __future__ import annotations

import math

import pytest
from flwr.app import ConfigRecord

from feda2v_flwr.payload import PayloadError
from feda2v_flwr.replies import (
    EVALUATE_STRINGS,
    FIT_STRINGS,
    PartitionOwners,
    check_evaluation,
    checked_metrics,
    integer_metric,
)

GOOD_FIT = {"partition_id": 0, "manifest": "[]", "classes": "dog,siren", "payload_bytes": 1024, "train_loss_clip": 0.5}


def test_well_formed_metrics_pass_unchanged():
    assert checked_metrics(GOOD_FIT, FIT_STRINGS) == GOOD_FIT
    # through Flower's transport the metrics arrive as a ConfigRecord, a mapping that is no dict
    assert checked_metrics(ConfigRecord(GOOD_FIT), FIT_STRINGS) == GOOD_FIT


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("payload_bytes", "1024", "metric payload_bytes: a str, expected a number"),
        ("train_loss_clip", "0.5", "metric train_loss_clip: a str, expected a number"),
        ("train_loss_clip", b"\x00", "metric train_loss_clip: a bytes, expected a number"),
        ("train_loss_clip", True, "metric train_loss_clip: a bool, expected a number"),
        ("train_loss_clip", math.nan, "is not a finite number"),
        ("train_loss_clip", 1e300, "is not a finite number within"),
        ("manifest", 3, "metric manifest: expected a string"),
        ("classes", "x" * 70_000, "expected a string of at most 65536 characters, got 70000"),
        ("n" * 200, 1, "not a string of at most 128 characters"),
    ],
)
def test_a_mistyped_or_oversized_metric_is_refused_with_its_name(name, value, reason):
    with pytest.raises(PayloadError, match=reason.replace("(", r"\(")):
        checked_metrics({**GOOD_FIT, name: value}, FIT_STRINGS)


def test_a_fifty_megabyte_string_and_too_many_metrics_are_refused():
    with pytest.raises(PayloadError, match="manifest"):
        checked_metrics({**GOOD_FIT, "manifest": "[" + " " * 50_000_000 + "]"}, FIT_STRINGS)
    with pytest.raises(PayloadError, match="300 metrics"):
        checked_metrics({f"m{i}": i for i in range(300)}, FIT_STRINGS)
    with pytest.raises(PayloadError, match="not a mapping"):
        checked_metrics(["partition_id", 0], FIT_STRINGS)


def test_integer_metrics_take_whole_numbers_in_range_only():
    assert integer_metric({"n": 3}, "n", 1, 5) == 3
    assert integer_metric({"n": 3.0}, "n", 1, 5) == 3
    for value in (0, 6, 2.5, True, "3", None):
        with pytest.raises(PayloadError, match="expected an integer in 1..5"):
            integer_metric({"n": value}, "n", 1, 5)


EVALUATION = {
    "partition_id": 1,
    "val_examples": 4,
    "test_examples": 8,
    "test_retrieval_top1": 0.75,
    "test_cosine_clip": 0.9,
    "test_mse": 0.3,
    "image_count": 2,
    "image_accuracy": 0.5,
    "image_labels": "0,3",
    "image_predictions": "0,1",
}


def test_a_plausible_evaluation_passes():
    check_evaluation(checked_metrics(EVALUATION, EVALUATE_STRINGS), num_classes=4, max_examples=40)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"test_retrieval_top1": 1e300}, "test_retrieval_top1 is 1e\\+300, outside \\[0, 1\\]"),
        ({"test_retrieval_top1": -0.1}, "outside \\[0, 1\\]"),
        ({"test_cosine_clip": 2.0}, "test_cosine_clip is 2.0"),
        ({"test_mse": -1.0}, "test_mse is -1.0"),
        ({"test_examples": 10**9}, "test_examples is 1000000000, expected an integer in 0..40"),
        ({"val_examples": -1}, "val_examples is -1"),
        ({"image_accuracy": 3.0}, "image_accuracy is 3.0"),
        ({"image_labels": "0,9"}, "image_labels holds a class index outside 0..3"),
        ({"image_labels": "zero,one"}, "image_labels is not comma-separated class indices"),
        ({"image_predictions": "0"}, "image_predictions holds 1 labels for image_count 2"),
    ],
)
def test_implausible_evaluations_are_refused(change, reason):
    with pytest.raises(PayloadError, match=reason):
        check_evaluation({**EVALUATION, **change}, num_classes=4, max_examples=40)


def test_a_partition_is_bound_to_the_first_node_that_claims_it():
    owners = PartitionOwners()
    assert owners.admit([("a", 0), ("b", 1)], connected={"a", "b"}) == ({}, [])
    # node c claims partition 0 while its owner a is still connected: refused, a goes on
    refused, notes = owners.admit([("c", 0), ("a", 0), ("b", 1)], connected={"a", "b", "c"})
    assert refused == {0: "partition 0 belongs to node a, which is still connected"} and notes == []
    # a node bound to one partition cannot speak for another
    refused, _ = owners.admit([("b", 0)], connected={"a", "b"})
    assert refused == {0: "node b speaks for partition 1, not 0"}


def test_a_restarted_node_under_a_new_id_takes_its_partition_over():
    owners = PartitionOwners()
    owners.admit([("a", 0), ("b", 1)], connected={"a", "b"})
    refused, notes = owners.admit([("a2", 0), ("b", 1)], connected={"a2", "b"})
    assert refused == {} and notes == ["partition 0: node a2 takes over from a"]
    assert owners.owners == {0: "a2", 1: "b"}


def test_two_claims_on_a_free_partition_are_both_refused_in_any_order():
    for claims in ([("x", 0), ("y", 0), ("z", 1)], [("z", 1), ("y", 0), ("x", 0)]):
        owners = PartitionOwners()
        refused, _ = owners.admit(claims, connected={"x", "y", "z"})
        assert sorted(refused.values()) == ["2 replies from nodes x, y claim partition 0: none is used"] * 2
        assert owners.owners == {1: "z"}


@pytest.mark.parametrize(
    ("pictures", "words"),
    [
        ({"image_labels": "zz"}, "image_count is None"),
        ({"image_count": 0, "image_labels": "0,1", "image_predictions": "0"}, "image_labels holds 2 labels"),
        ({"image_labels": "0,99", "image_predictions": "0,1"}, "image_count is None"),
        ({"image_count": 2, "image_labels": "0,1"}, "image_count is 2 but image_predictions is missing"),
    ],
)
def test_picture_metrics_are_checked_whenever_any_of_them_is_sent(pictures, words):
    plain = {k: v for k, v in EVALUATION.items() if not k.startswith("image_")}
    with pytest.raises(PayloadError, match=words):
        check_evaluation({**plain, **pictures}, num_classes=4, max_examples=40)
    check_evaluation(plain, num_classes=4, max_examples=40)
