"""``feda2v-data prepare``: the sonic-pi and espeak audiofolders, and ``data.split_by: "groups"``."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import soundfile

from conftest import need_offline_asset, tiny_config
from feda2v_flwr.config.paths import ConfigError
from feda2v_flwr.data.datasets import file_group
from feda2v_flwr.data.download import main as data_main
from feda2v_flwr.data.partition import load_partition
from feda2v_flwr.data.prepare import (
    SONIC_PI_SAMPLES,
    EspeakSettings,
    PrepareError,
    SonicPiSettings,
    prepare_espeak,
    prepare_sonic_pi,
)


def _fake_samples(folder, families: dict[str, int]):
    """FLAC 'samples' named like Sonic Pi's: <family>_<n>.flac, 44.1 kHz, 0.2-0.8 s of a decaying tone."""
    folder.mkdir()
    for f_index, (family, count) in enumerate(families.items()):
        for n in range(count):
            seconds = 0.2 + 0.6 * n / max(count, 2)
            t = np.arange(int(seconds * 44_100)) / 44_100
            wave = np.sin(2 * np.pi * (100 + 200 * f_index + 10 * n) * t) * np.exp(-4 * t)
            soundfile.write(folder / f"{family}_{n}.flac", np.stack([wave, wave], axis=1) * 0.5, 44_100)
    return folder


def _digest(root) -> str:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return hashlib.sha256(b"".join(p.relative_to(root).as_posix().encode() + p.read_bytes() for p in files)).hexdigest()


def test_sonic_pi_families_become_classes_of_augmented_clips_deterministically(tmp_path):
    source = _fake_samples(tmp_path / "samples", {"bd": 8, "tabla": 9, "guit": 4})  # guit: too few recordings
    settings = SonicPiSettings(clips_per_class=10, seconds=0.5, seed=3)
    message = prepare_sonic_pi(tmp_path / "a", settings, source)
    assert "20 clips of 2 classes" in message and "CC0" in message
    root = tmp_path / "a"
    assert sorted(p.name for p in root.iterdir()) == ["bd", "prepared.json", "tabla"]
    clips = sorted((root / "bd").iterdir())
    assert len(clips) == 10 and {file_group(p) for p in clips} == {f"bd_{n}" for n in range(8)}  # cycles through
    info = soundfile.info(clips[0])
    assert (info.samplerate, info.channels, info.frames) == (44_100, 1, 22_050)
    assert json.loads((root / "prepared.json").read_text())["classes"] == ["bd", "tabla"]
    # Seeded: the same command writes the same bytes; another seed other clips.
    prepare_sonic_pi(tmp_path / "b", settings, source)
    assert _digest(root) == _digest(tmp_path / "b")
    prepare_sonic_pi(tmp_path / "c", SonicPiSettings(clips_per_class=10, seconds=0.5, seed=4), source)
    assert _digest(tmp_path / "c") != _digest(root)
    # Again on a complete build: nothing to do; with other settings: rebuilt in place.
    assert "nothing to do" in prepare_sonic_pi(root, settings, source)
    prepare_sonic_pi(root, SonicPiSettings(clips_per_class=4, seconds=0.5, seed=3), source)
    assert len(list((root / "bd").iterdir())) == 4


def test_prepare_refuses_a_folder_with_other_files_and_says_what_to_install(tmp_path, capsys):
    source = _fake_samples(tmp_path / "samples", {"bd": 8, "tabla": 8})
    busy = tmp_path / "busy"
    (busy / "my-thesis").mkdir(parents=True)
    with pytest.raises(PrepareError, match="is not empty"):
        prepare_sonic_pi(busy, SonicPiSettings(clips_per_class=3, seconds=0.5), source)
    assert (busy / "my-thesis").is_dir()
    assert data_main(["prepare", "sonic-pi", "--root", str(tmp_path / "x"), "--source", str(tmp_path / "none")]) == 1
    assert "apt-get install sonic-pi-samples" in capsys.readouterr().err


def test_a_group_split_never_puts_one_recording_in_two_splits(tmp_path):
    source = _fake_samples(tmp_path / "samples", {"bd": 10, "tabla": 10})
    root = tmp_path / "sonic"
    prepare_sonic_pi(root, SonicPiSettings(clips_per_class=30, seconds=0.5), source)
    config = tiny_config(
        data={
            "dataset": "audiofolder",
            "root": str(root),
            "classes": None,
            "clip_seconds": 0.5,
            "sample_rate": 44_100,
            "split_by": "groups",
            "train_ratio": 0.4,
            "val_ratio": 0.2,
        },
        federation={"num_clients": 1},
    )
    splits = load_partition(config, 0, 1).splits
    for class_name in ("bd", "tabla"):
        groups = {s: {file_group(c.source) for c in clips if c.class_name == class_name} for s, clips in splits.items()}
        assert [len(groups[s]) for s in ("train", "val", "test")] == [4, 2, 4]  # of 10 recordings
        train, val, test = groups["train"], groups["val"], groups["test"]
        assert not (train & test or train & val or val & test)
    assert sum(len(clips) for clips in splits.values()) == 60
    with pytest.raises(ConfigError, match="split_by 'groups' reads the group from file names"):
        tiny_config(data={"split_by": "groups"})


def test_the_debian_sonic_pi_samples_give_ten_families():
    need_offline_asset(SONIC_PI_SAMPLES.is_dir(), "Debian's sonic-pi-samples")
    from feda2v_flwr.data.prepare import sonic_pi_families

    families = sonic_pi_families(SONIC_PI_SAMPLES)
    assert list(families) == ["ambi", "bass", "bd", "drum", "elec", "glitch", "loop", "mehackit", "perc", "tabla"]
    assert min(len(v) for v in families.values()) == 8


def test_espeak_speaks_every_word_in_every_voice_deterministically(tmp_path):
    need_offline_asset(shutil.which("espeak-ng") is not None, "espeak-ng")
    settings = EspeakSettings(speakers=3, takes=2, seed=1)
    assert "10 words x 3 voices x 2 takes" in prepare_espeak(tmp_path / "a", settings)
    manifest = json.loads((tmp_path / "a" / "prepared.json").read_text())
    assert manifest["classes"] == ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
    voices = manifest["speakers"]
    for word in manifest["classes"]:
        files = sorted((tmp_path / "a" / word).iterdir())
        assert [f.name for f in files] == [f"{v}__{t}.wav" for v in voices for t in (0, 1)]
        info = soundfile.info(files[0])
        assert info.samplerate == 22_050 and 0.2 < info.duration < 2.0
    prepare_espeak(tmp_path / "b", settings)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    with pytest.raises(PrepareError, match="--speakers must be between 2 and"):
        prepare_espeak(tmp_path / "c", EspeakSettings(speakers=1))
