"""How hard the real-recording testbeds are, and what the pretrained aisfx encoder adds.

Builds (if absent) the two datasets of ``feda2v-data prepare`` with their default settings under
``--data`` (sonic-pi: 10 families x 40 clips of 3 s; espeak: 10 words x 30 voices x 2 takes),
encodes every clip once per encoder and reports two training-free scores on token 0 (the clip's
block mean), both on embeddings centred over the dataset (aisfx's are post-ReLU, so raw cosines
are all high):

- ``1-NN``: leave-one-group-out nearest neighbour (cosine): a clip's neighbour must come from
  another recording (sonic-pi) or voice (espeak) of any class;
- ``NCM``: nearest class mean (cosine) with the runs' group split (``data.split_by: "groups"``,
  ``train_ratio`` 0.4, ``val_ratio`` 0.1, ``split_seed`` 42, as ``configs/sonic_pi_aisfx.json``):
  class means of the train groups' clips, accuracy on the test groups' clips. This is the
  nearest-class-mean head that a federation's uploads give for free, pooled over all nodes.

Encoders: ``aisfx`` (pretrained), ``aisfx-random`` (the same network with a seeded random
initialisation: what pretraining is worth) and ``mel-patch`` (the offline default). Usage:
``python benchmarks/testbeds.py [--data outputs/testbeds]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from feda2v_flwr.config.schema import AisfxSettings, DataSettings, MelPatchSettings
from feda2v_flwr.data.audio_files import read_audio
from feda2v_flwr.data.datasets import file_group
from feda2v_flwr.data.prepare import EspeakSettings, SonicPiSettings, prepare_espeak, prepare_sonic_pi
from feda2v_flwr.data.splits import group_splits
from feda2v_flwr.encoders.aisfx import AisfxEncoder
from feda2v_flwr.encoders.mel_patch import MelPatchEncoder

TESTBEDS = {  # name: (sample rate, clip seconds) the clips are read at
    "sonic-pi": (44_100, 3.0),
    "espeak": (22_050, 1.0),
}
SPLIT = DataSettings(train_ratio=0.4, val_ratio=0.1, split_seed=42)


def encoders(sample_rate: int, seconds: float) -> dict:
    random_init = AisfxEncoder(AisfxSettings(), sample_rate=sample_rate, clip_seconds=seconds)
    from aisfx.models.cnn2d import EmbeddingNet

    torch.manual_seed(0)
    random_init._net = EmbeddingNet("max", 3, 1, 64).requires_grad_(False).eval()
    return {
        "aisfx": AisfxEncoder(AisfxSettings(), sample_rate=sample_rate, clip_seconds=seconds),
        "aisfx-random": random_init,
        "mel-patch": MelPatchEncoder(MelPatchSettings(), sample_rate=sample_rate, clip_seconds=seconds),
    }


def unit(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=0)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)


def nearest_neighbour(x: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> float:
    similarity = unit(x) @ unit(x).T
    similarity[groups[:, None] == groups[None, :]] = -np.inf  # never a clip of the same recording / voice
    return float((labels[similarity.argmax(axis=1)] == labels).mean())


def nearest_class_mean(x: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> tuple[float, int]:
    x = unit(x)
    split = np.empty(len(labels), dtype=object)
    for name in np.unique(labels):
        split_of = group_splits(str(name), set(groups[labels == name]), SPLIT)
        mask = labels == name
        split[mask] = [split_of[g] for g in groups[mask]]
    classes = np.unique(labels)
    means = np.stack([x[(labels == c) & (split == "train")].mean(axis=0) for c in classes])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    test = split == "test"
    predicted = classes[(x[test] @ means.T).argmax(axis=1)]
    return float((predicted == labels[test]).mean()), int(test.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("outputs/testbeds"))
    args = parser.parse_args()
    print(prepare_sonic_pi(args.data / "sonic-pi", SonicPiSettings()))
    print(prepare_espeak(args.data / "espeak", EspeakSettings()))
    rows = []
    for testbed, (sample_rate, seconds) in TESTBEDS.items():
        files = sorted((args.data / testbed).glob("*/*.*"))
        labels = np.array([f.parent.name for f in files])
        groups = np.array([f"{f.parent.name}/{file_group(f)}" for f in files])
        waves = [read_audio(f, sample_rate=sample_rate, seconds=seconds) for f in files]
        for name, encoder in encoders(sample_rate, seconds).items():
            start = time.perf_counter()
            tokens = encoder.encode(waves)[:, 0]
            seconds_taken = time.perf_counter() - start
            ncm, test_clips = nearest_class_mean(tokens, labels, groups)
            rows.append((testbed, name, nearest_neighbour(tokens, labels, groups), ncm, test_clips, seconds_taken))
            print(rows[-1], flush=True)
    print("\n| testbed | encoder | 1-NN, other groups | NCM, group split (test clips) | encoding time |")
    print("|---|---|---|---|---|")
    for testbed, name, nn, ncm, test_clips, taken in rows:
        print(f"| {testbed} | {name} | {nn:.3f} | {ncm:.3f} ({test_clips}) | {taken:.0f} s |")


if __name__ == "__main__":
    main()
