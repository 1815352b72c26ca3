"""Pictures from prompt embeddings with tiny random SD / FLUX pipelines, CLIP zero-shot scoring,
metrics and grids (the ``diffusion`` extra)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_diffusion import (
    TINY_FLUX_CLIP_DIM,
    TINY_FLUX_T5_DIM,
    TINY_SD_CLIP_DIM,
    TINY_SD_TOKENS,
    coloured_images,
    save_tiny_clip,
    save_tiny_flux_pipeline,
    save_tiny_sd_pipeline,
)

from feda2v_flwr.config.schema import ImageSettings
from feda2v_flwr.encoders.pretrained import ModelLoadError
from feda2v_flwr.images import ImageGenerator, ZeroShotClassifier, image_metrics, save_grid
from feda2v_flwr.images.grid import title_height

pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory) -> str:
    return save_tiny_sd_pipeline(tmp_path_factory.mktemp("sd"))


@pytest.fixture(scope="module")
def flux_dir(tmp_path_factory) -> str:
    return save_tiny_flux_pipeline(tmp_path_factory.mktemp("flux"))


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> str:
    return save_tiny_clip(tmp_path_factory.mktemp("clip"))


def _settings(model: str, **values) -> ImageSettings:
    return ImageSettings(pipeline_model=model, steps=2, height=32, width=24, **values)


def _sd_embeddings(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    return {"clip": torch.randn(n, TINY_SD_TOKENS, TINY_SD_CLIP_DIM, generator=torch.Generator().manual_seed(seed))}


def _flux_embeddings(n: int, tokens: int = 17) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "clip": torch.randn(n, TINY_FLUX_CLIP_DIM, generator=generator),
        "t5": torch.randn(n, tokens, TINY_FLUX_T5_DIM, generator=generator),
    }


def _pixels(images: list[Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(image, dtype=np.int16) for image in images])


@pytest.mark.parametrize("profile", ["sd", "flux"])
def test_generation_is_sized_and_seeded(profile, sd_dir, flux_dir):
    model, embeddings = (sd_dir, _sd_embeddings(3)) if profile == "sd" else (flux_dir, _flux_embeddings(3))
    generator = ImageGenerator(profile, _settings(model), "cpu")
    assert generator.dtype == torch.float32 and generator.batch_size > 1

    images = generator.generate(embeddings, seed=7)
    assert len(images) == 3
    assert all(isinstance(i, Image.Image) and i.mode == "RGB" and i.size == (24, 32) for i in images)
    first = _pixels(images)
    assert np.array_equal(first, _pixels(generator.generate(embeddings, seed=7)))
    assert not np.array_equal(first, _pixels(generator.generate(embeddings, seed=8)))
    assert not np.array_equal(first[0], first[1])  # each picture has its own noise (seed + index)
    assert first.std() > 1  # not a blank picture

    # Image i starts from seed + i whatever the batching: one at a time gives the same pictures.
    one_by_one = ImageGenerator(profile, _settings(model), "cpu", batch_size=1)
    assert np.abs(first - _pixels(one_by_one.generate(embeddings, seed=7))).max() <= 1
    generator.release()
    assert generator.pipeline is None


def test_slot_shapes_come_from_the_pipeline(sd_dir, flux_dir):
    assert ImageGenerator("sd", _settings(sd_dir), "cpu").slot_shapes == {"clip": (TINY_SD_TOKENS, TINY_SD_CLIP_DIM)}
    flux = ImageGenerator("flux", _settings(flux_dir), "cpu")
    assert flux.slot_shapes == {"clip": (TINY_FLUX_CLIP_DIM,), "t5": (None, TINY_FLUX_T5_DIM)}
    assert flux.pipeline.text_encoder is None and flux.pipeline.text_encoder_2 is None  # never needed
    assert len(flux.generate(_flux_embeddings(1, tokens=5), seed=0)) == 1  # any T5 token count


def test_profile_defaults_fill_unset_settings(sd_dir, flux_dir):
    sd = ImageGenerator("sd", ImageSettings(pipeline_model=sd_dir), "cpu")
    flux = ImageGenerator("flux", ImageSettings(pipeline_model=flux_dir), "cpu")
    assert (sd.steps, sd.guidance_scale, flux.steps, flux.guidance_scale) == (25, 7.5, 4, 0.0)
    assert sd.height is None and sd.width is None  # the pipeline's own default size


@pytest.mark.parametrize("profile", ["sd", "flux"])
def test_low_memory_runs_in_bfloat16_one_image_per_call(profile, sd_dir, flux_dir):
    model, embeddings = (sd_dir, _sd_embeddings(2)) if profile == "sd" else (flux_dir, _flux_embeddings(2))
    with ImageGenerator(profile, _settings(model, low_memory=True), "cpu") as generator:
        assert generator.dtype == torch.bfloat16 and generator.batch_size == 1
        images = generator.generate(embeddings, seed=3)
        assert [i.size for i in images] == [(24, 32)] * 2
        assert np.array_equal(_pixels(images), _pixels(generator.generate(embeddings, seed=3)))
    assert generator.pipeline is None


def test_wrong_embeddings_are_errors_naming_the_shapes(sd_dir, flux_dir):
    sd = ImageGenerator("sd", _settings(sd_dir), "cpu")
    with pytest.raises(ValueError, match=r"\(N, 77, 32\).*got \(2, 77, 16\)"):
        sd.generate({"clip": torch.zeros(2, TINY_SD_TOKENS, 16)}, seed=0)
    with pytest.raises(ValueError, match=r"\(N, 77, 32\).*got \(2, 32\)"):
        sd.generate({"clip": torch.zeros(2, TINY_SD_CLIP_DIM)}, seed=0)
    with pytest.raises(ValueError, match=r"takes the slots \['clip'\], got \['clip', 't5'\]"):
        sd.generate({**_sd_embeddings(1), "t5": torch.zeros(1, 17, 24)}, seed=0)
    with pytest.raises(ValueError, match="NaN"):
        sd.generate({"clip": torch.full((1, TINY_SD_TOKENS, TINY_SD_CLIP_DIM), float("nan"))}, seed=0)

    flux = ImageGenerator("flux", _settings(flux_dir), "cpu")
    with pytest.raises(ValueError, match=r"'clip'.*\(N, 32\).*got \(2, 24\)"):
        flux.generate({"clip": torch.zeros(2, 24), "t5": torch.zeros(2, 17, TINY_FLUX_T5_DIM)}, seed=0)
    with pytest.raises(ValueError, match=r"'t5'.*\(N, L, 24\).*same N.*got \(3, 17, 24\)"):
        flux.generate({"clip": torch.zeros(2, TINY_FLUX_CLIP_DIM), "t5": torch.zeros(3, 17, TINY_FLUX_T5_DIM)}, seed=0)


def test_bad_settings_and_missing_models_are_clear_errors(sd_dir, flux_dir, tmp_path, monkeypatch):
    with pytest.raises(ModelLoadError, match="hf download"):
        ImageGenerator("sd", _settings(str(tmp_path / "absent")), "cpu")
    with pytest.raises(ModelLoadError, match="StableDiffusionPipeline"):
        ImageGenerator("sd", _settings(str(tmp_path)), "cpu")  # a directory without model_index.json
    with pytest.raises(ValueError, match=r"images.height = 30 is not a multiple of 4.*use 28 or 32"):
        ImageGenerator("flux", ImageSettings(pipeline_model=flux_dir, height=30), "cpu")
    with pytest.raises(ValueError, match=r"images.width = 20 is not a multiple of 8.*use 16 or 24"):
        ImageGenerator("sd", ImageSettings(pipeline_model=sd_dir, width=20), "cpu")
    with pytest.raises(ValueError, match="'sd' or 'flux'"):
        ImageGenerator("minilm", _settings(sd_dir), "cpu")
    with pytest.raises(ModelLoadError, match="FluxPipeline.*expected.*transformer"):
        ImageGenerator("flux", _settings(sd_dir), "cpu")  # a pipeline of the other profile
    for package in ("accelerate", "diffusers"):
        with monkeypatch.context() as patch:
            patch.setitem(sys.modules, package, None)
            with pytest.raises(
                ImportError, match=rf'needs the {package} package: pip install "feda2v-flwr\[diffusion\]"'
            ):
                ImageGenerator("sd", _settings(sd_dir), "cpu")


def test_zero_shot_classifier_is_valid_and_deterministic(clip_dir, tmp_path):
    classes = ["dog", "church_bells", "rain"]
    images = coloured_images(7)
    classifier = ZeroShotClassifier(clip_dir, "cpu", "a photo of {label}", batch_size=3)
    predictions = classifier.predict(images, classes)
    assert predictions.shape == (7,) and predictions.dtype == np.int64
    assert set(predictions) <= {0, 1, 2}
    assert np.array_equal(predictions, classifier.predict(images, classes))
    assert np.array_equal(
        predictions, ZeroShotClassifier(clip_dir, "cpu", "a photo of {label}").predict(images, classes)
    )
    # Underscores are spaces to CLIP.
    assert torch.equal(classifier._text_features(["church_bells"]), classifier._text_features(["church bells"]))
    assert classifier.predict([], classes).shape == (0,)
    with pytest.raises(ModelLoadError, match="CLIP model"):
        ZeroShotClassifier(str(tmp_path / "absent"), "cpu", "a photo of {label}")


def test_image_metrics_match_hand_computed_values():
    metrics = image_metrics([0, 0, 1, 2], [0, 1, 1, 1], num_classes=3)
    # Per class (precision, recall, F1): 0 -> (1, 1/2, 2/3); 1 -> (1/3, 1, 1/2); 2 -> (0, 0, 0).
    assert metrics == pytest.approx({"accuracy": 0.5, "balanced_accuracy": 0.5, "macro_f1": (2 / 3 + 1 / 2) / 3})
    # Class 2 has no pictures: it is left out of the averages, its prediction is a miss for class 0.
    metrics = image_metrics([0, 0, 1, 1], [0, 2, 1, 1], num_classes=3)
    assert metrics == pytest.approx({"accuracy": 0.75, "balanced_accuracy": 0.75, "macro_f1": (2 / 3 + 1) / 2})
    with pytest.raises(ValueError, match="at least one"):
        image_metrics([], [], num_classes=3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        image_metrics([0, 3], [0, 1], num_classes=3)
    with pytest.raises(ValueError, match="equal-length"):
        image_metrics([0, 1], [0], num_classes=3)


def test_save_grid_tiles_images_into_one_png(tmp_path):
    images = coloured_images(5, size=10)
    path = save_grid(images, tmp_path / "a" / "b" / "grid.png")
    with Image.open(path) as grid:
        assert (grid.format, grid.size) == ("PNG", (3 * 10, 2 * 10))  # ceil(sqrt(5)) = 3 columns, 2 rows
        assert np.array_equal(np.asarray(grid)[10:20, 0:10], np.asarray(images[3]))
    assert sorted(p.name for p in path.parent.iterdir()) == ["grid.png"]  # no temporary file left

    titled = save_grid([*images, Image.new("L", (12, 6))], tmp_path / "titled.png", columns=6, title="round 3")
    with Image.open(titled) as grid:
        assert title_height("round 3") > 0
        assert grid.size == (6 * 12, title_height("round 3") + 10)  # cells as large as the largest picture
    with pytest.raises(ValueError, match="at least one"):
        save_grid([], tmp_path / "empty.png")


def test_a_node_draws_and_scores_pictures_of_its_test_clips_on_image_rounds(sd_dir, clip_dir, tmp_path):
    from conftest import save_tiny_text_encoders, tiny_config
    from feda2v_flwr.images.drawing import decode_labels
    from feda2v_flwr.training.task import ClientTask

    config = tiny_config(
        feda2v={"target_profile": "sd", "text_encoders": save_tiny_text_encoders(tmp_path / "text")},
        images={"every_rounds": 2, "per_class": 2, "pipeline_model": sd_dir, "classifier_model": clip_dir}
        | {"steps": 1, "height": 32, "width": 32},
        data={"cache_dir": str(tmp_path / "cache")},
    )
    task = ClientTask(config, 0, 2, tmp_path / "cache")
    arrays = task.initial_arrays()
    assert "image_count" not in task.evaluate(arrays, None, server_round=1, image_dir=tmp_path / "img")
    metrics = task.evaluate(arrays, None, server_round=2, image_dir=tmp_path / "img")
    classes = task.partition.classes  # siren and dog: 2 test clips each
    assert metrics["image_count"] == 2 * len(classes)
    labels, predictions = decode_labels(metrics["image_labels"]), decode_labels(metrics["image_predictions"])
    assert sorted(set(labels)) == sorted(task.class_index[c] for c in classes) and len(predictions) == len(labels)
    assert metrics["image_accuracy"] == image_metrics(labels, predictions, 4)["accuracy"]
    grids = sorted(p.name for p in (tmp_path / "img" / "round_002" / "node_0").iterdir())
    assert grids == sorted(f"{c}.png" for c in classes)
    with Image.open(tmp_path / "img" / "round_002" / "node_0" / f"{classes[0]}.png") as grid:
        assert grid.width == 2 * 32  # two pictures side by side


def test_the_images_command_explains_what_it_cannot_draw(tmp_path, capsys):
    from feda2v_flwr.images.cli import main

    assert main(["--config", "configs/default.json", "--checkpoint", str(tmp_path / "x.pt")]) == 2
    assert "target_profile is 'minilm'" in capsys.readouterr().err
    flux = ["--set", "feda2v.target_profile=flux"]
    assert main(["--config", "configs/default.json", "--checkpoint", str(tmp_path / "none.pt"), *flux]) == 2
    assert "none.pt" in capsys.readouterr().err
