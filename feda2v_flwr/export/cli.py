"""The ``feda2v-export`` command line (the package's ``main`` makes the process offline first)."""

from __future__ import annotations

import argparse
import sys

from feda2v_flwr.checkpointing.files import CheckpointError
from feda2v_flwr.config import ConfigError
from feda2v_flwr.data.datasets import DatasetError
from feda2v_flwr.encoders import ModelLoadError
from feda2v_flwr.export.bundle import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE, ExportError, export_run

USAGE_ERRORS = (ExportError, CheckpointError, ConfigError, DatasetError, ModelLoadError)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="feda2v-export",
        description="Export a finished run's global adapters as safetensors + config.json + a Hub model card.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run folder, outputs/<run>")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="the folder to write (new or empty, unless --force)")
    parser.add_argument(
        "--checkpoint", help="export this checkpoint (e.g. checkpoints/server_generator_best.pt), not the latest"
    )
    parser.add_argument("--force", action="store_true", help="overwrite the export's files in a non-empty OUT_DIR")
    args = parser.parse_args(argv)
    try:
        export = export_run(args.run_dir, args.out_dir, checkpoint=args.checkpoint, force=args.force)
    except USAGE_ERRORS as err:
        print(f"feda2v-export: {' '.join(str(err).split())}", file=sys.stderr)  # one line
        return 2
    print(
        f"Exported round {export['round']} of {args.run_dir} ({export['checkpoint']}) to {args.out_dir}: "
        f"{WEIGHTS_FILE}, {CONFIG_FILE}, {CARD_FILE}"
    )
    return 0
