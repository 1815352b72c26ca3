"""``feda2v-export RUN_DIR OUT_DIR``: a finished run's global adapters as a folder to share
(``adapters.safetensors``, ``config.json``, a Hugging Face Hub model card ``README.md``), and
:func:`load_adapters` to rebuild them from that folder alone.

Usage::

    feda2v-export outputs/<run> exports/<run>
    feda2v-export outputs/<run> exports/<run>-best --checkpoint outputs/<run>/checkpoints/server_generator_best.pt

Errors (no run folder, no checkpoint, a non-empty OUT_DIR without ``--force``) are one line on
stderr and exit code 2.

The names below load on first use, so that :func:`main` can turn on ``HF_HUB_OFFLINE`` before
any Hugging Face library is imported: the encoders' configs then come from the local cache, as in
the run (the AST embedding-cache key holds the model's commit), and the export uses no network.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from feda2v_flwr.export.bundle import ExportedAdapters, ExportError, export_run, load_adapters

__all__ = ["ExportError", "ExportedAdapters", "export_run", "load_adapters", "main"]


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers / huggingface_hub read it, at import
    from feda2v_flwr.export.cli import main as cli_main

    return cli_main(argv)


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("feda2v_flwr.export.bundle"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
