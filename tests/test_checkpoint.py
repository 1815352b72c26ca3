import pytest
import torch

from feda2v_flwr.checkpoint import CheckpointError, load_checkpoint, new_payload, save_checkpoint


def _payload(round_: int) -> dict:
    return new_payload(
        round=round_,
        generator_type="vae",
        generator_class="VAEGenerator",
        generator_args={"input_dim": 2},
        generator_state={"w": torch.ones(2)},
        generator_optimizer_state=None,
        discriminator_args=None,
        discriminator_state=None,
        discriminator_optimizer_state=None,
        generator_epochs=3,
        global_adapters={"a": torch.zeros(3)},
        finetune_optimizer_state={},
        rng_state=torch.get_rng_state(),
        config="{}",
        config_hash="abc",
        wandb_run_id=None,
    )


def test_save_load_pointer_retention_and_best(tmp_path):
    for r, metric in ((1, 0.2), (2, 0.9), (3, 0.5), (4, 0.1)):
        save_checkpoint(tmp_path, "gen", _payload(r), keep_last=2, best_metric=metric)
    assert sorted(p.name for p in tmp_path.glob("gen_round_*.pt")) == ["gen_round_3.pt", "gen_round_4.pt"]
    assert load_checkpoint(tmp_path / "gen_latest.json")["round"] == 4
    assert load_checkpoint(tmp_path / "gen_best.pt")["round"] == 2
    assert not list(tmp_path.glob("*.tmp"))


def test_corrupt_or_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = save_checkpoint(tmp_path, "gen", _payload(1), keep_last=3)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


class ArbitraryObject:  # loading it would need to run unpickling code from the file
    pass


def test_loading_refuses_code_in_the_file(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "obj": ArbitraryObject()}, path)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)
