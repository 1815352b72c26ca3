import numpy as np
import pytest

from conftest import tiny_config
from feda2v_flwr.data import SOUND_CLASSES, load_partition, partition_classes, synthesize
from feda2v_flwr.encoders import EmbeddingCache, build_audio_encoder, load_text_targets
from feda2v_flwr.training.task import ClientTask


def test_procedural_clips_are_deterministic_and_distinct():
    a = synthesize("siren", 3, seed=1, sample_rate=16000, seconds=1.0)
    assert a.shape == (16000,) and a.dtype == np.float32 and np.abs(a).max() <= 1
    np.testing.assert_array_equal(a, synthesize("siren", 3, seed=1, sample_rate=16000, seconds=1.0))
    assert not np.array_equal(a, synthesize("siren", 4, seed=1, sample_rate=16000, seconds=1.0))
    assert len(SOUND_CLASSES) >= 10


def test_partitions_hold_disjoint_classes_covering_the_federation():
    config = tiny_config(data={"classes": None})
    parts = [set(partition_classes(config, pid, 4)) for pid in range(4)]
    assert set().union(*parts) == set(SOUND_CLASSES)
    assert sum(len(p) for p in parts) == len(SOUND_CLASSES)


def test_splits_are_disjoint_and_sized_by_the_ratios(config):
    data = load_partition(config, 0, 2)
    ids = {split: {c.identity for c in clips} for split, clips in data.splits.items()}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    assert data.count("train") == 2 * 7 and data.count("val") == 2 * 1 and data.count("test") == 2 * 2


def test_bad_class_selection_names_the_node_and_class():
    with pytest.raises(ValueError, match="Node 1.*'cat'"):
        load_partition(tiny_config(nodes={"1": {"selected_classes": ["cat"]}}), 1, 2)
    with pytest.raises(ValueError, match="at least one class per node"):
        partition_classes(tiny_config(), 0, 5)


def test_mel_patch_encoder_shape(config):
    encoder = build_audio_encoder(config)
    out = encoder.encode([synthesize("rain", 0, seed=0, sample_rate=16000, seconds=1.0)])
    assert out.shape == (1, encoder.num_tokens, 48) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0], out[0, 1:].mean(0), rtol=1e-5, atol=1e-5)  # token 0 = mean token


def test_embedding_cache_encodes_each_clip_once(config, tmp_path):
    clips = load_partition(config, 0, 2).splits["train"]
    encoder = build_audio_encoder(config)
    cache = EmbeddingCache(tmp_path, encoder)
    first = cache.embed(clips)
    assert encoder.calls == len(clips)
    np.testing.assert_array_equal(cache.embed(clips), first)
    assert encoder.calls == len(clips)  # second pass: all from the cache
    other = EmbeddingCache(tmp_path, build_audio_encoder(tiny_config(feda2v={"mel_patch": {"embed_dim": 24}})))
    assert other.directory != cache.directory  # settings that change the output change the key


def test_encoding_reports_progress_as_log_lines(config, tmp_path, caplog):
    clips = load_partition(config, 0, 2).splits["train"]
    cache = EmbeddingCache(tmp_path, build_audio_encoder(config), batch_size=4)
    with caplog.at_level("INFO", logger="feda2v_flwr.encoders.cache"):
        cache.embed(clips)
        cache.embed(clips)  # all cached: no progress lines
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith(f"Encoding {len(clips)} of {len(clips)} clips")
    assert messages[-1].startswith(f"Encoded {len(clips)} clips in ") and messages[-1].endswith(" clips/s)")
    assert len([m for m in messages if m.startswith("Encoded ")]) == 1


def test_cls_only_is_sliced_after_the_full_sequence_is_cached(cache_dir):
    full = ClientTask(tiny_config(), 0, 2, cache_dir).split("train")[0]
    cls_only = ClientTask(tiny_config(feda2v={"use_cls_token_only": True}), 0, 2, cache_dir).split("train")[0]
    assert cls_only.shape[1] == 1 and full.shape[1] > 1
    np.testing.assert_array_equal(cls_only[:, 0].numpy(), full[:, 0].numpy())


def test_minilm_targets_shapes_cache_and_standardisation(cache_dir):
    classes = ["siren", "rain", "dog"]
    targets = load_text_targets(tiny_config().feda2v, classes, cache_dir)
    assert targets.raw["clip"].shape == (3, 384) and targets.raw["t5"].shape == (3, 17, 384)
    np.testing.assert_allclose(np.linalg.norm(targets.raw["clip"], axis=1), 1.0, rtol=1e-5)
    std = targets.standardized("clip")
    np.testing.assert_allclose(std.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(targets.to_original("clip", std), targets.raw["clip"], atol=1e-6)
    assert len(list((cache_dir / "targets").glob("minilm-*.npz"))) >= 1
    again = load_text_targets(tiny_config().feda2v, classes, cache_dir)
    np.testing.assert_array_equal(again.raw["t5"], targets.raw["t5"])
