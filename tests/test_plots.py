"""Run plots: the PCA maths, the files a finished round leaves, and the snapshot's RNG hygiene."""

from __future__ import annotations

import numpy as np
import torch
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from PIL import Image

from conftest import FakeClientProxy, tiny_config
from feda2v_flwr.reporting import plots
from feda2v_flwr.reporting.plots import EMBEDDINGS_FILE, pca_2d, write_run_plots
from feda2v_flwr.server.run_log import embedding_snapshot
from feda2v_flwr.server_app import build_strategy
from feda2v_flwr.training.task import ClientTask

PLOTS = {"losses.png", "evaluation.png", "generator_validation.png", "embeddings_pca.png"}


def test_pca_keeps_the_two_directions_of_largest_variance():
    rng = np.random.default_rng(0)
    # 3-D points: variance 100 along x, 4 along z, almost none along y
    points = np.column_stack([rng.normal(0, 10, 500), rng.normal(0, 0.01, 500), rng.normal(0, 2, 500)])
    projected = pca_2d(points)
    assert projected.shape == (500, 2)
    variances = projected.var(axis=0)
    np.testing.assert_allclose(variances, [points[:, 0].var(), points[:, 2].var()], rtol=1e-3)
    assert abs(np.corrcoef(projected[:, 0], points[:, 0])[0, 1]) > 0.999


def _last_round(tmp_path, cache_dir, **feda2v):
    config = tiny_config(feda2v=feda2v, federation={"global_rounds": 1}, data={"cache_dir": str(cache_dir)})
    strategy = build_strategy(config, tmp_path / "run")
    arrays = parameters_to_ndarrays(strategy.initial_parameters)
    replies = []
    for pid in range(2):
        outcome = ClientTask(config, pid, 2, cache_dir).fit(arrays, 1, None, None)
        res = FitRes(
            Status(Code.OK, "ok"), ndarrays_to_parameters(outcome.arrays), outcome.num_examples, outcome.metrics
        )
        replies.append((FakeClientProxy(str(pid)), res))
    strategy.aggregate_fit(1, replies, [])
    return strategy


def test_the_last_round_writes_every_plot_and_the_embeddings(tmp_path, cache_dir):
    strategy = _last_round(tmp_path, cache_dir)
    plots = tmp_path / "run" / "plots"
    assert {p.name for p in plots.glob("*.png")} == PLOTS
    for name in PLOTS:
        with Image.open(plots / name) as image:
            assert image.size[0] > 400 and image.size[1] > 300
    with np.load(plots / EMBEDDINGS_FILE) as saved:
        classes = list(saved["classes"])
        assert sorted(classes) == sorted(strategy.recipe.classes)
        assert saved["real"].shape == (4, 48)  # one class mean per (node, class): 2 nodes x 2 classes
        assert saved["synthetic"].shape == (4 * 20, 48)
        assert sorted(set(saved["synthetic_labels"])) == [0, 1, 2, 3]
    # rewriting from the files alone gives the same set (the standalone command)
    assert {p.name for p in write_run_plots(tmp_path / "run")} == PLOTS


def test_the_snapshot_does_not_move_the_generators_random_stream(tmp_path, cache_dir):
    strategy = _last_round(tmp_path, cache_dir)
    before = strategy.recipe.trainer.rng.get_state().clone()
    assert embedding_snapshot(strategy.recipe.trainer, num_samples=3) is not None
    assert torch.equal(strategy.recipe.trainer.rng.get_state(), before)


def test_without_a_server_generator_there_is_no_embedding_plot(tmp_path, cache_dir):
    _last_round(tmp_path, cache_dir, use_generator=False)
    names = {p.name for p in (tmp_path / "run" / "plots").glob("*.png")}
    assert names == PLOTS - {"embeddings_pca.png"}


def test_a_plot_with_nothing_to_draw_says_why_on_its_face(tmp_path, monkeypatch):
    said = []
    original = plots._say_why_empty
    monkeypatch.setattr(plots, "_say_why_empty", lambda fig, reason: said.append(reason) or original(fig, reason))
    generator_only = [{"round": 1, "phase": "generator", "loss": 0.5}, {"round": 1, "phase": "fit"}]
    plots.plot_generator_validation(generator_only, tmp_path / "validation.png")
    plots.plot_generator_validation([], tmp_path / "none.png")
    plots.plot_evaluation([], tmp_path / "evaluation.png")
    assert said[0].startswith("the generator was never validated: no class had val clips")
    assert said[1].startswith("no server generator in this run")
    assert said[2].startswith("no evaluation with test clips in this run")
    assert all((tmp_path / name).stat().st_size > 0 for name in ("validation.png", "none.png", "evaluation.png"))
