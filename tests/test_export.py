"""``feda2v-export``: a real run's adapters round-trip bit for bit; config.json and the model card
say what the run was; the CLI refuses what it cannot export."""

import json
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from conftest import TINY_AST, save_tiny_ast, save_tiny_text_encoders, tiny_config
from feda2v_flwr.checkpointing.files import round_file
from feda2v_flwr.checkpointing.run import (
    find_checkpoint,
    load_checkpoint,
    new_payload,
    save_checkpoint,
    saved_adapters,
)
from feda2v_flwr.config import load_config
from feda2v_flwr.encoders import EmbeddingCache, audio_embed_dim, build_audio_encoder, target_slots
from feda2v_flwr.export import ExportError, export_run, load_adapters, main
from feda2v_flwr.export.model_card import format_metric
from feda2v_flwr.inprocess import run_in_process
from feda2v_flwr.payload import ndarrays_to_module
from feda2v_flwr.training.adapters import build_model

CLASSES = ["siren", "rain", "dog", "engine"]  # conftest's TINY data.classes, in label order


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, cache_dir):
    """A finished two-round run with checkpoints of both rounds."""
    config = tiny_config(
        data={"cache_dir": str(cache_dir)},
        feda2v={"generator_training_epochs": 1, "global_model_train_epochs": 1},
    )
    run = tmp_path_factory.mktemp("export") / "run"
    run_in_process(config, run)
    return run


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("exported") / "adapters"
    export_run(run_dir, out)
    return out


def server_adapters(run_dir, checkpoint) -> torch.nn.ModuleDict:
    """The checkpoint's global adapters, built and loaded the way the server does."""
    config = load_config(run_dir / "config.json")
    adapters = build_model(config, target_slots(config.feda2v), audio_embed_dim(config))
    state = saved_adapters(load_checkpoint(checkpoint), adapters.state_dict(), checkpoint)
    ndarrays_to_module(adapters, list(state.values()))
    return adapters.eval()


def card_front_matter(card: str) -> dict:
    _, front, _ = card.split("---\n", 2)
    return yaml.safe_load(front)


def test_the_exported_adapters_equal_the_checkpoints_bit_for_bit(run_dir, exported):
    checkpoint = find_checkpoint(run_dir)
    reference = server_adapters(run_dir, checkpoint)
    loaded = load_adapters(exported)
    saved = load_checkpoint(checkpoint)["global_adapters"]
    state = loaded.modules.state_dict()
    assert list(state) == list(reference.state_dict()) == list(saved)
    assert all(torch.equal(state[k], saved[k]) and state[k].dtype == torch.float32 for k in saved)
    assert not any(module.training for module in loaded.modules.modules())
    tokens = torch.randn(3, 9, loaded.config["adapter"]["in_dim"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for slot, module in loaded.modules.items():
            output = module(tokens)
            assert output.shape == (3, *loaded.slot_shapes[slot])
            assert torch.equal(output, reference[slot](tokens)), slot
    with safe_open(exported / "adapters.safetensors", framework="pt") as weights:
        assert weights.metadata() == {"format": "pt", "round": "2", "feda2v-adapters": "1"}


def test_config_json_names_the_slots_encoder_targets_and_classes(run_dir, exported):
    config = load_config(run_dir / "config.json")
    export = json.loads((exported / "config.json").read_text())
    assert export["format_version"] == 1 and export["round"] == 2
    assert export["checkpoint"] == "server_generator_round_2.pt"
    assert {name: slot["shape"] for name, slot in export["slots"].items()} == {"clip": [384], "t5": [17, 384]}
    assert export["adapter"] == {"in_dim": 48, "hidden_dims": {"clip": [32], "t5": [32]}, "width": 32, "heads": 2}
    encoder = export["audio_encoder"]
    assert encoder["id"] == "mel-patch" and encoder["mel_patch"]["embed_dim"] == 48
    # the key is the embedding cache's own: the run's embeddings lie in the folder it names
    cache = EmbeddingCache(config.data.cache_dir, build_audio_encoder(config))
    assert encoder["embedding_cache_key"] == cache.directory.name
    assert any(cache.directory.glob("*.npy"))
    target = export["target"]
    assert (target["profile"], target["prompt_template"]) == ("minilm", "a photo of {label}")
    assert export["class_names"] == CLASSES and "server_classes" in export["class_names_source"]


def test_the_model_card_is_hub_metadata_plus_the_runs_final_test_top1(run_dir, exported):
    card = (exported / "README.md").read_text()
    front = card_front_matter(card)
    assert front["license"] == "apache-2.0" and front["library_name"] == "feda2v-flwr"
    assert {"federated-learning", "flower", "audio", "text-to-image-prompts"} <= set(front["tags"])
    assert "test_retrieval_top1" in front["metrics"]
    top1 = json.loads((run_dir / "summary.json").read_text())["evaluation"]["test_retrieval_top1"]
    assert f"| `test_retrieval_top1` | {format_metric(top1)} |" in card
    for heading in ("## What the adapters do", "## Data", "## Training", "## Evaluation", "## How to load"):
        assert heading in card
    assert "from feda2v_flwr.export import load_adapters" in card
    assert "procedurally generated" in card and "`siren`, `rain`, `dog`, `engine`" in card
    assert "| `t5` | (17, 384) |" in card and "aggregation (`avg`)" in card
    assert "text encoder: `sentence-transformers/all-MiniLM-L6-v2`, Apache-2.0" in card
    assert "HfApi().upload_folder(" in card


def test_an_earlier_checkpoint_exports_with_its_own_rounds_evaluation(run_dir, tmp_path):
    first = round_file(run_dir / "checkpoints", "server_generator", 1)
    export = export_run(run_dir, tmp_path / "first", checkpoint=first)
    assert export["round"] == 1
    loaded = load_adapters(tmp_path / "first")
    saved = load_checkpoint(first)["global_adapters"]
    assert all(torch.equal(loaded.modules.state_dict()[k], saved[k]) for k in saved)
    evaluations = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    top1 = next(e for e in evaluations if e["phase"] == "evaluate" and e["round"] == 1)["test_retrieval_top1"]
    card = (tmp_path / "first" / "README.md").read_text()
    assert f"| `test_retrieval_top1` | {format_metric(top1)} |" in card and "the run's `metrics.jsonl`" in card


def test_loading_checks_every_key(exported, tmp_path):
    folder = tmp_path / "damaged"
    folder.mkdir()
    (folder / "config.json").write_text((exported / "config.json").read_text())
    weights = load_file(exported / "adapters.safetensors")
    save_file({k: v for k, v in weights.items() if k != "t5.projection.bias"}, folder / "adapters.safetensors")
    with pytest.raises(ExportError, match="t5.projection.bias"):
        load_adapters(folder)
    with pytest.raises(ExportError, match="feda2v-export wrote"):
        load_adapters(tmp_path / "nothing")


def test_the_cli_refuses_what_it_cannot_export_in_one_line(run_dir, tmp_path, capsys):
    assert main([str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    assert "is not a run folder" in capsys.readouterr().err
    no_checkpoint = tmp_path / "no-checkpoint"
    no_checkpoint.mkdir()
    (no_checkpoint / "config.json").write_text((run_dir / "config.json").read_text())
    assert main([str(no_checkpoint), str(tmp_path / "out")]) == 2
    assert "holds no checkpoint" in capsys.readouterr().err
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main([str(run_dir), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists and is not empty" in err and "--force" in err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert main([str(run_dir), str(out), "--force"]) == 0
    names = {p.name for p in out.iterdir()}
    assert names == {"adapters.safetensors", "config.json", "README.md", "notes.txt"}


def test_the_command_runs_as_a_module(run_dir, tmp_path):
    out = tmp_path / "module"
    done = subprocess.run(
        [sys.executable, "-m", "feda2v_flwr.export", str(run_dir), str(out)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "Exported round 2" in done.stdout
    assert load_adapters(out).class_names == CLASSES


def test_an_ast_flux_run_names_its_models_and_their_licences(tmp_path):
    """A run folder written by hand (config + one checkpoint, no evaluation) of the ast encoder and
    the flux profile, with tiny local models."""
    config = tiny_config(
        feda2v={
            "audio_encoder": "ast",
            "ast": {"model": save_tiny_ast(tmp_path / "ast")},
            "target_profile": "flux",
            "text_encoders": save_tiny_text_encoders(tmp_path),
        }
    )
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(config.model_dump(mode="json")))
    adapters = build_model(config, target_slots(config.feda2v), audio_embed_dim(config))
    payload = {k: None for k in ("generator_type", "generator_class", "generator_args", "generator_state")}
    payload |= {k: None for k in ("discriminator_args", "discriminator_state", "discriminator_optimizer_state")}
    payload |= {"generator_optimizer_state": None, "finetune_optimizer_state": None, "rng_state": None}
    payload |= {"generator_epochs": 0, "config": "{}", "config_hash": "", "wandb_run_id": None}
    save_checkpoint(
        run / "checkpoints",
        "server_generator",
        new_payload(round=3, global_adapters=adapters.state_dict(), **payload),
        keep_last=1,
    )
    export = export_run(run, tmp_path / "out")
    assert {name: slot["shape"] for name, slot in export["slots"].items()} == {"clip": [32], "t5": [17, 24]}
    encoder = export["audio_encoder"]
    assert (encoder["id"], encoder["model"], encoder["max_length"]) == ("ast", str(tmp_path / "ast"), 64)
    assert encoder["embedding_cache_key"] == build_audio_encoder(config).cache_key()
    assert export["adapter"]["in_dim"] == TINY_AST["hidden_size"]
    assert export["target"]["text_encoders"] == {"clip": str(tmp_path / "clip"), "t5": str(tmp_path / "t5")}
    loaded = load_adapters(tmp_path / "out")
    assert all(torch.equal(loaded.modules.state_dict()[k], v) for k, v in adapters.state_dict().items())
    card = (tmp_path / "out" / "README.md").read_text()
    assert f"`{tmp_path / 'ast'}`: check its licence" in card and "FLUX.1-schnell (Apache-2.0)" in card
    assert "logged no evaluation of round 3" in card and "metrics" not in card_front_matter(card)
