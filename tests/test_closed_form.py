"""The same-information heads, checked against numbers worked out by hand."""

from __future__ import annotations

import pytest
import torch

from feda2v_flwr.evaluation.closed_form import (
    HEADS,
    ClassStatistics,
    diagonal_lda,
    fedpft_head,
    gaussian_naive_bayes,
    head_metrics,
    nearest_class_mean,
)


def _stats(means, variances, counts) -> ClassStatistics:
    return ClassStatistics(torch.tensor(means), torch.tensor(variances), torch.tensor(counts))


def test_pooling_two_clients_gives_the_moments_of_their_data_together():
    a, b = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 8.0]]), torch.tensor([[10.0, -1.0]])
    uploads = [(3, a.mean(0), a.std(0, unbiased=False)), (1, b.mean(0), b.std(0, unbiased=False))]
    pooled = ClassStatistics.pooled([uploads])
    together = torch.cat([a, b])
    assert torch.allclose(pooled.means[0], together.mean(0))  # [4, 2.75]; E[x^2] = [30, 18.75]
    assert torch.allclose(pooled.variances[0], together.var(0, unbiased=False))  # [30 - 16, 18.75 - 7.5625]
    assert torch.allclose(pooled.variances[0], torch.tensor([14.0, 11.1875])) and pooled.counts.tolist() == [4.0]


def test_nearest_class_mean_cosine_and_euclidean_disagree_where_they_should():
    stats = _stats([[1.0, 0.0], [10.0, 10.0]], [[1.0, 1.0], [1.0, 1.0]], [1.0, 1.0])
    x = torch.tensor([[3.0, 2.9]])  # Euclidean: nearer (1, 0) (2.9 vs 9.9); cosine: along (10, 10)
    assert nearest_class_mean(stats, x, "euclidean").tolist() == [0]
    assert nearest_class_mean(stats, x, "cosine").tolist() == [1]
    with pytest.raises(ValueError, match="cosine, euclidean"):
        nearest_class_mean(stats, x, "manhattan")


def test_naive_bayes_uses_the_variances_and_lda_shares_them():
    # class 0 is tight around 0, class 1 wide around 3: x = 1.5 is 1.5 sigma from class 0 but
    # only 0.5 sigma from class 1 (log-likelihoods -1.125 vs -0.125 - log 3 = -1.224 -> class 0;
    # x = 1.8: -1.62 vs -0.08 - 1.10 = -1.18 -> class 1)
    stats = _stats([[0.0], [3.0]], [[1.0], [9.0]], [1.0, 1.0])
    assert gaussian_naive_bayes(stats, torch.tensor([[1.5], [1.8]])).tolist() == [0, 1]
    # LDA with the shared variance 5: a linear rule, the boundary at the midpoint 1.5
    assert diagonal_lda(stats, torch.tensor([[1.49], [1.51]])).tolist() == [0, 1]
    # priors move the boundary: 9 of 10 clips in class 1 -> x = 1.0 goes to class 1 under LDA
    skewed = _stats([[0.0], [3.0]], [[1.0], [9.0]], [1.0, 9.0])
    assert diagonal_lda(skewed, torch.tensor([[1.0]])).tolist() == [1]  # 1.0 * 0.6 - 0.9 + log 9 > log 1


def test_the_fedpft_head_learns_separable_gaussians_and_is_seeded():
    stats = _stats([[0.0, 0.0], [4.0, 4.0], [0.0, 4.0]], [[0.25, 0.25]] * 3, [10.0, 10.0, 10.0])
    points = torch.tensor([[0.2, -0.1], [3.8, 4.3], [0.1, 3.7]])
    assert fedpft_head(stats, points).tolist() == [0, 1, 2]
    assert torch.equal(fedpft_head(stats, points * 0.5, seed=3), fedpft_head(stats, points * 0.5, seed=3))


def test_a_head_is_scored_by_the_targets_it_emits():
    targets = {"clip": torch.tensor([[1.0, 0.0], [0.0, 1.0]]), "t5": torch.eye(2)[:, None, :].repeat(1, 3, 1)}
    labels = torch.tensor([0, 1, 1, 0])
    metrics = head_metrics(torch.tensor([0, 1, 0, 0]), labels, targets)  # 3 of 4 right
    assert metrics["retrieval_top1"] == pytest.approx(0.75)
    assert metrics["cosine_clip"] == pytest.approx(0.75)  # 1, 1, 0, 1
    assert metrics["mse_clip"] == pytest.approx(0.25)  # one wrong row: (1 + 1) / 2 over 4 rows
    for name, head in HEADS.items():  # every head returns one class per row
        stats = _stats([[1.0, 0.0], [0.0, 1.0]], [[0.1, 0.1]] * 2, [1.0, 1.0])
        assert head(stats, torch.tensor([[0.9, 0.1], [0.2, 1.1]])).tolist() == [0, 1], name
