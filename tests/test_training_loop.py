"""The shared mini-batch epoch: the shuffle it draws and the mean losses it reports, in numbers."""

import torch

from feda2v_flwr.training.loop import EpochLosses, shuffled_batches


def test_batches_cut_one_seeded_permutation_and_a_short_last_batch():
    batches = list(shuffled_batches(5, 2, torch.Generator().manual_seed(0)))
    order = torch.randperm(5, generator=torch.Generator().manual_seed(0))
    assert [b.tolist() for b in batches] == [order[:2].tolist(), order[2:4].tolist(), order[4:].tolist()]
    assert sorted(torch.cat(batches).tolist()) == [0, 1, 2, 3, 4]
    assert list(shuffled_batches(0, 2, torch.Generator().manual_seed(0))) == []


def test_epoch_losses_are_means_per_row_weighted_by_batch_size():
    losses = EpochLosses(["clip", "t5"])
    losses.add({"clip": torch.tensor(1.0), "t5": torch.tensor(3.0)}, 2)
    losses.add({"clip": torch.tensor(4.0), "t5": torch.tensor(0.0)}, 1)
    assert losses.rows == 3
    assert losses.means() == {"clip": 2.0, "t5": 2.0}  # (1 x 2 + 4) / 3 and (3 x 2 + 0) / 3
