"""The named seed streams: the numbers each has always had (results depend on them), and no
module deriving a seed on its own."""

import re
from pathlib import Path

import numpy as np

from feda2v_flwr import seeding

PROJECT = Path(__file__).resolve().parent.parent


def test_each_stream_keeps_its_numbers():
    crc_dog = 2167159165  # zlib.crc32(b"dog")
    assert seeding.name_seed("dog") == crc_dog
    assert seeding.node_round_seed(3, 2, 1) == 3 * 1_000_003 + 2 * 7919 + 1 == 3_015_848
    assert seeding.mixture_seed(3_015_848, "dog") == (3_015_848 + crc_dog) % 2**32
    assert seeding.client_generator_seed(3, 1, "dog") == 3_000_009 + 7919 + crc_dog
    assert seeding.server_round_seed(3, 2) == 3_000_011
    assert seeding.server_sampling_seed(3) == 10_010
    assert seeding.server_generator_seed(3) == 20_014
    assert seeding.server_generator_seed(3, "dog") == 20_014 + crc_dog
    assert seeding.procedural_clip_seed("dog", 4, 3) == (crc_dog + 4_000_012 + 23_757) % 2**32
    draws = {
        "split": (seeding.split_rng(7, "dog"), np.random.default_rng(7 + crc_dog)),
        "cap": (seeding.clip_cap_rng(7, "dog"), np.random.default_rng([7, crc_dog, 1])),
        "participants": (seeding.participants_rng(7, 2), np.random.default_rng([7, 2])),
        "recording": (seeding.recording_rng(7, "dog", 5), np.random.default_rng([7, crc_dog, 5])),
        "voices": (seeding.voice_choice_rng(7), np.random.default_rng([7, 1])),
    }
    for name, (stream, reference) in draws.items():
        assert stream.integers(0, 2**31, 4).tolist() == reference.integers(0, 2**31, 4).tolist(), name


def test_streams_of_one_run_do_not_share_seeds():
    seed, rounds, nodes = 0, range(1, 31), range(10)
    node = {seeding.node_round_seed(seed, r, p) for r in rounds for p in nodes}
    server = {seeding.server_round_seed(seed, r) for r in rounds}
    assert len(node) == len(rounds) * len(nodes) and not node & server
    assert seeding.server_sampling_seed(seed) != seeding.server_generator_seed(seed)


def test_no_module_derives_a_seed_of_its_own():
    """Seeds come from feda2v_flwr/seeding.py: no other module folds names in with crc32 or adds
    the streams' offsets."""
    pattern = re.compile(r"zlib\.crc32|1_000_003|\b7919\b|10_007|20_011")
    offenders = [
        f"{path.relative_to(PROJECT)}:{number}"
        for folder in ("feda2v_flwr", "strategies")
        for path in sorted((PROJECT / folder).rglob("*.py"))
        if path.name != "seeding.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []
