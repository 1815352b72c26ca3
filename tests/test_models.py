import math

import pytest
import torch

from feda2v_flwr.encoders.text_targets import SlotSpec
from feda2v_flwr.models import SlotAdapter, VAELoss, adapter_loss, pool_tokens, resize_tokens
from feda2v_flwr.training.optim import adamw, load_optimizer_state


@pytest.mark.parametrize("tokens", [1, 7, 1214])
def test_adapter_shapes_for_any_token_count(tokens):
    clip = SlotAdapter(slot=SlotSpec("clip", 1, 24), in_dim=16, hidden_dims=[32], width=16, heads=2)
    t5 = SlotAdapter(slot=SlotSpec("t5", 5, 40), in_dim=16, hidden_dims=[32, 32], width=16, heads=2)
    x = torch.randn(3, tokens, 16)
    assert clip(x).shape == (3, 24)  # n_latents = 1 is squeezed
    assert t5(x).shape == (3, 5, 40)


def test_adapter_output_does_not_depend_on_the_batch():
    torch.manual_seed(0)
    adapter = SlotAdapter(slot=SlotSpec("clip", 1, 8), in_dim=16, hidden_dims=[32], width=16, heads=2).eval()
    x = torch.randn(4, 6, 16)
    torch.testing.assert_close(adapter(x[:1]), adapter(x)[:1])


def test_flux_sized_t5_adapter_projects_to_4096_at_the_end():
    adapter = SlotAdapter(slot=SlotSpec("t5", 17, 4096), in_dim=768, hidden_dims=[1024], width=256, heads=8)
    assert adapter(torch.randn(2, 10, 768)).shape == (2, 17, 4096)
    attention_params = sum(p.numel() for p in adapter.pool.parameters())
    assert attention_params < 1_000_000  # attention runs at width 256, not 4096


def test_adapter_loss_rejects_shape_mismatch_instead_of_broadcasting():
    with pytest.raises(ValueError, match="differ"):
        adapter_loss(torch.zeros(2, 17, 8), torch.zeros(2, 1, 17, 8))


def test_adapter_loss_values():
    out, target = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert adapter_loss(out, target).item() == pytest.approx(1.0)
    assert adapter_loss(out, target, cosine_weight=0.5).item() == pytest.approx(1.5)  # cos = 0


def test_token_pooling_and_resizing():
    x = torch.arange(8.0).view(1, 8, 1)
    assert pool_tokens(x, 2).flatten().tolist() == [1.5, 5.5]
    assert resize_tokens(torch.tensor([[[0.0], [2.0]]]), 4).flatten().tolist() == pytest.approx([0.0, 0.5, 1.5, 2.0])


def test_vae_loss_against_hand_computed_numbers():
    loss = VAELoss(total_epochs=10, beta_max=0.01)
    assert loss.beta(0) == pytest.approx(0.002) and loss.beta(4) == pytest.approx(0.01) and loss.beta(9) == 0.01
    assert loss.similarity_weight(0) == pytest.approx(0.1) and loss.similarity_weight(9) == pytest.approx(0.01)
    recon, target = torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[0.0, 1.0]]])
    mu, logvar = torch.tensor([[1.0, 0.0]]), torch.zeros(1, 2)
    total, rec, kl, sim = loss(recon, target, mu, logvar, epoch=0)
    assert rec.item() == pytest.approx(1.0)  # mean of (1, 1)
    assert kl.item() == pytest.approx(0.25)  # mean of (0.5 * 1, 0)
    assert sim.item() == pytest.approx(1.0)  # orthogonal: 1 - 0
    assert total.item() == pytest.approx(1.0 + 0.002 * 0.25 + 0.1 * 1.0)
    assert math.isfinite(total.item())


def test_adamw_is_fused_on_cpu_floats_and_matches_the_reference_update():
    torch.manual_seed(0)
    start = [torch.randn(64, 32), torch.randn(32)]
    fused_params = [torch.nn.Parameter(t.clone()) for t in start]
    plain_params = [torch.nn.Parameter(t.clone()) for t in start]
    fused = adamw(fused_params, lr=1e-2, weight_decay=0.01)
    plain = torch.optim.AdamW(plain_params, lr=1e-2, weight_decay=0.01)  # the per-tensor loop
    assert fused.param_groups[0]["fused"] is True and not plain.param_groups[0]["fused"]
    for _ in range(5):
        grads = [torch.randn_like(t) for t in start]
        for params in (fused_params, plain_params):
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
        fused.step()
        plain.step()
    for a, b in zip(fused_params, plain_params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    doubles = adamw([torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))], lr=1e-3)
    assert not doubles.param_groups[0]["fused"]


def test_a_saved_state_does_not_switch_the_optimizer_off_its_fused_kernel():
    params = [torch.nn.Parameter(torch.randn(8, 4))]
    older = torch.optim.AdamW(params, lr=1e-3)  # saved by a run before fused AdamW
    params[0].grad = torch.randn(8, 4)
    older.step()
    optimizer = adamw(params, lr=1e-3)
    load_optimizer_state(optimizer, older.state_dict())
    assert optimizer.param_groups[0]["fused"] is True
    torch.testing.assert_close(optimizer.state[params[0]]["exp_avg"], older.state[params[0]]["exp_avg"])
    optimizer.step()  # the fused kernel takes the loaded state
