"""``data.clip_seconds: "auto"``: the clip length measured from the dataset's own files.

Every clip is cut or zero-padded to ``data.clip_seconds``; on a dataset of short recordings the
default 5 s is mostly silence. ``"auto"`` takes the ``data.auto_clip_percentile`` (default 100:
the longest) of the federation's readable clips, read from file headers only. Every process
that loads the config measures the same files and gets the same number; the launchers measure
once and pass the number on, so a deployment's nodes need no copy of the server's data.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from feda2v_flwr.config.paths import ConfigError
from feda2v_flwr.config.schema import ExperimentConfig
from feda2v_flwr.data.audio_files import audio_problem
from feda2v_flwr.data.datasets import DatasetError, index_dataset
from feda2v_flwr.data.partition import federation_classes

log = logging.getLogger(__name__)

AUTO = "auto"
SHORTEST_CLIP_SECONDS = 0.25  # data.clip_seconds must exceed 0.2 s (the encoders' shortest input)
MEASURED_DATASETS = ("esc50", "audiofolder", "vegas", "vggsound")


def with_measured_clip_seconds(config: ExperimentConfig) -> ExperimentConfig:
    """``config`` with ``data.clip_seconds`` a number: measured when it is ``"auto"``."""
    data = config.data
    if data.clip_seconds != AUTO:
        return config
    if data.dataset not in MEASURED_DATASETS:
        raise ConfigError(
            f"data.clip_seconds 'auto' measures the clips of a dataset of audio files; the '{data.dataset}' dataset "
            "has none to measure. Give data.clip_seconds in seconds."
        )
    try:
        seconds, measured = measure_clip_seconds(config)
    except DatasetError as err:
        raise ConfigError(
            f"data.clip_seconds 'auto' measures the clips under data.root, which this machine cannot read: {err} "
            "Give data.clip_seconds in seconds (feda2v-sim and feda2v-deploy run measure it for every process)."
        ) from None
    log.info(
        "data.clip_seconds 'auto': %.2f s (percentile %g of %d readable clips)",
        seconds,
        data.auto_clip_percentile,
        measured,
    )
    return config.model_copy(update={"data": data.model_copy(update={"clip_seconds": seconds})})


def measure_clip_seconds(config: ExperimentConfig) -> tuple[float, int]:
    """(the ``data.auto_clip_percentile`` of the federation classes' readable clip durations,
    rounded up to 10 ms and at least ``SHORTEST_CLIP_SECONDS``; how many clips were measured)."""
    data = config.data
    index = index_dataset(data)
    classes = set(federation_classes(config))
    durations = []
    for file in index.files:
        if file.class_name in classes:
            problem, seconds = audio_problem(file.path)
            if problem is None:
                durations.append(seconds)
    if not durations:
        raise ConfigError(
            f"data.clip_seconds 'auto': no readable clip of classes {sorted(classes)} under {data.root}. "
            "Check data.root and data.classes."
        )
    value = float(np.percentile(durations, data.auto_clip_percentile))
    return max(SHORTEST_CLIP_SECONDS, math.ceil(value * 100 - 1e-6) / 100), len(durations)
