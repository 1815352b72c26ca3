"""Generators: shapes, sizes, interpolation, the learned upsampler, training guards, state, kd maths."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import tiny_config
from feda2v_flwr.config.paths import ConfigError
from feda2v_flwr.models import (
    AttentionUpsampler,
    ConditionedVAEGenerator,
    GANDiscriminator,
    GANGenerator,
    MultiModalVAEGenerator,
    TokenwiseVAEGenerator,
    VAEGenerator,
    build_generator,
    count_flat_vae_parameters,
    pool_tokens,
)
from feda2v_flwr.server.distillation import distill_adapters, teacher_targets
from feda2v_flwr.training.generator_learner import GeneratorLearner
from feda2v_flwr.training.generator_plan import generator_plan

CLIP = {"clip": [5]}
CLIP_T5 = {"clip": [5], "t5": [3, 5]}
MODES = ("linear", "nearest", "cubic", "learned")


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _generators() -> list[nn.Module]:
    small = dict(input_dim=768, sequence_length=4, latent_dim=6, learned_upsampler=True)
    return [
        VAEGenerator(**small, hidden_dim=32),
        ConditionedVAEGenerator(**small, hidden_dim=32, condition_slots=CLIP),
        MultiModalVAEGenerator(**small, hidden_dim=32, condition_slots=CLIP_T5, fusion_dim=8),
        TokenwiseVAEGenerator(**small, hidden_dim=16, heads=2, condition_slots=CLIP),
        GANGenerator(**small, hidden_dim=32, condition_slots=CLIP_T5, fusion_dim=8),
    ]


@pytest.mark.parametrize("generator", _generators(), ids=lambda g: type(g).__name__)
@pytest.mark.parametrize("mode", MODES)
def test_sample_returns_exactly_the_requested_length_in_every_mode(generator, mode):
    condition = {"clip": torch.randn(5), "t5": torch.randn(3, 5)} if generator.conditioned else None
    for length in (1, 4, 19, 1214):
        out = generator.sample(3, condition, target_sequence_length=length, interpolation=mode)
        assert out.shape == (3, length, 768)
    assert generator.sample(2, condition).shape == (2, 4, 768)  # no target: the training length


def test_linear_upsampling_keeps_the_end_points():
    gen = VAEGenerator(input_dim=12, sequence_length=4, hidden_dim=32, latent_dim=6)
    native = gen.sample(3, generator=torch.Generator().manual_seed(0))
    full = gen.sample(3, generator=torch.Generator().manual_seed(0), target_sequence_length=1214)
    torch.testing.assert_close(full[:, 0], native[:, 0])
    torch.testing.assert_close(full[:, -1], native[:, -1])
    midpoint = (native[:, 1] + native[:, 2]) / 2  # halfway between tokens 1 and 2 of 4 = token 606.5 of 1214
    torch.testing.assert_close((full[:, 606] + full[:, 607]) / 2, midpoint, atol=2e-3, rtol=0)


def test_conditions_are_per_sample_and_mixed_batches_work():
    gen = ConditionedVAEGenerator(input_dim=12, sequence_length=4, hidden_dim=32, latent_dim=6, condition_slots=CLIP)
    x, cond = torch.randn(3, 9, 12), {"clip": torch.randn(3, 5)}  # 9 tokens are pooled to 4
    recon, mu, logvar = gen(x, cond)
    assert recon.shape == (3, 4, 12) and mu.shape == (3, 6) and logvar.shape == (3, 6)
    z = torch.randn(3, 6)
    alone = gen.decode(z[:1], gen.condition({"clip": cond["clip"][:1]}, 1))
    torch.testing.assert_close(gen.decode(z, gen.condition(cond, 3))[:1], alone)  # no mixing across samples
    with pytest.raises(ValueError, match="condition 'clip' has shape"):
        gen(x, {"clip": torch.randn(1, 5)})
    with pytest.raises(ValueError, match="conditioned on"):
        gen(x, None)


def test_flat_parameter_count_is_exact_and_the_seed_scale_is_computed_not_allocated():
    gen = ConditionedVAEGenerator(input_dim=12, sequence_length=4, hidden_dim=32, latent_dim=6, condition_slots=CLIP)
    args = dict(input_dim=12, sequence_length=4, hidden_dim=32, latent_dim=6)
    assert count_flat_vae_parameters(**args, condition_dim=5) == _params(gen)
    assert count_flat_vae_parameters(**args) == _params(VAEGenerator(**args))
    full = count_flat_vae_parameters(input_dim=768, sequence_length=1214, hidden_dim=1024, latent_dim=256)
    assert full == 1_913_277_440  # the seed's L = 1214 design (the original's notebook reports the same)


def test_tokenwise_size_does_not_depend_on_length_and_it_trains_on_full_ast_sequences():
    short = TokenwiseVAEGenerator(input_dim=768, sequence_length=4, condition_slots={"clip": [768]})
    full = TokenwiseVAEGenerator(input_dim=768, sequence_length=1214, condition_slots={"clip": [768]})
    assert _params(short) == _params(full) < 5_000_000
    learner = GeneratorLearner(full, learning_rate=1e-3, total_epochs=1)
    x = torch.randn(2, 1214, 768)
    losses = learner.step(x, {"clip": torch.randn(2, 768)}, rng=torch.Generator().manual_seed(0))
    assert losses is not None and torch.isfinite(torch.tensor(losses["loss"]))


def test_the_learned_upsampler_starts_linear_and_its_loss_decreases():
    torch.manual_seed(0)
    upsampler = AttentionUpsampler(dim=8, hidden_dim=32, heads=4)
    t = torch.linspace(0, 1, 32)
    freqs = torch.rand(16, 1, 8) * 6 + 1
    full = torch.sin(2 * torch.pi * freqs * t[None, :, None] + torch.rand(16, 1, 8) * 6)  # (16, 32, 8)
    short = pool_tokens(full, 4)
    linear = torch.nn.functional.interpolate(short.transpose(1, 2), size=32, mode="linear").transpose(1, 2)
    torch.testing.assert_close(upsampler(short, 32), linear)  # zero-initialised correction
    optimizer = torch.optim.Adam(upsampler.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        loss = torch.nn.functional.mse_loss(upsampler(short, 32), full)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], (losses[0], losses[-1])


def test_vae_learner_loss_decreases_and_skips_non_finite_batches():
    torch.manual_seed(0)
    gen = ConditionedVAEGenerator(input_dim=12, sequence_length=4, hidden_dim=64, latent_dim=6, condition_slots=CLIP)
    learner = GeneratorLearner(gen, learning_rate=3e-3, total_epochs=60)
    x, cond = torch.randn(16, 4, 12), {"clip": torch.randn(16, 5)}
    rng = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        losses.append(learner.step(x, cond, noise_std=0.05, rng=rng)["recon"])
        learner.finish_epoch()
    assert losses[-1] < 0.5 * losses[0]
    before = {k: v.clone() for k, v in gen.state_dict().items()}
    assert learner.step(x * float("nan"), cond, rng=rng) is None and learner.skipped_batches == 1
    assert all(torch.equal(before[k], v) for k, v in gen.state_dict().items())  # no step on NaN


def test_gan_learner_trains_both_networks():
    torch.manual_seed(0)
    gen = GANGenerator(input_dim=12, sequence_length=4, hidden_dim=32, latent_dim=6, condition_slots=CLIP)
    disc = GANDiscriminator(input_dim=12, sequence_length=4, hidden_dim=32, condition_slots=CLIP)
    learner = GeneratorLearner(gen, discriminator=disc, learning_rate=1e-3, total_epochs=1)
    g_before, d_before = [p.clone() for p in gen.parameters()], [p.clone() for p in disc.parameters()]
    losses = learner.step(torch.randn(8, 6, 12), {"clip": torch.randn(8, 5)}, rng=torch.Generator().manual_seed(0))
    assert {"loss", "discriminator"} <= set(losses)
    assert any(not torch.equal(a, b) for a, b in zip(g_before, gen.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(d_before, disc.parameters(), strict=True))
    with pytest.raises(ValueError, match="discriminator"):
        GeneratorLearner(gen, learning_rate=1e-3, total_epochs=1)


@pytest.mark.parametrize("generator", _generators(), ids=lambda g: type(g).__name__)
def test_state_rebuilds_the_exact_generator_from_class_name_and_args(generator):
    disc = None
    if generator.kind == "gan":
        disc = GANDiscriminator(input_dim=768, sequence_length=4, condition_slots=CLIP_T5, fusion_dim=8)
    learner = GeneratorLearner(generator, discriminator=disc, learning_rate=1e-3, total_epochs=1)
    learner.epochs_done = 7
    state = learner.state_dict()
    other = GeneratorLearner.from_state(state, expected_type=generator.kind, learning_rate=1e-3, total_epochs=1)
    assert type(other.model) is type(generator) and other.epochs_done == 7
    condition = {"clip": torch.randn(5), "t5": torch.randn(3, 5)} if generator.conditioned else None
    a = learner.sample(2, condition, generator=torch.Generator().manual_seed(3), target_sequence_length=9)
    b = other.sample(2, condition, generator=torch.Generator().manual_seed(3), target_sequence_length=9)
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="generator_type"):
        GeneratorLearner.from_state(
            state, expected_type="gan" if generator.kind == "vae" else "vae", learning_rate=1e-3, total_epochs=1
        )
    with pytest.raises(ValueError, match="Unknown generator class"):
        build_generator("NoSuchGenerator", {})


def test_kd_targets_average_only_the_owners_of_the_class():
    class Constant(nn.Module):
        def __init__(self, value: float):
            super().__init__()
            self.value = value

        def forward(self, x):
            return torch.full((x.shape[0], 2), self.value)

    teachers = [nn.ModuleDict({"clip": Constant(v), "t5": Constant(10 * v)}) for v in (1.0, 2.0, 6.0)]
    synthetic = {"dog": torch.zeros(4, 3, 5), "rain": torch.zeros(2, 3, 5)}
    targets = teacher_targets(teachers.__getitem__, {"dog": [0, 2], "rain": [1]}, synthetic)
    assert targets["dog"]["clip"].tolist() == [[3.5, 3.5]] * 4  # (1 + 6) / 2, teacher 1 does not own dog
    assert targets["dog"]["t5"].tolist() == [[35.0, 35.0]] * 4
    assert targets["rain"]["clip"].tolist() == [[2.0, 2.0]] * 2


def test_kd_student_learns_each_class_from_its_owners():
    class MeanLinear(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(5, 2)

        def forward(self, x):
            return self.linear(x.mean(1))

    torch.manual_seed(0)
    student = nn.ModuleDict({"clip": MeanLinear(), "t5": MeanLinear()})
    synthetic = {"dog": torch.randn(16, 3, 5) * 0.1 - 1, "rain": torch.randn(16, 3, 5) * 0.1 + 1}
    targets = {
        "dog": {"clip": torch.full((16, 2), 1.0), "t5": torch.full((16, 2), -1.0)},
        "rain": {"clip": torch.full((16, 2), 6.0), "t5": torch.full((16, 2), 2.0)},
    }
    losses = distill_adapters(
        student, targets, synthetic, epochs=300, learning_rate=3e-2, batch_size=8, rng=torch.Generator().manual_seed(0)
    )
    assert max(losses.values()) < 0.05
    with torch.no_grad():
        assert student["clip"](synthetic["rain"]).mean().item() == pytest.approx(6.0, abs=0.3)
        assert student["t5"](synthetic["dog"]).mean().item() == pytest.approx(-1.0, abs=0.3)


def test_generator_plans_for_every_granularity_and_node_override():
    classes = ["dog", "rain", "siren"]
    assert generator_plan(tiny_config(), 0, classes) == {"unified": classes}
    per_class = tiny_config(feda2v={"generator_granularity": "per_class"})
    assert generator_plan(per_class, 0, classes) == {
        "class_dog": ["dog"],
        "class_rain": ["rain"],
        "class_siren": ["siren"],
    }
    grouped = tiny_config(
        feda2v={"generator_granularity": "per_group", "generator_class_groups": {"animals": ["dog", "cat"]}}
    )
    assert generator_plan(grouped, 0, classes) == {"group_animals": ["dog"], "group_other": ["rain", "siren"]}
    nodes = tiny_config(
        feda2v={"generator_granularity": "per_class"},
        federation={"num_clients": 3},
        nodes={"1": {"generator_train_classes": ["rain"]}, "2": {"generator_class_group": "city"}},
    )
    assert generator_plan(nodes, 1, classes) == {"class_rain": ["rain"]}
    assert generator_plan(nodes, 2, classes) == {"group_city": classes}
    bad = tiny_config(nodes={"0": {"generator_train_classes": ["whale"]}})
    with pytest.raises(ConfigError, match=r"nodes.0.generator_train_classes lists \['whale'\]"):
        generator_plan(bad, 0, classes)


def test_generator_learning_rate_decays_over_the_run_and_survives_a_reload():
    gen = VAEGenerator(input_dim=12, sequence_length=4, hidden_dim=32, latent_dim=6)
    learner = GeneratorLearner(gen, learning_rate=1e-3, total_epochs=10)
    for _ in range(5):
        learner.finish_epoch()
    assert learner.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))  # cosine midpoint
    for _ in range(7):
        learner.finish_epoch()
    assert learner.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)  # 10 % from the end of the run on
    other = GeneratorLearner.from_state(learner.state_dict(), expected_type="vae", learning_rate=1e-3, total_epochs=10)
    assert other.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4) and other.epochs_done == 12
