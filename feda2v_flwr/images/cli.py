"""``feda2v-images``: pictures from a checkpoint's global adapters, scored by CLIP zero-shot.

Every node's clips of a split (the partitions the run's config gives, read from this machine's
copy of the data; embeddings from the cache when present) go through the checkpoint's global
adapters and the diffusion pipeline of the target profile. Writes ``node_<id>/<class>.png``
grids and ``metrics.json`` (pooled and per node) into the output folder.

Usage::

    feda2v-images --config configs/x.json --checkpoint outputs/<run>/checkpoints/server_generator_round_10.pt
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from feda2v_flwr.checkpointing.files import CheckpointError
from feda2v_flwr.checkpointing.run import load_checkpoint, saved_adapters
from feda2v_flwr.config.loading import load_config
from feda2v_flwr.config.paths import ConfigError, resolve_run_path
from feda2v_flwr.config.schema import ExperimentConfig
from feda2v_flwr.data.datasets import DatasetError
from feda2v_flwr.devices import resolve_device
from feda2v_flwr.encoders.pretrained import ModelLoadError
from feda2v_flwr.images.drawing import ImageMaker, decode_labels
from feda2v_flwr.images.pipelines import import_diffusers
from feda2v_flwr.images.scoring import image_metrics
from feda2v_flwr.logging_setup import setup_logging
from feda2v_flwr.payload import ndarrays_to_module

log = logging.getLogger(__name__)


def draw_from_checkpoint(config: ExperimentConfig, checkpoint: Path, output: Path) -> dict:
    """Draw and score every node's pictures; returns (and writes) the metrics."""
    from feda2v_flwr.training.task import ClientTask

    payload = load_checkpoint(checkpoint)
    cache_dir = resolve_run_path(config.data.cache_dir)
    num_nodes = config.federation.num_clients
    maker = ImageMaker(config.feda2v.target_profile, config.images, resolve_device(config.training.device))
    per_node: dict[str, dict] = {}
    labels, predictions, classes = [], [], []
    try:
        for node in range(num_nodes):
            task = ClientTask(config, node, num_nodes, cache_dir)
            state = saved_adapters(payload, task.model.state_dict(), checkpoint)
            ndarrays_to_module(task.model, list(state.values()))
            metrics = task.draw_images(maker, output)
            per_node[str(node)] = {k: v for k, v in metrics.items() if k not in ("image_labels", "image_predictions")}
            if metrics["image_count"]:
                labels.append(decode_labels(str(metrics["image_labels"])))
                predictions.append(decode_labels(str(metrics["image_predictions"])))
            classes = task.partition.federation_classes
    finally:
        maker.release()
    if not labels:
        raise DatasetError(f"No node has {config.images.split} clips to draw pictures of")
    pooled = image_metrics(np.concatenate(labels), np.concatenate(predictions), len(classes))
    result = {
        "checkpoint": str(checkpoint),
        "round": payload["round"],
        "split": config.images.split,
        "image_count": int(sum(len(x) for x in labels)),
        **{f"image_{k}": v for k, v in pooled.items()},
        "nodes": per_node,
    }
    output.mkdir(parents=True, exist_ok=True)
    (output / "metrics.json").write_text(json.dumps(result, indent=1))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="feda2v-images", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the run's experiment JSON (or its run folder's config.json)")
    parser.add_argument("--checkpoint", required=True, help="a server checkpoint (holds the global adapters)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override any JSON key (repeatable), e.g. --set images.per_class=8 --set images.low_memory=true",
    )
    parser.add_argument("--output", help="output folder (default: images_<checkpoint name> next to the checkpoint)")
    args = parser.parse_args(argv)
    setup_logging()
    checkpoint = Path(args.checkpoint).resolve()
    output = Path(args.output).resolve() if args.output else checkpoint.parent / f"images_{checkpoint.stem}"
    try:
        config = load_config(args.config, "; ".join(args.set))
        if config.feda2v.target_profile == "minilm":
            raise ConfigError(
                "Pictures need prompt embeddings of a diffusion model: this config's target_profile is 'minilm'; "
                "draw from a run trained with target_profile 'sd' or 'flux'."
            )
        import_diffusers()
        if config.feda2v.adapter_aggregation_mode == "none":
            print(
                "feda2v-images: this run does not aggregate its adapters (adapter_aggregation_mode 'none'); the "
                "checkpoint's global adapters are the server's, not the nodes' own",
                file=sys.stderr,
            )
        result = draw_from_checkpoint(config, checkpoint, output)
    except (ConfigError, CheckpointError, DatasetError, ModelLoadError, ImportError, ValueError) as err:
        print(f"feda2v-images: {err}", file=sys.stderr)
        return 2
    print(
        f"{result['image_count']} pictures ({result['split']} split, round {result['round']}): CLIP zero-shot "
        f"accuracy {result['image_accuracy']:.3f}, balanced accuracy {result['image_balanced_accuracy']:.3f}, "
        f"macro F1 {result['image_macro_f1']:.3f}\nGrids and metrics.json in {output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
