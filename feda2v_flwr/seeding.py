"""Every seed the package derives from the config's seeds, one named stream each, in one place.

A stream gets its own numbers from ``training.seed`` (or ``data.split_seed``, ``data.seed``) and
the round, node or class it belongs to, so two uses never share draws and a resumed run draws
what an uninterrupted one would. Names are folded in with crc32, not ``hash()``, which Python
salts per process. The arithmetic is the one each stream has always had: changing it changes
every result, so a new stream gets a new function here rather than an offset at its call site.
"""

from __future__ import annotations

import zlib

import numpy as np

_ROUND = 1_000_003  # spreads runs' seeds apart from rounds and nodes (a prime)
_NODE = 7919  # spreads rounds apart from nodes (a prime)
_SERVER_SAMPLING = 10_007  # the server step's torch.Generator
_SERVER_GENERATOR = 20_011  # the server generators' initial weights
_SPLIT_CAP = 1  # data.max_clips_per_class's draw, apart from the split's own
_VOICES = 1  # the espeak voice choice, apart from the recordings' draws


def name_seed(name: str) -> int:
    """A process-independent number for a class, group or generator key."""
    return zlib.crc32(name.encode())


# ---- nodes -------------------------------------------------------------------------------------
def node_round_seed(seed: int, server_round: int, partition_id: int) -> int:
    """A node's draws in one round: batch order, noise, its global torch generator."""
    return seed * _ROUND + server_round * _NODE + partition_id


def mixture_seed(round_seed: int, class_name: str) -> int:
    """The Gaussian mixture a node fits to one class's embeddings in a round."""
    return (round_seed + name_seed(class_name)) % 2**32


def client_generator_seed(seed: int, partition_id: int, key: str) -> int:
    """The initial weights of a node's generator for ``key`` (a class or a group of classes)."""
    return seed * _ROUND + partition_id * _NODE + name_seed(key)


# ---- server ------------------------------------------------------------------------------------
def server_round_seed(seed: int, server_round: int) -> int:
    """Torch's global generator during the server step of a round (e.g. GAN dropout)."""
    return seed * _ROUND + server_round


def server_sampling_seed(seed: int) -> int:
    """The server step's own generator: draws from statistics, generator samples, batch order."""
    return seed + _SERVER_SAMPLING


def server_generator_seed(seed: int, class_name: str | None = None) -> int:
    """The server generator's initial weights (one per class: also by its name, so a class's
    generator does not depend on the order classes arrive in)."""
    base = seed + _SERVER_GENERATOR
    return base if class_name is None else base + name_seed(class_name)


def participants_rng(seed: int, server_round: int) -> np.random.Generator:
    """Which partitions train in a round under partial participation."""
    return np.random.default_rng([seed, server_round])


# ---- data --------------------------------------------------------------------------------------
def split_rng(split_seed: int, class_name: str) -> np.random.Generator:
    """The order a class's clips are split in (train / val / test, or groups)."""
    return np.random.default_rng(split_seed + name_seed(class_name))


def clip_cap_rng(split_seed: int, class_name: str) -> np.random.Generator:
    """Which clips of a class ``data.max_clips_per_class`` keeps."""
    return np.random.default_rng([split_seed, name_seed(class_name), _SPLIT_CAP])


def procedural_clip_seed(class_name: str, index: int, seed: int) -> int:
    """The ``index``-th procedural clip of a class."""
    return (name_seed(class_name) + _ROUND * index + _NODE * seed) % 2**32


def recording_rng(seed: int, name: str, take: int) -> np.random.Generator:
    """The augmentation or voice settings of one prepared recording (``feda2v-data prepare``)."""
    return np.random.default_rng([seed, name_seed(name), take])


def voice_choice_rng(seed: int) -> np.random.Generator:
    """Which espeak voices ``feda2v-data prepare espeak`` uses."""
    return np.random.default_rng([seed, _VOICES])
