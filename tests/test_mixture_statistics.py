"""Gaussian-mixture uploads (``feda2v.statistics_components`` K > 1, FedPFT): fitted on the
clients, checked on arrival, sampled by the server."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny_config
from feda2v_flwr.encoders import PROFILE_SLOTS
from feda2v_flwr.payload import ExpectedUpdate, PayloadError, decode_update, encode_update
from feda2v_flwr.server.class_summary import ClassSummary, draw_from_mixture, draw_from_statistics
from feda2v_flwr.server.generator_trainer import ServerGeneratorTrainer
from feda2v_flwr.training.adapters import build_model
from feda2v_flwr.training.statistics import ClassStats, class_statistics, fit_mixture

CENTRES = (-3.0, 3.0)


def _two_clusters(per_cluster: int = 20, seed: int = 0) -> torch.Tensor:
    """(2 * per_cluster, 2, 3) rows around -3 and +3 with std 0.5, the first cluster first."""
    rng = np.random.default_rng(seed)
    rows = [c + 0.5 * rng.standard_normal((per_cluster, 2, 3)) for c in CENTRES]
    return torch.from_numpy(np.concatenate(rows)).float()


def test_a_two_component_fit_finds_two_well_separated_clusters():
    mixture = fit_mixture(_two_clusters(per_cluster=30), components=2, seed=0)
    order = np.argsort(mixture.means.mean(axis=(1, 2)))
    np.testing.assert_allclose(mixture.weights[order], [0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(mixture.means[order].mean(axis=(1, 2)), CENTRES, atol=0.2)
    np.testing.assert_allclose(mixture.stds.mean(), 0.5, atol=0.1)  # the clusters' own spread, not the 3.0 between
    assert mixture.means.shape == mixture.stds.shape == (2, 2, 3) and mixture.weights.dtype == np.float32


def test_fewer_clips_than_components_leave_the_extra_components_unweighted():
    rows = _two_clusters(per_cluster=1)  # 2 clips, 4 components asked
    mixture = fit_mixture(rows, components=4, seed=0)
    assert mixture.weights.tolist()[2:] == [0.0, 0.0] and mixture.weights.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(mixture.means[2], rows.mean(0).numpy(), rtol=1e-6)  # placeholders: the class's own


def test_class_statistics_add_a_seeded_mixture_only_when_asked():
    rows = _two_clusters()
    labels = torch.zeros(len(rows), dtype=torch.long)
    kwargs = {
        "classes": ["dog"],
        "class_index": {"dog": 0},
        "train_embeddings": rows,
        "train_labels": labels,
        "train_outputs": {"clip": torch.zeros(len(rows), 4)},
    }
    assert class_statistics(**kwargs)["dog"].mixture is None
    first, again = (class_statistics(**kwargs, components=3, seed=7)["dog"].mixture for _ in range(2))
    np.testing.assert_array_equal(first.means, again.means)


def _stats_with_mixture(weights=(0.25, 0.75)) -> ClassStats:
    rows = _two_clusters()
    mixture = fit_mixture(rows, components=2, seed=0)
    mixture.weights = np.asarray(weights, np.float32)
    return ClassStats(
        count=len(rows),
        slot_means={"clip": np.zeros(4, np.float32)},
        audio_mean=rows.mean(0).numpy(),
        audio_std=rows.std(0).numpy(),
        mixture=mixture,
    )


EXPECTED = ExpectedUpdate(
    adapter_shapes={"w": (2,)},
    slot_shapes={"clip": (4,)},
    statistics_shape=(2, 3),
    classes=["dog"],
    max_abs_value=1e6,
    components=2,
)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_a_mixture_travels_and_is_checked(dtype):
    arrays, manifest = encode_update({"w": np.ones(2, np.float32)}, {"dog": _stats_with_mixture()}, dtype)
    expected = ExpectedUpdate(**{**EXPECTED.__dict__, "transfer_dtype": dtype})
    _, stats, _ = decode_update(arrays, manifest, expected)
    received = stats["dog"].mixture
    np.testing.assert_allclose(received.weights, [0.25, 0.75], atol=1e-3)
    np.testing.assert_allclose(received.means, _stats_with_mixture().mixture.means, rtol=1e-3, atol=1e-3)
    # A mixture is required when K > 1, and refused when K is 1 (the federation's uploads all have one form).
    plain = ClassStats(**{**_stats_with_mixture().__dict__, "mixture": None})
    with pytest.raises(PayloadError, match=r"missing statistics \['mixture_means', 'mixture_stds', 'mixture_w"):
        decode_update(*encode_update({"w": np.ones(2, np.float32)}, {"dog": plain}), EXPECTED)
    with pytest.raises(PayloadError, match=r"unexpected \['mixture_means'"):
        decode_update(arrays, manifest, ExpectedUpdate(**{**expected.__dict__, "components": 1}))


@pytest.mark.parametrize("weights", [(0.5, 0.6), (-0.5, 1.5)])
def test_mixture_weights_that_are_no_distribution_drop_the_reply(weights):
    arrays, manifest = encode_update({"w": np.ones(2, np.float32)}, {"dog": _stats_with_mixture(weights)})
    with pytest.raises(PayloadError, match="mixture weights .* are not >= 0 with sum 1"):
        decode_update(arrays, manifest, EXPECTED)


def test_the_gaussian_server_generator_samples_the_mixture_by_its_weights():
    config = tiny_config(feda2v={"generator_type": "gaussian", "statistics_components": 2})
    adapters = build_model(config, PROFILE_SLOTS["minilm"], 3)
    trainer = ServerGeneratorTrainer(config=config, adapters=adapters, input_dim=3, slot_shapes={"clip": (384,)})
    summary = ClassSummary.merge([_stats_with_mixture((0.25, 0.75))])
    draws = draw_from_mixture(summary, 4000, 2, interpolation="linear", rng=trainer.rng).mean(dim=(1, 2))
    high = float((draws > 0).float().mean())
    # Which cluster is component 0 depends on the fit: the share above 0 is one of the two weights.
    assert min(abs(high - 0.25), abs(high - 0.75)) < 0.03
    assert float(draws.abs().min()) > 1.0  # two clusters around -3 and +3, nothing between
    # The generator's training draws follow the mixture too (not one Gaussian over both clusters).
    training = draw_from_statistics(summary, 2000, trainer.rng).mean(dim=(1, 2))
    assert float(training.abs().min()) > 1.0 and 0.2 < float((training > 0).float().mean()) < 0.8


@pytest.mark.parametrize("generator_type", ["gaussian", "vae"])
def test_a_federation_with_mixture_uploads_trains_on_them(tmp_path, cache_dir, generator_type):
    """Two rounds in one process (Flower's loop, the real strategy and clients): every node's
    upload carries K = 3 components per class, accepted, and the server step samples them."""
    from feda2v_flwr.inprocess import run_in_process
    from feda2v_flwr.reporting import read_metrics

    config = tiny_config(
        data={"cache_dir": str(cache_dir)},
        feda2v={
            "statistics_components": 3,
            "generator_type": generator_type,
            "generator_training_epochs": 1,
            "global_model_train_epochs": 1,
        },
    )
    run = run_in_process(config, tmp_path / "run")
    summaries = run.strategy.recipe.trainer.last_summaries
    assert set(summaries) == {"siren", "rain", "dog", "engine"}
    for summary in summaries.values():
        assert summary.mixture_weights.shape == (1, 3)  # one node per class (disjoint classes), K = 3
        assert summary.mixture_means.shape == (1, 3, *summary.client_audio_means[0].shape)
    metrics = read_metrics(tmp_path / "run" / "metrics.jsonl")
    fits = [m for m in metrics if m["phase"] == "fit"]
    assert len(fits) == 2 and all(m["failures"] == [] and m["dropped"] == [] for m in fits)
    finetune = [m for m in metrics if m["phase"] == "finetune"]
    assert len(finetune) == 2 and all(m["synthetic_samples"] > 0 for m in finetune)
