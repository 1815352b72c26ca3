"""End-to-end: real ``flwr run`` simulations (own FLWR_HOME and SuperLink port) on a small config."""

from __future__ import annotations

import json

import pytest

from conftest import TINY, need_offline_asset, save_tiny_ast, save_tiny_text_encoders, simulate
from feda2v_flwr.config.paths import PROJECT_ROOT
from feda2v_flwr.data.prepare import SONIC_PI_SAMPLES, SonicPiSettings, prepare_sonic_pi
from feda2v_flwr.images.cli import main as images_main
from feda2v_flwr.reporting import read_metrics

pytestmark = pytest.mark.slow


def _config_file(tmp_path, cache_dir, images=None, **feda2v):
    raw = json.loads(json.dumps(TINY))
    raw["feda2v"].update(feda2v)
    raw["images"] = images or {}
    raw["federation"].update(global_rounds=3, local_epochs=2)
    raw["data"]["cache_dir"] = str(cache_dir)
    raw["wandb"] = {"enabled": True, "mode": "offline"}
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(raw))
    return path


def _run(tmp_path, config, overrides, name):
    return simulate(tmp_path, config, name, overrides)


def test_simulation_completes_and_learns(tmp_path, cache_dir):
    # An override with quotes inside travels through Flower's run config intact.
    quoted = 'data.classes=["siren", "rain", "dog", "engine"]; feda2v.prompt_template=a "clear" photo of {label}'
    status, run_dir = _run(tmp_path, _config_file(tmp_path, cache_dir), quoted, "e2e")
    assert status == "finished:completed"
    metrics = read_metrics(run_dir / "metrics.jsonl")
    for round_ in (1, 2, 3):
        phases = {m["phase"] for m in metrics if m["round"] == round_}
        assert {"fit", "generator", "validation", "finetune", "evaluate"} <= phases, (round_, phases)
    evaluations = [m for m in metrics if m["phase"] == "evaluate"]
    assert evaluations[-1]["test_mse"] < evaluations[0]["test_mse"]
    generator = [m["loss"] for m in metrics if m["phase"] == "generator"]
    assert generator[-1] < generator[0]
    assert (run_dir / "checkpoints" / "server_generator_round_3.pt").exists()
    resolved = json.loads((run_dir / "config.json").read_text())
    assert resolved["federation"]["global_rounds"] == 3
    assert resolved["feda2v"]["prompt_template"] == 'a "clear" photo of {label}'
    assert json.loads((run_dir / "summary.json").read_text())["round"] == 3
    plots = {p.name for p in (run_dir / "plots").glob("*.png")}
    assert plots == {"losses.png", "evaluation.png", "generator_validation.png", "embeddings_pca.png"}
    # W&B (offline) got every number of metrics.jsonl, under the same names: <phase>/<key>
    (history,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    logged = history.read_bytes()
    names = {f"{m['phase']}/{key}" for m in metrics for key, value in m.items() if isinstance(value, int | float)}
    names -= {f"{m['phase']}/round" for m in metrics}
    assert {"evaluate/test_retrieval_top1", "round/generator_loss", "validation/similarity"} <= names
    assert [name for name in sorted(names) if name.encode() not in logged] == []
    assert b"fit/client_loss_mean/train_loss_clip" in logged


def test_a_failing_server_is_reported_as_failed(tmp_path, cache_dir):
    config = _config_file(
        tmp_path, cache_dir, generator_load_checkpoint=True, generator_checkpoint_path=str(tmp_path / "none.pt")
    )
    status, _ = _run(tmp_path, config, "federation.global_rounds=1", "fails")
    assert status == "finished:failed"


def _example(tmp_path, cache_dir, name: str) -> str:
    """A shipped example config at the tiny test size: the example's generator keys win."""
    example = json.loads((PROJECT_ROOT / "configs" / name).read_text())
    raw = json.loads(json.dumps(TINY))
    raw["feda2v"].update(example["feda2v"], generator_training_epochs=3)
    raw["data"]["cache_dir"] = str(cache_dir)
    path = tmp_path / name
    path.write_text(json.dumps(raw))
    return str(path)


def test_seed_examples_train_generators_then_a_second_run_loads_them(tmp_path, cache_dir, monkeypatch):
    # Run from tmp_path, so the example's relative paths (outputs/vae-memory-efficient/...) resolve there.
    monkeypatch.chdir(tmp_path)
    memory = _example(tmp_path, cache_dir, "example_vae_memory_efficient.json")
    status, run_a = _run(tmp_path, memory, "", "vae-memory-efficient")
    assert status == "finished:completed"
    assert run_a == tmp_path / "outputs" / "vae-memory-efficient"
    saved = sorted(p.name for p in (run_a / "client_generators").glob("*_round_2.pt"))
    assert saved == [
        "client_generator_node0_class_dog_round_2.pt",
        "client_generator_node0_class_siren_round_2.pt",
        "client_generator_node1_class_engine_round_2.pt",
        "client_generator_node1_class_rain_round_2.pt",
    ]
    fits_a = [m for m in read_metrics(run_a / "metrics.jsonl") if m["phase"] == "fit"]
    assert fits_a[-1]["clients"]["0"]["generator_epochs"] == 6 and "train_loss_clip" in fits_a[-1]["clients"]["0"]
    server_epochs_a = [m for m in read_metrics(run_a / "metrics.jsonl") if m["phase"] == "generator"][-1]["epochs"]

    generation = _example(tmp_path, cache_dir, "example_vae_full_generation.json")
    status, run_b = _run(tmp_path, generation, "federation.global_rounds=1", "vae-full-generation")
    assert status == "finished:completed"
    metrics_b = read_metrics(run_b / "metrics.jsonl")
    first_fit = next(m for m in metrics_b if m["phase"] == "fit")
    for client in first_fit["clients"].values():
        assert client["generator_epochs"] == 9  # 6 from run A (pretrained) + 3 now: not re-initialised
        assert "train_loss_clip" not in client  # generator-only: adapters are not trained
        assert 0 <= client["synthetic_retrieval_top1"] <= 1  # 1214-token samples went through the adapters
    final_a = [m for m in read_metrics(run_a / "metrics.jsonl") if m["phase"] == "evaluate"][-1]
    first_b = next(m for m in metrics_b if m["phase"] == "evaluate")  # adapters loaded from run A, kept
    assert first_b["test_mse"] == pytest.approx(final_a["test_mse"], rel=1e-5)
    first_generator = next(m for m in metrics_b if m["phase"] == "generator")
    assert first_generator["epochs"][0]["epoch"] == server_epochs_a[-1]["epoch"] + 1  # server generator continued


def test_simulation_with_a_tiny_ast_and_flux_targets_encodes_each_clip_once_and_draws(tmp_path, cache_dir):
    pytest.importorskip("diffusers")
    from tiny_diffusion import save_tiny_clip, save_tiny_flux_pipeline

    images = {
        "every_rounds": 2,
        "per_class": 2,
        "pipeline_model": save_tiny_flux_pipeline(tmp_path / "flux"),
        "classifier_model": save_tiny_clip(tmp_path / "clip"),
        "steps": 1,
        "height": 32,
        "width": 32,
    }
    config = _config_file(
        tmp_path,
        cache_dir,
        images=images,
        audio_encoder="ast",
        ast={"model": save_tiny_ast(tmp_path / "tiny-ast")},
        target_profile="flux",
        text_encoders=save_tiny_text_encoders(tmp_path / "text"),
    )
    status, run_dir = _run(tmp_path, config, "federation.global_rounds=2", "ast")
    assert status == "finished:completed"
    fits = {m["round"]: m for m in read_metrics(run_dir / "metrics.jsonl") if m["phase"] == "fit"}
    assert all(c["encoder_calls"] > 0 for c in fits[1]["clients"].values())  # round 1 encodes train + val
    assert all(c["encoder_calls"] == 0 for c in fits[2]["clients"].values())  # round 2: all from the cache
    assert json.loads((run_dir / "config.json").read_text())["feda2v"]["target_profile"] == "flux"
    evaluations = {m["round"]: m for m in read_metrics(run_dir / "metrics.jsonl") if m["phase"] == "evaluate"}
    assert "image_count" not in evaluations[1]  # pictures every 2 rounds
    assert evaluations[2]["image_count"] == 8  # 2 nodes x 2 classes x 2 test clips, pooled on the server
    assert 0.0 <= evaluations[2]["image_balanced_accuracy"] <= 1.0 and "image_macro_f1" in evaluations[2]
    grids = sorted(p.relative_to(run_dir).as_posix() for p in (run_dir / "images").rglob("*.png"))
    assert grids == [
        f"images/round_002/node_{n}/{c}.png" for n, cs in ((0, "dog siren"), (1, "engine rain")) for c in cs.split()
    ]

    # The same pictures again, from the last checkpoint, with the command (embeddings from the cache).
    checkpoint = run_dir / "checkpoints" / "server_generator_round_2.pt"
    out = tmp_path / "cli"
    assert images_main(["--config", str(config), "--checkpoint", str(checkpoint), "--output", str(out)]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["round"] == 2 and result["image_count"] == 8 and set(result["nodes"]) == {"0", "1"}
    assert len(list(out.rglob("*.png"))) == 4


def test_a_simulation_on_prepared_sonic_pi_recordings_with_the_pretrained_aisfx_encoder(tmp_path, cache_dir):
    """Real recordings (Debian's CC0 Sonic Pi samples, 1.5 s clips: shorter than one aisfx block)
    through the pretrained aisfx CNN, split so that no recording is in two splits."""
    pytest.importorskip("aisfx")
    need_offline_asset(SONIC_PI_SAMPLES.is_dir(), "Debian's sonic-pi-samples")
    root = tmp_path / "sonic-pi"
    prepare_sonic_pi(root, SonicPiSettings(clips_per_class=12, seconds=1.5))
    config = _config_file(tmp_path, cache_dir, audio_encoder="aisfx")
    raw = json.loads(config.read_text())
    raw["data"] = {
        "dataset": "audiofolder",
        "root": str(root),
        "classes": ["bd", "drum", "elec", "tabla"],
        "clip_seconds": "auto",
        "sample_rate": 44100,
        "split_by": "groups",
        "cache_dir": str(cache_dir),
    }
    config.write_text(json.dumps(raw))
    status, run_dir = _run(tmp_path, config, "federation.global_rounds=2", "aisfx")
    assert status == "finished:completed"
    resolved = json.loads((run_dir / "config.json").read_text())
    assert resolved["feda2v"]["audio_encoder"] == "aisfx" and resolved["data"]["clip_seconds"] == 1.5
    metrics = read_metrics(run_dir / "metrics.jsonl")
    fits = {m["round"]: m for m in metrics if m["phase"] == "fit"}
    assert all(c["encoder_calls"] > 0 for c in fits[1]["clients"].values())
    assert all(c["encoder_calls"] == 0 for c in fits[2]["clients"].values())  # from the embedding cache
    final = [m for m in metrics if m["phase"] == "evaluate"][-1]
    assert final["round"] == 2 and 0.0 <= final["test_retrieval_top1"] <= 1.0
