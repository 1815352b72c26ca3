"""The ``ast`` encoder on a tiny randomly initialised AST saved to a temp dir (no network)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import TINY_AST_TOKENS, save_tiny_ast, tiny_config
from feda2v_flwr.encoders import EmbeddingCache, ModelLoadError, audio_embed_dim, build_audio_encoder
from feda2v_flwr.training.task import ClientTask


@pytest.fixture(scope="module")
def tiny_ast(tmp_path_factory) -> str:
    return save_tiny_ast(tmp_path_factory.mktemp("tiny-ast"))


def _config(model: str, **data):
    return tiny_config(feda2v={"audio_encoder": "ast", "ast": {"model": model, "batch_size": 3}}, data=data)


def test_ast_encodes_full_sequences_once_and_then_only_from_the_cache(tiny_ast, tmp_path):
    config = _config(tiny_ast, sample_rate=22050)  # resampled to AST's 16 kHz
    encoder = build_audio_encoder(config)
    assert audio_embed_dim(config) == encoder.embed_dim == 32 and encoder._model is None  # lazy
    waves = [np.sin(np.linspace(0, 100 * (i + 1), 22050)).astype(np.float32) for i in range(4)]
    out = encoder.encode(waves)
    assert out.shape == (4, TINY_AST_TOKENS, 32) and out.dtype == np.float32 and encoder.calls == 4
    assert not np.allclose(out[0], out[1])  # different sounds, different embeddings

    from feda2v_flwr.data.partition import load_partition

    clips = load_partition(config, 0, 2).splits["train"][:5]
    cache = EmbeddingCache(tmp_path, build_audio_encoder(config))
    first = cache.embed(clips)
    again = EmbeddingCache(tmp_path, build_audio_encoder(config))  # a new process: weights never loaded
    np.testing.assert_array_equal(again.embed(clips), first)
    assert cache.encoder.calls == 5 and again.encoder.calls == 0 and again.encoder._model is None


def test_cls_only_is_sliced_after_the_cache(tiny_ast, tmp_path):
    full = ClientTask(_config(tiny_ast, cache_dir=str(tmp_path)), 0, 2, tmp_path)
    emb, _ = full.split("train")
    assert emb.shape[1:] == (TINY_AST_TOKENS, 32)
    cls_config = tiny_config(
        feda2v={"audio_encoder": "ast", "ast": {"model": tiny_ast}, "use_cls_token_only": True},
        data={"cache_dir": str(tmp_path)},
    )
    cls_only = ClientTask(cls_config, 0, 2, tmp_path)
    cls_emb, _ = cls_only.split("train")
    assert cls_emb.shape[1:] == (1, 32) and cls_only.cache.encoder.calls == 0  # same cache entries
    np.testing.assert_array_equal(cls_emb.numpy(), emb[:, :1].numpy())


def test_a_missing_model_fails_with_how_to_supply_it(tmp_path):
    with pytest.raises(
        ModelLoadError,
        match="(?s)Cannot load the AST model config .*no such directory.*save_pretrained.*HF_HUB_OFFLINE=1",
    ):
        build_audio_encoder(_config(str(tmp_path / "no-such-model")))


def test_the_cache_key_changes_with_the_model_and_the_clip_length(tiny_ast, tmp_path):
    other = save_tiny_ast(tmp_path / "other")
    key = build_audio_encoder(_config(tiny_ast)).cache_key()
    assert key == build_audio_encoder(_config(tiny_ast)).cache_key()
    assert key != build_audio_encoder(_config(other)).cache_key()  # another checkpoint
    assert key != build_audio_encoder(_config(tiny_ast, clip_seconds=2.0)).cache_key()


def test_new_weights_in_the_same_folder_are_a_new_cache_key(tmp_path):
    folder = save_tiny_ast(tmp_path / "model")
    key = build_audio_encoder(_config(folder)).cache_key()
    save_tiny_ast(tmp_path / "model")  # other random weights, same path, within the same second
    assert build_audio_encoder(_config(folder)).cache_key() != key


def test_max_length_crops_or_stretches_the_time_axis_of_the_position_embeddings(tiny_ast):
    from transformers import ASTModel

    from feda2v_flwr.encoders.ast import adapt_time_length, token_count

    original = ASTModel.from_pretrained(tiny_ast).embeddings.position_embeddings.detach()  # 2 + 1 x 5 patches
    short = ASTModel.from_pretrained(tiny_ast)
    adapt_time_length(short, 44)  # (44 - 16) // 10 + 1 = 3 time patches: the centre three of five
    positions = short.embeddings.position_embeddings.detach()
    assert positions.shape == (1, 5, 32) and short.config.max_length == 44
    np.testing.assert_array_equal(positions[:, :2], original[:, :2])  # CLS and distillation kept
    np.testing.assert_array_equal(positions[:, 2:], original[:, 3:6])
    long = ASTModel.from_pretrained(tiny_ast)
    adapt_time_length(long, 104)  # 9 time patches, interpolated
    assert long.embeddings.position_embeddings.shape == (1, 11, 32)
    assert token_count(long.config, 104) == 11 and token_count(long.config, 64) == TINY_AST_TOKENS

    waves = [np.sin(np.linspace(0, 100 * (i + 1), 16000)).astype(np.float32) for i in range(2)]
    default = build_audio_encoder(_config(tiny_ast))
    for max_length, tokens in ((44, 5), (104, 11), (64, TINY_AST_TOKENS)):
        config = tiny_config(feda2v={"audio_encoder": "ast", "ast": {"model": tiny_ast, "max_length": max_length}})
        encoder = build_audio_encoder(config)
        assert encoder.encode(waves).shape == (2, tokens, 32)
        assert (encoder.cache_key() == default.cache_key()) == (max_length == 64)  # the model's own length
    with pytest.raises(ValueError, match="shorter than one patch"):
        token_count(long.config, 8)
