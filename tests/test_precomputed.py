"""The ``precomputed`` dataset and encoder: .npy arrays (T, D) per clip, passed through unchanged,
never copied into the embedding cache; shape errors name the file."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_config
from feda2v_flwr.config import ConfigError
from feda2v_flwr.data import DatasetError, federation_classes, load_partition
from feda2v_flwr.encoders import EmbeddingCache, PrecomputedEncoder, audio_embed_dim, build_audio_encoder
from feda2v_flwr.training.task import ClientTask

CLASSES = ("rain", "siren", "wind")
TOKENS, DIM = 6, 12


def embedding(class_index: int, clip: int) -> np.ndarray:
    """A recognisable (T, D) array: every value encodes class and clip."""
    return np.full((TOKENS, DIM), 100 * class_index + clip, dtype=np.float32) + np.arange(DIM, dtype=np.float32)


@pytest.fixture
def embeddings_root(tmp_path: Path) -> Path:
    """3 classes x 5 arrays (float64 on disk for one class: read as float32) and a non-.npy file."""
    root = tmp_path / "embeddings"
    for k, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(5):
            array = embedding(k, i)
            np.save(root / name / f"{name}_{i}.npy", array.astype(np.float64) if name == "wind" else array)
    (root / "rain" / "notes.txt").write_text("not an embedding")
    return root


def precomputed(root: Path, **data) -> dict:
    return {
        "feda2v": {"audio_encoder": "precomputed"},
        "data": {"dataset": "precomputed", "root": str(root), "classes": None, **data},
    }


@pytest.fixture
def propagating_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logging.getLogger("feda2v_flwr"), "propagate", True)


def test_embed_dim_comes_from_one_file_header(embeddings_root, monkeypatch):
    calls = []
    real_load = np.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("mmap_mode"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(np, "load", spy)
    assert audio_embed_dim(tiny_config(**precomputed(embeddings_root))) == DIM
    assert calls == ["r"]  # one header, memory-mapped: no array is read


def test_partition_and_cache_pass_the_arrays_through_without_storing_them(embeddings_root, tmp_path):
    config = tiny_config(**precomputed(embeddings_root, train_ratio=0.6, val_ratio=0.2))
    assert federation_classes(config) == list(CLASSES)
    data = load_partition(config, 0, 1)
    assert (data.count("train"), data.count("val"), data.count("test")) == (9, 3, 3)
    encoder = build_audio_encoder(config)
    assert isinstance(encoder, PrecomputedEncoder) and encoder.embed_dim == DIM
    cache = EmbeddingCache(tmp_path / "cache", encoder)
    clips = data.splits["train"]
    emb = cache.embed(clips)
    assert emb.shape == (9, TOKENS, DIM) and emb.dtype == np.float32
    for row, clip in zip(emb, clips, strict=True):
        k, i = CLASSES.index(clip.class_name), int(clip.source.stem.split("_")[1])
        np.testing.assert_array_equal(row, embedding(k, i))
    assert encoder.calls == 9
    cache.embed(clips)
    assert encoder.calls == 18  # read from their files again: nothing was cached
    assert not (tmp_path / "cache").exists()  # not even the cache folder


def test_an_unreadable_array_is_skipped_with_one_warning_naming_it(embeddings_root, caplog, propagating_logs):
    broken = embeddings_root / "siren" / "siren_9.npy"
    broken.write_bytes(b"\x93NUMPY garbage")
    with caplog.at_level(logging.INFO, logger="feda2v_flwr"):
        data = load_partition(tiny_config(**precomputed(embeddings_root)), 0, 1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(broken) in warnings[0]
    assert sum(c.class_name == "siren" for split in data.splits.values() for c in split) == 5
    assert any("1 unreadable files skipped" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("shape", [(TOKENS, DIM + 1), (TOKENS + 2, DIM), (TOKENS * DIM,)])
def test_an_array_of_another_shape_fails_naming_the_file(embeddings_root, shape):
    odd = embeddings_root / "wind" / "wind_odd.npy"
    np.save(odd, np.zeros(shape, np.float32))
    expected = rf"{odd} holds a float32 array of shape {re.escape(str(shape))}.*shape \(T, D\) = \(6, 12\) of .*rain_0"
    with pytest.raises(DatasetError, match=expected):
        load_partition(tiny_config(**precomputed(embeddings_root)), 0, 1)


def test_the_first_array_must_be_a_float_matrix(embeddings_root):
    first = embeddings_root / "rain" / "rain_0.npy"
    np.save(first, np.zeros((TOKENS, DIM), dtype=np.int64))
    with pytest.raises(DatasetError, match=rf"{first} holds a int64 array .* must be a float array \(T, D\)"):
        audio_embed_dim(tiny_config(**precomputed(embeddings_root)))


def test_the_encoder_rejects_an_array_changed_after_listing_naming_its_file(embeddings_root, tmp_path):
    config = tiny_config(**precomputed(embeddings_root))
    clips = load_partition(config, 0, 1).splits["train"]
    np.save(clips[0].source, np.zeros((TOKENS, DIM + 4), np.float32))  # replaced after the listing
    with pytest.raises(ValueError, match=rf"{clips[0].source}: this embedding has shape \(6, 16\)"):
        EmbeddingCache(tmp_path, build_audio_encoder(config)).embed(clips)


def test_precomputed_dataset_and_encoder_require_each_other(embeddings_root):
    with pytest.raises(ConfigError, match="set feda2v.audio_encoder to 'precomputed'"):
        tiny_config(data={"dataset": "precomputed", "root": str(embeddings_root), "classes": None})
    with pytest.raises(ConfigError, match="audio_encoder 'precomputed' reads embeddings .* set data.dataset"):
        tiny_config(feda2v={"audio_encoder": "precomputed"})


def test_client_task_trains_on_precomputed_embeddings(embeddings_root, cache_dir):
    task = ClientTask(tiny_config(**precomputed(embeddings_root, cache_dir=str(cache_dir))), 1, 3, cache_dir)
    assert task.partition.classes == ["siren"]
    emb, labels = task.split("train")
    assert emb.shape == (task.partition.count("train"), TOKENS, DIM) and set(labels.tolist()) == {1}
    assert task.cache.encoder.calls == task.partition.count("train")
    task.split("train")
    assert task.cache.encoder.calls == task.partition.count("train")  # kept in memory for the run
    outcome = task.fit(task.initial_arrays(), 1, None, None)
    assert outcome.num_examples == task.partition.count("train") and outcome.metrics["classes"] == "siren"
