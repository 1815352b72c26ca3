import re

import numpy as np
import pytest
import torch

from conftest import tiny_config
from feda2v_flwr.encoders import PROFILE_SLOTS
from feda2v_flwr.server.class_summary import ClassSummary
from feda2v_flwr.server.generator_trainer import RoundReport, ServerGeneratorTrainer
from feda2v_flwr.server.trainer_state import load_finetune_state, load_generator, trainer_state
from feda2v_flwr.training.adapters import build_model
from feda2v_flwr.training.generator_learner import GeneratorMismatchError
from feda2v_flwr.training.statistics import ClassStats


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


def _trainer(rounds: int = 2, **feda2v):
    config = tiny_config(feda2v={"generator_training_epochs": 1, **feda2v}, federation={"global_rounds": rounds})
    torch.manual_seed(0)
    adapters = build_model(config, PROFILE_SLOTS["minilm"], 48)
    state = {k: v.detach().numpy().copy() for k, v in adapters.state_dict().items()}
    trainer = ServerGeneratorTrainer(
        config=config, adapters=adapters, input_dim=48, slot_shapes={"clip": (384,), "t5": (17, 384)}
    )
    return trainer, state


def test_generator_loss_decreases_on_fixed_data():
    trainer, state = _trainer(rounds=8, generator_learning_rate=1e-3)  # the lr decays over the 8 rounds
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
    assert report.finetune_loss is not None and trainer.learner is None


def test_fine_tuning_steps_are_epochs_over_the_rows_or_the_number_asked_for():
    # 3 classes x 2 client means = 6 rows, batch 8: one step per epoch; TINY trains 2 epochs
    trainer, state = _trainer(use_generator=False)
    _, report = trainer.run_round(1, state, _fixed_stats())
    assert report.finetune_steps == 2
    # with 3 synthetic rows per class: 15 rows, 2 steps per epoch
    trainer, state = _trainer(synthetic_samples_per_class=3)
    _, report = trainer.run_round(1, state, _fixed_stats())
    assert report.finetune_steps == 2 * 2
    # a fixed budget: the same 7 steps whatever the rows (the last pass cut short)
    for feda2v in ({"use_generator": False}, {"synthetic_samples_per_class": 3}):
        trainer, state = _trainer(global_model_train_steps=7, **feda2v)
        adam = trainer.finetune_optimizer
        _, report = trainer.run_round(1, state, _fixed_stats())
        assert report.finetune_steps == 7, feda2v
        assert {int(s["step"]) for s in adam.state_dict()["state"].values()} == {7}  # Adam counted 7 steps


def test_state_round_trip_restores_generator_and_optimizers():
    trainer, state = _trainer()
    trainer.run_round(1, state, _fixed_stats())
    saved = trainer_state(trainer)
    other, _ = _trainer()
    load_generator(other, saved)
    load_finetune_state(other, saved)
    a, b = trainer.learner, other.learner
    for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True):
        assert torch.equal(x, y)
    assert type(a.model) is type(b.model) and a.epochs_done == b.epochs_done == 1
    assert torch.equal(trainer.rng.get_state(), other.rng.get_state())


@pytest.mark.parametrize(
    ("settings", "model_class"),
    [
        ({}, "ConditionedVAEGenerator"),
        ({"generator_conditioning": "clip+t5"}, "MultiModalVAEGenerator"),
        ({"vae_arch": "tokenwise"}, "TokenwiseVAEGenerator"),
        ({"generator_type": "gan"}, "GANGenerator"),
        ({"generator_interpolation": "learned", "generator_training_sequence_length": 2}, "ConditionedVAEGenerator"),
    ],
)
def test_every_generator_kind_runs_a_server_round(settings, model_class):
    trainer, state = _trainer(generator_training_epochs=2, **settings)
    _, report = trainer.run_round(1, state, _fixed_stats())
    assert type(trainer.learner.model).__name__ == model_class
    assert np.isfinite(report.generator_loss) and report.validation["num_classes"] == 3
    assert report.synthetic_samples == 3 * trainer.f.synthetic_samples_per_class
    if settings.get("generator_interpolation") == "learned":
        assert "upsample" in report.generator_per_class["dog"]  # the upsampler is trained (7 tokens from 2)


def test_loading_a_generator_of_another_type_fails_clearly():
    trainer, state = _trainer()
    trainer.run_round(1, state, _fixed_stats())
    gan, _ = _trainer(generator_type="gan")
    with pytest.raises(
        ValueError, match="holds a 'vae' generator but this run is configured with generator_type 'gan'"
    ):
        load_generator(gan, trainer_state(trainer), source="run-a.pt")
    learned, _ = _trainer(generator_interpolation="learned")
    with pytest.raises(ValueError, match="has no learned upsampler but generator_interpolation is 'learned'"):
        load_generator(learned, trainer_state(trainer), source="run-a.pt")
    plain, _ = _trainer(use_generator=False)
    plain.run_round(1, state, _fixed_stats())
    with pytest.raises(ValueError, match="holds no trained generator"):
        load_generator(trainer, trainer_state(plain), source="plain.pt")


def test_a_loaded_generator_continues_its_schedules_instead_of_warming_up_again():
    trainer, state = _trainer(rounds=4)
    for round_ in (1, 2, 3):
        trainer.run_round(round_, state, _fixed_stats())
    other, _ = _trainer(rounds=2)  # a new, shorter run
    load_generator(other, trainer_state(trainer))
    assert other.learner.epochs_done == 3 and other.learner.loss.beta(3) == other.f.generator_beta_max
    assert other.learner.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * other.f.generator_learning_rate)


def test_kd_distils_both_slots_towards_the_class_owners(tmp_path):
    trainer, state = _trainer(adapter_aggregation_mode="kd", kd_training_epochs=3, global_model_train_epochs=0)
    rng = np.random.default_rng(1)
    teacher_states = [
        ({k: v + rng.normal(scale=0.05, size=v.shape).astype(np.float32) for k, v in state.items()}, {"dog", "rain"}),
        ({k: v + rng.normal(scale=0.05, size=v.shape).astype(np.float32) for k, v in state.items()}, {"siren"}),
    ]
    new_state, report = trainer.run_round(1, state, _fixed_stats(), teacher_states)
    assert set(report.kd_loss_per_slot) == {"clip", "t5"} and all(np.isfinite(list(report.kd_loss_per_slot.values())))
    changed = {k.split(".")[0] for k in state if not np.array_equal(state[k], new_state[k])}
    assert changed == {"clip", "t5"}


def test_gaussian_baseline_samples_each_class_from_its_clients_statistics():
    trainer, state = _trainer(generator_type="gaussian", synthetic_samples_per_class=4)
    stats = _fixed_stats()
    _, report = trainer.run_round(1, state, stats)
    assert report.generator_loss is None and report.synthetic_samples == 3 * 4  # nothing trained, samples drawn
    assert report.validation is not None and report.validation["num_classes"] == 3
    stats["dog"][1].count = 15  # three times the clips of the first client: three times the draws
    summary = ClassSummary.merge(stats["dog"])
    samples = trainer.synthetic_samples("dog", summary, 4000)
    assert samples.shape == (4000, 7, 48)
    # each sample comes from one client's N(mean, 0.1^2): it lies near that client's mean, the
    # clients are drawn 1:3, and each client's draws average to its mean with its std
    distances = torch.cdist(samples.flatten(1), torch.stack(summary.client_audio_means).flatten(1))
    owner = distances.argmin(1)
    assert float(distances.min(1).values.max()) < 0.1 * (7 * 48) ** 0.5 * 1.5
    assert 0.70 < float(owner.float().mean()) < 0.80
    for client in (0, 1):
        mine = samples[owner == client]
        np.testing.assert_allclose(mine.mean(0).numpy(), stats["dog"][client].audio_mean, atol=0.03)
        assert abs(float(mine.std(0).mean()) - 0.1) < 0.01
    assert trainer_state(trainer)["generator_class"] is None  # nothing to save
    longer, _ = _trainer(generator_type="gaussian", generator_output_sequence_length=19)
    one_client = ClassSummary.merge(stats["dog"][:1])
    resized = longer.synthetic_samples("dog", one_client, 4000)
    assert resized.shape == (4000, 19, 48)
    per_token_std = resized.std(0).mean(1)  # every token, the interpolated ones too, keeps std 0.1
    assert float((per_token_std - 0.1).abs().max()) < 0.01


def test_unconditioned_server_generators_are_one_per_class_and_round_trip():
    trainer, state = _trainer(generator_conditioning="none", synthetic_samples_per_class=2)
    trainer.run_round(1, state, _fixed_stats())
    assert trainer.learner is None and sorted(trainer.class_learners) == ["dog", "rain", "siren"]
    assert all(not learner.model.conditioned for learner in trainer.class_learners.values())
    saved = trainer_state(trainer)
    other, _ = _trainer(generator_conditioning="none")
    load_generator(other, saved)
    for name, learner in trainer.class_learners.items():
        restored = other.class_learners[name].model.state_dict().values()
        for x, y in zip(learner.model.state_dict().values(), restored, strict=True):
            assert torch.equal(x, y)
    conditioned, _ = _trainer()
    with pytest.raises(ValueError, match="one unconditioned generator per class"):
        load_generator(conditioned, saved)
    with pytest.raises(ValueError, match="one conditioned generator"):
        load_generator(other, trainer_state(conditioned) | {"generator_class": "x"})


def test_fine_tuning_rows_are_at_the_output_length_real_means_resized():
    trainer, state = _trainer(generator_output_sequence_length=19, synthetic_samples_per_class=2)
    stats = _fixed_stats()
    trainer.run_round(1, state, stats)
    summaries = {n: ClassSummary.merge(e) for n, e in stats.items()}
    inputs, _ = trainer._finetune_set(summaries, RoundReport())
    assert inputs.shape == (3 * (2 + 2), 19, 48)
    first = torch.from_numpy(stats["dog"][0].audio_mean)
    # linear interpolation keeps the first and last token of the 7-token mean
    torch.testing.assert_close(inputs[0, 0], first[0])
    torch.testing.assert_close(inputs[0, -1], first[-1])


def test_gaussian_generator_type_is_refused_where_it_cannot_work():
    with pytest.raises(ValueError, match="server's sampling baseline"):
        tiny_config(feda2v={"generator_type": "gaussian", "generator_training_mode": True})


@pytest.mark.parametrize(
    ("other", "words"),
    [
        ({"generator_hidden_dim": 32}, "ConditionedVAEGenerator with hidden_dim 64 (config: 32)"),
        ({"vae_arch": "tokenwise"}, "vae_arch 'tokenwise', generator_*_dim) asks for a TokenwiseVAEGenerator"),
        ({"generator_latent_dim": 4}, "latent_dim 8 (config: 4)"),
    ],
)
def test_a_saved_generator_of_another_architecture_is_refused_naming_the_keys(other, words):
    trainer, state = _trainer()
    trainer.run_round(1, state, _fixed_stats())
    saved = trainer_state(trainer)
    mismatched, _ = _trainer(**other)
    with pytest.raises(GeneratorMismatchError, match=re.escape(words)):
        load_generator(mismatched, saved, source="server_generator_round_1.pt")
    same, _ = _trainer()
    load_generator(same, saved, source="server_generator_round_1.pt")
    assert same.learner.epochs_done == trainer.learner.epochs_done


def _perturbed(state: dict[str, np.ndarray], scale: float, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (v + scale * rng.standard_normal(v.shape)).astype(np.float32) for k, v in state.items()}


def test_synthetic_rows_can_be_labelled_by_the_owning_clients_adapters():
    """``synthetic_targets: teachers``: a synthetic row's target is the mean output, on that row,
    of the adapters of the clients holding its class; the real rows keep their class means."""
    trainer, state = _trainer(generator_type="gaussian", synthetic_targets="teachers", synthetic_samples_per_class=3)
    stats = _fixed_stats()
    summaries = {name: ClassSummary.merge(entries) for name, entries in stats.items()}
    trainer.adapters.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    teachers = [(_perturbed(state, 0.05, 1), {"dog", "rain"}), (_perturbed(state, 0.05, 2), {"dog"})]
    inputs, targets = trainer._finetune_set(summaries, RoundReport(), teachers)
    assert len(inputs) == 3 * (2 + 3)  # per class: 2 client means, then 3 samples
    reference = build_model(trainer.config, PROFILE_SLOTS["minilm"], 48).eval()

    def outputs(teacher_state, rows):
        reference.load_state_dict({k: torch.from_numpy(v) for k, v in teacher_state.items()})
        with torch.no_grad():
            return {slot: module(rows) for slot, module in reference.items()}

    dog, rain, siren = (slice(5 * i, 5 * i + 5) for i in range(3))  # classes in sorted order
    first, second = (outputs(teacher_state, inputs[dog][2:]) for teacher_state, _ in teachers)
    expected_dog = {slot: (first[slot] + second[slot]) / 2 for slot in targets}
    for slot in targets:
        torch.testing.assert_close(targets[slot][dog][2:], expected_dog[slot], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(targets[slot][rain][2:], outputs(teachers[0][0], inputs[rain][2:])[slot])
        # No client with adapters holds siren: its samples keep the class mean, as do all real rows.
        assert torch.equal(targets[slot][siren][2:], torch.stack([summaries["siren"].slot_means[slot]] * 3))
        for name, rows in (("dog", dog), ("rain", rain), ("siren", siren)):
            assert torch.equal(targets[slot][rows][:2], torch.stack([summaries[name].slot_means[slot]] * 2))
    # Labelling by teachers distils nothing by itself (that is kd's aggregation).
    _, report = trainer.run_round(1, state, stats, teachers)
    assert report.kd_loss_per_slot == {} and report.synthetic_samples == 9


def test_teacher_targets_need_synthetic_rows():
    with pytest.raises(Exception, match="synthetic_targets 'teachers' labels the server fine-tuning's synthetic rows"):
        tiny_config(feda2v={"synthetic_targets": "teachers", "use_generator": False})
