"""Route this package's log lines to Flower's console handler (they show in ``flwr log``)."""

from __future__ import annotations

import logging

from flwr.common.logger import FLOWER_LOGGER


def setup_logging(level: int = logging.INFO) -> None:
    for name in ("feda2v_flwr", "strategies"):
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not logger.handlers:
            for handler in FLOWER_LOGGER.handlers:
                logger.addHandler(handler)
            logger.propagate = False
