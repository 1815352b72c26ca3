"""The ``aisfx`` encoder: the pretrained sound-effects CNN of the aisfx wheel, loaded offline."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch
from scipy.signal import butter, sosfilt

from conftest import tiny_config
from feda2v_flwr.config.schema import AisfxSettings
from feda2v_flwr.data.audio_files import read_audio
from feda2v_flwr.encoders import ModelLoadError, audio_embed_dim, audio_token_count, build_audio_encoder
from feda2v_flwr.encoders.aisfx import AisfxEncoder, default_weights, load_embedding_net

pytest.importorskip("aisfx", reason="install it with `pip install --no-deps aisfx==0.1.2` (scripts/install.sh does)")


def _tone(seconds: float, rate: int, frequency: float = 440.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    noise = np.random.default_rng(seed).standard_normal(t.size)
    return (0.3 * np.sin(2 * np.pi * frequency * t) * np.exp(-3 * t) + 0.02 * noise).astype(np.float32)


@pytest.fixture(scope="module")
def net():
    return load_embedding_net(default_weights())


def _encoder(net, *, sample_rate: int, clip_seconds: float, **settings) -> AisfxEncoder:
    encoder = AisfxEncoder(AisfxSettings(**settings), sample_rate=sample_rate, clip_seconds=clip_seconds)
    encoder._net = net  # one load per module (0.1 s each, but the tests need not repeat it)
    return encoder


def test_the_wheels_weights_load_weights_only_into_the_embedding_net(net):
    assert sum(p.numel() for p in net.parameters()) == 4_686_144  # the 4.69 M of the aisfx paper's net
    assert not any(p.requires_grad for p in net.parameters()) and not net.training
    state = torch.load(default_weights(), map_location="cpu", weights_only=False)[0]  # a trusted file, here only
    assert torch.equal(net.conv_block1.conv1.weight, state["embedding_net.conv_block1.conv1.weight"])


def test_a_file_that_is_not_a_checkpoint_is_one_clear_error(tmp_path):
    broken = tmp_path / "checkpoint.pth"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match=r"Cannot load the aisfx weights .*--no-deps aisfx==0.1.2"):
        load_embedding_net(broken)
    with pytest.raises(ModelLoadError, match="is not a file"):
        AisfxEncoder(AisfxSettings(weights=str(tmp_path / "absent.pth")), sample_rate=44_100, clip_seconds=1.0)


def test_a_clip_shorter_than_one_block_is_zero_padded_to_one(net):
    """1 s at 44.1 kHz: 44 spectrogram frames, padded to the model's 100 (aisfx itself asserts on it)."""
    short = _encoder(net, sample_rate=44_100, clip_seconds=1.0)
    padded = _encoder(net, sample_rate=44_100, clip_seconds=100 * 1024 / 44_100)  # exactly one block of frames
    wave = _tone(1.0, 44_100)
    wave[-2048:] = 0.0  # so that no centred window past the clip's end sees sound
    tokens = short.encode([wave])
    assert tokens.shape == (1, 2, 512) and short.num_tokens == 2
    np.testing.assert_array_equal(tokens[0, 0], tokens[0, 1])  # one block: the mean token is that block
    # The same as the clip followed by silence up to one block: padding the spectrogram with zeros is
    # padding the wave with silence (log10(1 + 0) = 0).
    np.testing.assert_allclose(tokens, padded.encode([wave]), atol=1e-5)
    assert (tokens >= 0).all() and np.isfinite(tokens).all()  # post-ReLU max-pooled features


def test_longer_clips_give_one_token_per_block_plus_their_mean(net):
    encoder = _encoder(net, sample_rate=16_000, clip_seconds=5.0)  # 16 kHz in: resampled to 44.1 kHz
    tokens = encoder.encode([_tone(5.0, 16_000), _tone(5.0, 16_000, frequency=1500.0, seed=1)])
    assert tokens.shape == (2, 4, 512)  # 216 frames: blocks at 0, 50, 100 (hop 0.5 of 100 frames)
    np.testing.assert_allclose(tokens[:, 0], tokens[:, 1:].mean(axis=1), rtol=1e-6)
    assert not np.allclose(tokens[0], tokens[1])
    wider = _encoder(net, sample_rate=16_000, clip_seconds=5.0, hop_fraction=1.0)
    assert wider.encode([_tone(5.0, 16_000)]).shape == (1, 3, 512)  # blocks at 0 and 100; a partial one dropped


@pytest.mark.parametrize(("sample_rate", "seconds"), [(44_100, 1.0), (44_100, 3.0), (16_000, 5.0), (22_050, 0.5)])
def test_the_configs_token_count_is_the_encoders(sample_rate, seconds):
    config = tiny_config(feda2v={"audio_encoder": "aisfx"}, data={"sample_rate": sample_rate, "clip_seconds": seconds})
    encoder = build_audio_encoder(config)
    assert isinstance(encoder, AisfxEncoder)
    tokens = encoder.encode([_tone(seconds, sample_rate)])
    assert tokens.shape == (1, audio_token_count(config), audio_embed_dim(config))


def _hit(frequency: float, decay: float, seed: int, seconds: float = 2.0, rate: int = 44_100) -> np.ndarray:
    """A drum-like hit: a tone and noise below 8 kHz (as in recordings; MP3 drops the top octave), decaying."""
    t = np.arange(int(round(seconds * rate))) / rate
    noise = sosfilt(butter(4, 8000, fs=rate, output="sos"), np.random.default_rng(seed).standard_normal(t.size))
    return (0.25 * (np.sin(2 * np.pi * frequency * t) + noise) * np.exp(-decay * t)).astype(np.float32)


def test_an_mp3_and_a_44k_wav_of_one_sound_embed_alike(tmp_path, net):
    wave = _hit(60.0, 8.0, seed=0)
    soundfile.write(tmp_path / "clip.wav", wave, 44_100)
    soundfile.write(tmp_path / "clip.mp3", wave, 44_100)
    assert soundfile.info(tmp_path / "clip.mp3").format == "MP3"
    encoder = _encoder(net, sample_rate=44_100, clip_seconds=2.0)
    wav, mp3 = (read_audio(tmp_path / name, sample_rate=44_100, seconds=2.0) for name in ("clip.wav", "clip.mp3"))
    other = _hit(400.0, 2.0, seed=1)
    wav_token, mp3_token, other_token = encoder.encode([wav, mp3, other])[:, 0]
    # Lossy coding (and the MP3 encoder's delay) moves the embedding far less than another sound does.
    assert np.linalg.norm(mp3_token - wav_token) < 0.3 * np.linalg.norm(other_token - wav_token)


def test_the_cache_key_names_the_settings_and_the_weights_file(tmp_path):
    def key(**settings):
        return AisfxEncoder(AisfxSettings(**settings), sample_rate=44_100, clip_seconds=3.0).cache_key()

    copy = tmp_path / "checkpoint.pth"
    copy.write_bytes(default_weights().read_bytes())
    assert key() == key() and key().startswith("aisfx-")
    assert len({key(), key(hop_fraction=0.25), key(weights=str(copy)), key(batch_size=4)}) == 3  # batch: same output


def test_the_log_mel_is_the_packages_librosa_front_end():
    """aisfx's own ``spectrogram_librosa`` path, without librosa: the same numbers (run where librosa is)."""
    librosa = pytest.importorskip("librosa")
    wave = _tone(3.0, 44_100)
    ours = AisfxEncoder(AisfxSettings(), sample_rate=44_100, clip_seconds=3.0).log_mel(wave)
    power = librosa.feature.melspectrogram(
        y=wave / np.abs(wave).max(), sr=44_100, n_mels=96, norm=1.0, fmin=0.0, fmax=22_050.0, htk=True,
        power=2.0, hop_length=1024, win_length=2048,
    )  # fmt: skip
    np.testing.assert_allclose(ours, (np.log10(power * 1e4 + 1) / 9.457798957824707).T, atol=1e-6)
