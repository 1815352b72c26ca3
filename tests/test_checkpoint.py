import json
import re
from datetime import datetime
from pathlib import Path

import pytest
import torch

from conftest import tiny_config
from feda2v_flwr.checkpoint_cli import main as checkpoint_main
from feda2v_flwr.checkpointing.files import CheckpointError
from feda2v_flwr.checkpointing.run import find_checkpoint, load_checkpoint, new_payload, save_checkpoint
from feda2v_flwr.inprocess import run_in_process
from feda2v_flwr.server.generator_trainer import RoundReport
from feda2v_flwr.server_app import build_strategy
from feda2v_flwr.training.generator_learner import GeneratorMismatchError


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


def write_server_checkpoint(run_dir: Path, cache_dir: Path, **feda2v) -> Path:
    """A real server checkpoint of round 1 (tiny config, untrained generator) and its pointer,
    written by the strategy itself; returns the ``.pt`` file."""
    config = tiny_config(feda2v=feda2v, data={"cache_dir": str(cache_dir)})
    strategy = build_strategy(config, run_dir)
    strategy.recipe.trainer.setup_generator(audio_length=4, classes=strategy.recipe.classes)
    path = strategy.recipe.save_checkpoint(1, RoundReport())
    assert path is not None
    return path


@pytest.fixture(scope="module")
def server_checkpoint(tmp_path_factory, cache_dir) -> Path:
    return write_server_checkpoint(tmp_path_factory.mktemp("ckpt") / "run", cache_dir)


def test_inspect_prints_round_generator_adapter_shapes_and_config_hash(server_checkpoint, capsys):
    payload = load_checkpoint(server_checkpoint)
    run_dir = server_checkpoint.parent.parent
    for path in (server_checkpoint, server_checkpoint.parent / "server_generator_latest.json", run_dir):
        assert checkpoint_main([str(path)]) == 0
        out = capsys.readouterr().out
        assert f"file                     {server_checkpoint}" in out  # a run folder: its latest pointer's file
        assert "\nround                    1\n" in out
        assert "generator type           vae" in out and "ConditionedVAEGenerator" in out
        assert f"config hash              {payload['config_hash']}" in out
        name, tensor = next(iter(payload["global_adapters"].items()))
        assert re.search(rf"{re.escape(name)} +{re.escape(str(tuple(tensor.shape)))} +float32", out)
        slot_total = sum(t.numel() for k, t in payload["global_adapters"].items() if k.startswith("clip."))
        assert f"  clip: {slot_total:,} parameters" in out
    assert checkpoint_main([str(server_checkpoint), "--config"]) == 0
    assert '"generator_type": "vae"' in capsys.readouterr().out


def test_per_class_server_generators_are_saved_listed_and_loaded(tmp_path, cache_dir, capsys):
    path = write_server_checkpoint(tmp_path / "run", cache_dir, generator_conditioning="none")
    payload = load_checkpoint(path)
    assert payload["generator_class"] is None and len(payload["generator_per_class"]) == 4  # tiny: 4 classes
    assert checkpoint_main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "generator of 'siren'" in out and "VAEGenerator, 0 epochs" in out
    config = tiny_config(feda2v={"generator_conditioning": "none"}, data={"cache_dir": str(cache_dir)})
    resumed = build_strategy(config, tmp_path / "resumed", resume=path)
    assert sorted(resumed.recipe.trainer.class_learners) == sorted(payload["generator_per_class"])


def test_inspect_json_is_one_machine_readable_object(server_checkpoint, capsys):
    assert checkpoint_main([str(server_checkpoint), "--json", "--config"]) == 0
    summary = json.loads(capsys.readouterr().out)
    payload = load_checkpoint(server_checkpoint)
    assert summary["round"] == 1 and summary["format_version"] == 2
    assert summary["generator"]["type"] == "vae" and summary["generator"]["epochs"] == 0
    assert summary["generator"]["parameters"] == sum(t.numel() for t in payload["generator_state"].values())
    assert summary["config_hash"] == payload["config_hash"] and summary["config"] == json.loads(payload["config"])
    assert datetime.fromisoformat(summary["timestamp"]).timestamp() == pytest.approx(payload["timestamp"], abs=1)
    shapes = {t["name"]: t["shape"] for slot in summary["global_adapters"].values() for t in slot["tensors"]}
    assert shapes == {k: list(v.shape) for k, v in payload["global_adapters"].items()}
    # No optimizer step yet: both optimizers are saved, with no per-parameter state.
    assert summary["optimizer_states"] == {"generator": 0, "discriminator": None, "finetune": 0}


def test_inspect_of_a_truncated_missing_or_foreign_file_is_one_line_naming_it(tmp_path, capsys):
    truncated = save_checkpoint(tmp_path, "gen", _payload(1), keep_last=3)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    foreign = tmp_path / "list.pt"
    torch.save([1, 2, 3], foreign)
    for path, reason in (
        (truncated, "is corrupt or truncated"),
        (tmp_path / "gen_latest.json", "is corrupt or truncated"),  # the pointer leads to the truncated file
        (tmp_path / "missing.pt", "not found"),
        (foreign, "is not a feda2v checkpoint"),
        (tmp_path / "empty-dir", "holds no checkpoint"),
    ):
        if path.name == "empty-dir":
            path.mkdir()
        assert checkpoint_main([str(path)]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.count("\n") == 1, captured.err
        assert str(path if path.suffix != ".json" else truncated) in captured.err and reason in captured.err


def test_find_checkpoint_prefers_the_pointer_else_the_highest_round(tmp_path):
    for r in (2, 10):
        save_checkpoint(tmp_path / "run" / "checkpoints", "gen", _payload(r), keep_last=5)
    assert find_checkpoint(tmp_path / "run") == tmp_path / "run" / "checkpoints" / "gen_round_10.pt"
    (tmp_path / "run" / "checkpoints" / "gen_latest.json").unlink()
    assert find_checkpoint(tmp_path / "run" / "checkpoints") == tmp_path / "run" / "checkpoints" / "gen_round_10.pt"
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(CheckpointError, match="Cannot read checkpoint pointer .*bad.json"):
        find_checkpoint(tmp_path / "bad.json")


def test_loading_a_generator_of_another_type_fails_before_training(tmp_path, cache_dir):
    """A VAE checkpoint (from a one-round run in this process) given to a GAN run: refused while
    the strategy is built, before any node trains."""
    run_dir = tmp_path / "vae"
    run_in_process(tiny_config(data={"cache_dir": str(cache_dir)}, federation={"global_rounds": 1}), run_dir)
    gan = tiny_config(
        feda2v={
            "generator_type": "gan",
            "generator_load_checkpoint": True,
            "generator_checkpoint_path": str(run_dir / "checkpoints" / "server_generator_latest.json"),
        },
        data={"cache_dir": str(cache_dir)},
    )
    with pytest.raises(GeneratorMismatchError, match="holds a 'vae' generator .* generator_type 'gan'"):
        build_strategy(gan, tmp_path / "gan")
