"""flux / sd prompt targets from tiny text encoders saved to a temp dir, and the original's file format."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import save_tiny_ast, save_tiny_text_encoders, tiny_config
from feda2v_flwr.encoders import ModelLoadError, load_text_targets, target_slots
from feda2v_flwr.encoders.text_targets import SlotSpec
from feda2v_flwr.training.task import ClientTask

CLASSES = ["siren", "rain", "dog"]


@pytest.fixture(scope="module")
def encoders(tmp_path_factory) -> dict[str, str]:
    return save_tiny_text_encoders(tmp_path_factory.mktemp("text-encoders"))


def test_flux_targets_are_pooled_clip_and_t5_states_and_get_cached(encoders, tmp_path, monkeypatch):
    f = tiny_config(feda2v={"target_profile": "flux", "text_encoders": encoders}).feda2v
    assert target_slots(f) == (SlotSpec("clip", 1, 32), SlotSpec("t5", 17, 24))
    targets = load_text_targets(f, CLASSES, tmp_path)
    assert targets.raw["clip"].shape == (3, 32) and targets.raw["t5"].shape == (3, 17, 24)
    assert not np.allclose(targets.raw["clip"][0], targets.raw["clip"][1])  # one target per class
    assert targets.standardized("t5").std() == pytest.approx(1.0, abs=0.1)

    import feda2v_flwr.encoders.text_targets as module

    monkeypatch.setattr(module, "encode_clip", lambda *a, **k: pytest.fail("re-encoded a cached target"))
    again = load_text_targets(f, CLASSES, tmp_path)
    np.testing.assert_array_equal(again.raw["t5"], targets.raw["t5"])
    other = tiny_config(feda2v={"target_profile": "flux", "text_encoders": encoders, "prompt_template": "{label}"})
    with pytest.raises(pytest.fail.Exception):  # another template is another cache entry
        load_text_targets(other.feda2v, CLASSES, tmp_path)


def test_sd_targets_are_clip_token_states(encoders, tmp_path):
    f = tiny_config(feda2v={"target_profile": "sd", "text_encoders": encoders}).feda2v
    assert target_slots(f) == (SlotSpec("clip", 77, 32),)
    assert load_text_targets(f, CLASSES, tmp_path).raw["clip"].shape == (3, 77, 32)


def test_the_original_target_file_is_read_with_exact_shapes(tmp_path):
    entries = {
        c.upper(): {"flux": {"prompt_embeds": torch.randn(1, 17, 40), "pooled_prompt_embeds": torch.randn(1, 12)}}
        for c in CLASSES
    }
    path = tmp_path / "esc50_text_embs_dict.pt"
    torch.save(entries, path)
    f = tiny_config(feda2v={"target_profile": "flux", "targets_file": str(path)}).feda2v
    assert target_slots(f) == (SlotSpec("clip", 1, 12), SlotSpec("t5", 17, 40))
    targets = load_text_targets(f, CLASSES, tmp_path / "cache")
    np.testing.assert_array_equal(targets.raw["t5"][1], entries["RAIN"]["flux"]["prompt_embeds"][0].numpy())
    with pytest.raises(ValueError, match=r"no targets for classes \['engine'\]"):
        load_text_targets(f, [*CLASSES, "engine"], tmp_path / "cache")
    entries["DOG"]["flux"]["prompt_embeds"] = torch.randn(1, 16, 40)
    torch.save(entries, path)
    with pytest.raises(ValueError, match="different shapes across classes"):
        load_text_targets(f, CLASSES, tmp_path / "other-cache")


def test_a_missing_text_encoder_fails_with_how_to_supply_it(tmp_path):
    f = tiny_config(feda2v={"target_profile": "flux", "text_encoders": {"clip_model": str(tmp_path / "nope")}}).feda2v
    with pytest.raises(ModelLoadError, match="(?s)Cannot load the CLIP text config.*save_pretrained"):
        target_slots(f)


def test_a_node_trains_flux_shaped_adapters_on_ast_tokens(encoders, tmp_path):
    config = tiny_config(
        feda2v={
            "audio_encoder": "ast",
            "ast": {"model": save_tiny_ast(tmp_path / "ast")},
            "target_profile": "flux",
            "text_encoders": encoders,
        },
        data={"cache_dir": str(tmp_path)},
    )
    task = ClientTask(config, 0, 2, tmp_path)
    outcome = task.fit(task.initial_arrays(), 1, None, None)
    assert outcome.metrics["train_loss_clip"] > 0 and outcome.metrics["train_loss_t5"] > 0
    emb, _ = task.split("train")
    assert task.model["t5"](emb[:2]).shape == (2, 17, 24) and task.model["clip"](emb[:2]).shape == (2, 32)


def test_flux_targets_are_exactly_the_unmasked_encoder_outputs(encoders, tmp_path):
    from transformers import AutoTokenizer, CLIPTextModel, T5EncoderModel

    f = tiny_config(feda2v={"target_profile": "flux", "text_encoders": encoders}).feda2v
    targets = load_text_targets(f, CLASSES, tmp_path)
    prompts = [f"a photo of {c}" for c in CLASSES]

    def ids(model: str, length: int) -> torch.Tensor:
        tokenizer = AutoTokenizer.from_pretrained(model)
        return tokenizer(prompts, padding="max_length", max_length=length, return_tensors="pt")["input_ids"]

    with torch.no_grad():
        pooled = CLIPTextModel.from_pretrained(encoders["clip_model"])(ids(encoders["clip_model"], 77)).pooler_output
        states = T5EncoderModel.from_pretrained(encoders["t5_model"])(ids(encoders["t5_model"], 17)).last_hidden_state
    np.testing.assert_allclose(targets.raw["clip"], pooled.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(targets.raw["t5"], states.numpy(), rtol=1e-5, atol=1e-5)  # padding included
