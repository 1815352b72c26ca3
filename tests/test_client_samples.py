"""``synthetic_source: clients``: the nodes' own generators (trained on their real clips) supply
the server fine-tuning's synthetic rows, as samples uploaded with the statistics."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import tiny_config
from feda2v_flwr.payload import ExpectedUpdate, PayloadError, decode_update, encode_update
from feda2v_flwr.training.statistics import ClassStats

CLIENT_SOURCE = {
    "generator_training_mode": True,
    "synthetic_source": "clients",
    "use_generator": False,
    "synthetic_samples_per_class": 3,
    "generator_training_epochs": 1,
    "global_model_train_epochs": 1,
}


def _stats(samples: int | None) -> ClassStats:
    return ClassStats(
        count=4,
        slot_means={"clip": np.zeros(4, np.float32)},
        audio_mean=np.zeros((2, 3), np.float32),
        audio_std=np.ones((2, 3), np.float32),
        samples=None if samples is None else np.full((samples, 2, 3), 0.5, np.float32),
    )


EXPECTED = ExpectedUpdate(
    adapter_shapes={"w": (2,)},
    slot_shapes={"clip": (4,)},
    statistics_shape=(2, 3),
    classes=["dog", "rain"],
    max_abs_value=1e6,
    samples=3,
)


def test_samples_travel_per_class_and_are_checked():
    arrays, manifest = encode_update({"w": np.ones(2, np.float32)}, {"dog": _stats(3), "rain": _stats(None)})
    _, stats, _ = decode_update(arrays, manifest, EXPECTED)
    np.testing.assert_array_equal(stats["dog"].samples, np.full((3, 2, 3), 0.5))
    assert stats["rain"].samples is None  # a class the node's generators cannot sample alone: none sent
    wrong = encode_update({"w": np.ones(2, np.float32)}, {"dog": _stats(5)})
    with pytest.raises(PayloadError, match=r"samples shape \(5, 2, 3\) != \(3, 2, 3\)"):
        decode_update(*wrong, EXPECTED)
    with pytest.raises(PayloadError, match=r"unexpected \['samples'\]"):
        decode_update(arrays, manifest, ExpectedUpdate(**{**EXPECTED.__dict__, "samples": 0}))


def test_client_samples_need_client_generators_that_know_a_samples_class():
    with pytest.raises(Exception, match="synthetic_source 'clients' uploads samples of the nodes' own generators"):
        tiny_config(feda2v={"synthetic_source": "clients"})
    with pytest.raises(Exception, match="synthetic_source 'clients' needs a sample's class"):
        tiny_config(feda2v={**CLIENT_SOURCE, "generator_conditioning": "none"})
    tiny_config(feda2v={**CLIENT_SOURCE, "generator_conditioning": "none", "generator_granularity": "per_class"})


def test_a_federation_fine_tunes_on_the_nodes_generator_samples(tmp_path, cache_dir):
    from feda2v_flwr.inprocess import run_in_process
    from feda2v_flwr.reporting import read_metrics

    run = run_in_process(tiny_config(data={"cache_dir": str(cache_dir)}, feda2v=CLIENT_SOURCE), tmp_path / "run")
    summaries = run.strategy.recipe.trainer.last_summaries
    assert not run.strategy.recipe.trainer.has_generator  # no server generator: the rows are the nodes'
    for summary in summaries.values():
        assert summary.client_samples.shape == (3, *summary.client_audio_means[0].shape)
        assert summary.client_samples.isfinite().all() and summary.client_samples.std() > 0
    metrics = read_metrics(tmp_path / "run" / "metrics.jsonl")
    fits = [m for m in metrics if m["phase"] == "fit"]
    assert all(m["failures"] == [] and m["dropped"] == [] for m in fits)
    assert all("generator_loss" in c for m in fits for c in m["clients"].values())  # the nodes trained theirs
    finetune = [m for m in metrics if m["phase"] == "finetune"]
    assert [m["synthetic_samples"] for m in finetune] == [12, 12]  # 4 classes x 3 samples, each round
