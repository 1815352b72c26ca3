import numpy as np
import torch

from conftest import tiny_config
from feda2v_flwr.encoders import PROFILE_SLOTS
from feda2v_flwr.training.adapters import build_model
from feda2v_flwr.training.statistics import ClassStats
from strategies.server_trainer import ClassSummary, RoundReport, ServerGeneratorTrainer


def _fixed_stats(seed: int = 0) -> dict[str, list[ClassStats]]:
    rng = np.random.default_rng(seed)
    stats = {}
    for name in ("dog", "rain", "siren"):
        entries = []
        for _ in range(2):
            entries.append(
                ClassStats(
                    count=5,
                    slot_means={
                        "clip": rng.normal(size=384).astype(np.float32),
                        "t5": rng.normal(size=(17, 384)).astype(np.float32),
                    },
                    audio_mean=rng.normal(size=(7, 48)).astype(np.float32),
                    audio_std=np.full((7, 48), 0.1, np.float32),
                    val_count=2,
                    val_audio_mean=rng.normal(size=(7, 48)).astype(np.float32),
                )
            )
        stats[name] = entries
    return stats


def _trainer(**feda2v):
    config = tiny_config(feda2v={"generator_training_epochs": 1, **feda2v})
    torch.manual_seed(0)
    adapters = build_model(config, PROFILE_SLOTS["minilm"], 48)
    state = {k: v.detach().numpy().copy() for k, v in adapters.state_dict().items()}
    return ServerGeneratorTrainer(config=config, adapters=adapters), state


def test_generator_loss_decreases_on_fixed_data():
    trainer, state = _trainer(generator_learning_rate=1e-3)
    stats = _fixed_stats()
    losses = []
    for round_ in range(1, 9):
        _, report = trainer.run_round(round_, state, stats)
        losses.append(report.generator_loss)
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses
    assert losses[-1] < 0.85 * losses[0], losses


def test_round_reports_validation_and_finetunes_every_slot_on_all_rows():
    trainer, state = _trainer(synthetic_samples_per_class=3)
    stats = _fixed_stats()
    new_state, report = trainer.run_round(1, state, stats)
    assert report.validation is not None and report.validation["num_classes"] == 3
    assert set(report.validation) >= {"similarity", "mse", "l1", "per_class"}
    assert report.synthetic_samples == 3 * 3
    assert set(report.finetune_loss_per_slot) == {"clip", "t5"}
    changed = {k.split(".")[0] for k in state if not np.array_equal(state[k], new_state[k])}
    assert changed == {"clip", "t5"}  # both slots are trained (the original never trained t5)
    inputs, targets = trainer._finetune_set(
        {n: ClassSummary.merge(e) for n, e in stats.items()},
        RoundReport(),
    )
    assert len(inputs) == 3 * (2 + 3) and targets["t5"].shape == (15, 17, 384)  # 2 real means + 3 synthetic


def test_no_generator_means_fine_tuning_on_real_means_only():
    trainer, state = _trainer(use_generator=False)
    _, report = trainer.run_round(1, state, _fixed_stats())
    assert report.generator_loss is None and report.validation is None and report.synthetic_samples == 0
    assert report.finetune_loss is not None and trainer.generator is None


def test_state_round_trip_restores_generator_and_optimizers():
    trainer, state = _trainer()
    trainer.run_round(1, state, _fixed_stats())
    saved = trainer.state_dict()
    other, _ = _trainer()
    other.load_state_dict(saved)
    for a, b in zip(trainer.generator.state_dict().values(), other.generator.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(trainer.rng.get_state(), other.rng.get_state())
