"""``feda2v-checkpoint``: what a checkpoint holds, without a config or a GPU. Every kind the
project writes: a run checkpoint, a node's state, a client generator.

Usage::

    feda2v-checkpoint outputs/<run>                      # the run's latest checkpoint
    feda2v-checkpoint outputs/<run>/checkpoints/server_generator_round_10.pt --config
    feda2v-checkpoint outputs/<run>/checkpoints/server_generator_latest.json --json
    feda2v-checkpoint outputs/<run>/client_state/node_0_round_10.pt
    feda2v-checkpoint outputs/<run>/client_generators/client_generator_node0_unified_round_10.pt

Errors (missing, corrupt, truncated, not a feda2v checkpoint) are one line on stderr naming the
file, and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from feda2v_flwr.checkpointing.files import CheckpointError, read_payload
from feda2v_flwr.checkpointing.nodes import checked_client_generator, checked_client_state
from feda2v_flwr.checkpointing.run import checked_run_payload, find_checkpoint


def describe_checkpoint(path: str | Path, *, with_config: bool = False) -> dict[str, Any]:
    """A JSON-ready summary of the checkpoint ``path`` stands for (see :func:`find_checkpoint`),
    of whichever kind it is (``kind``: ``run``, ``node_state`` or ``client_generator``)."""
    file = find_checkpoint(path)
    payload = read_payload(file)
    try:
        if isinstance(payload, dict) and payload.get("kind") == "client_generator":
            return _generator_summary(file, checked_client_generator(payload, file))
        if isinstance(payload, dict) and "partition_id" in payload:
            return _node_state_summary(file, checked_client_state(payload, file))
        payload = checked_run_payload(payload, file)
        summary = _summary(file, payload)
        if with_config:
            summary["config"] = json.loads(payload["config"])
    except (AttributeError, TypeError, ValueError, KeyError) as err:  # right keys, wrong contents
        raise CheckpointError(f"Checkpoint {file} has malformed contents ({type(err).__name__}: {err})") from None
    return summary


def _generator_summary(file: Path, payload: dict[str, Any]) -> dict[str, Any]:
    learner = payload["learner"]
    return {
        "kind": "client_generator",
        "file": str(file),
        "format_version": payload["format_version"],
        "round": payload["round"],
        "timestamp": _time(payload["timestamp"]),
        "node": payload["node"],
        "generator_key": payload["generator_key"],
        "granularity": payload["granularity"],
        "classes": list(payload["classes"]),
        "generator": _generator(learner),
        "optimizer_states": {"generator": _optimizer_steps(learner["generator_optimizer_state"])},
    }


def _node_state_summary(file: Path, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "node_state",
        "file": str(file),
        "round": payload["round"],
        "partition_id": payload["partition_id"],
        "records": {name: int(blob.numel()) for name, blob in payload["state"].items()},  # bytes each
    }


def _time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat(timespec="seconds")


def _summary(file: Path, payload: dict[str, Any]) -> dict[str, Any]:
    slots: dict[str, dict[str, Any]] = {}
    for name, tensor in payload["global_adapters"].items():
        slot = slots.setdefault(name.split(".", 1)[0], {"parameters": 0, "tensors": []})
        slot["parameters"] += tensor.numel()
        slot["tensors"].append({"name": name, "shape": list(tensor.shape), "dtype": _dtype(tensor)})
    discriminator = payload["discriminator_args"]
    return {
        "kind": "run",
        "file": str(file),
        "format_version": payload["format_version"],
        "round": payload["round"],
        "timestamp": _time(payload["timestamp"]),
        "generator": {
            **_generator(payload),
            "per_class": {  # generator_conditioning "none": one generator per class
                name: {
                    "class": g["generator_class"],
                    "epochs": g["generator_epochs"],
                    **_state_size(g["generator_state"]),
                }
                for name, g in (payload.get("generator_per_class") or {}).items()
            },
        },
        "discriminator": None
        if discriminator is None
        else {"args": discriminator, **_state_size(payload["discriminator_state"])},
        "global_adapters": slots,
        "optimizer_states": {
            "generator": _optimizer_steps(payload["generator_optimizer_state"]),
            "discriminator": _optimizer_steps(payload["discriminator_optimizer_state"]),
            "finetune": _optimizer_steps(payload["finetune_optimizer_state"]),
        },
        "rng_state": isinstance(payload["rng_state"], torch.Tensor),
        "config_hash": payload["config_hash"],
        "wandb_run_id": payload["wandb_run_id"],
    }


def _generator(fields: dict[str, Any]) -> dict[str, Any]:
    """A saved generator's ``generator_*`` fields (a run checkpoint's, or a client generator's
    learner): type, class, constructor arguments, epochs, tensor and parameter counts."""
    return {
        "type": fields["generator_type"],
        "class": fields["generator_class"],
        "args": fields["generator_args"],
        "epochs": fields["generator_epochs"],
        **_state_size(fields["generator_state"]),
    }


def _dtype(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def _state_size(state: dict[str, torch.Tensor] | None) -> dict[str, int]:
    tensors = list((state or {}).values())
    return {"tensors": len(tensors), "parameters": sum(t.numel() for t in tensors)}


def _optimizer_steps(state: dict[str, Any] | None) -> int | None:
    """None: no optimizer state saved; else the number of parameters it holds state for (0 before
    the first step: learning rates only)."""
    return None if not state else len(state.get("state", {}))


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as aligned text lines (adapters: per slot the parameter count, then its tensors)."""
    if summary["kind"] == "node_state":
        rows = [
            ("kind", "a node's state between rounds"),
            *[(k, summary[k]) for k in ("file", "round", "partition_id")],
        ]
        rows += [(f"record '{name}'", f"{size:,} bytes") for name, size in summary["records"].items()]
        return _aligned(rows)
    if summary["kind"] == "client_generator":
        generator = summary["generator"]
        rows = [("kind", "a client generator"), ("file", summary["file"])]
        rows += [
            ("format version", summary["format_version"]),
            ("round", summary["round"]),
            ("timestamp", summary["timestamp"]),
            ("node", summary["node"]),
            ("generator key", f"{summary['generator_key']} ({summary['granularity']})"),
            ("classes", ", ".join(summary["classes"])),
            ("generator", f"{generator['type']} {generator['class']}, {generator['epochs']} epochs"),
            ("generator args", json.dumps(generator["args"], default=str)),
            ("generator state", f"{generator['tensors']} tensors, {generator['parameters']:,} parameters"),
            ("generator optimizer", _optimizer_text(summary["optimizer_states"]["generator"])),
        ]
        return _aligned(rows)
    generator, discriminator = summary["generator"], summary["discriminator"]
    rows = [
        ("file", summary["file"]),
        ("format version", summary["format_version"]),
        ("round", summary["round"]),
        ("timestamp", summary["timestamp"]),
        ("generator type", generator["type"] or "none (saved with use_generator false)"),
        *[
            (f"generator of '{name}'", f"{g['class']}, {g['epochs']} epochs, {g['parameters']:,} parameters")
            for name, g in generator["per_class"].items()
        ],
        ("generator class", generator["class"] or "-"),
        ("generator args", json.dumps(generator["args"], default=str)),
        ("generator epochs", generator["epochs"]),
        ("generator state", f"{generator['tensors']} tensors, {generator['parameters']:,} parameters"),
    ]
    if discriminator is not None:
        rows += [
            ("discriminator args", json.dumps(discriminator["args"], default=str)),
            ("discriminator state", f"{discriminator['tensors']} tensors, {discriminator['parameters']:,} parameters"),
        ]
    rows += [(f"{name} optimizer", _optimizer_text(steps)) for name, steps in summary["optimizer_states"].items()]
    rows += [
        ("rng state", "saved" if summary["rng_state"] else "missing"),
        ("config hash", summary["config_hash"]),
        ("wandb run id", summary["wandb_run_id"] or "-"),
    ]
    adapters = summary["global_adapters"]
    total = sum(slot["parameters"] for slot in adapters.values())
    rows.append(("global adapters", f"{len(adapters)} slots, {total:,} parameters"))
    lines = [_aligned(rows)]
    name_width = max((len(t["name"]) for slot in adapters.values() for t in slot["tensors"]), default=0) + 2
    for name, slot in adapters.items():
        lines.append(f"  {name}: {slot['parameters']:,} parameters")
        lines += [f"    {t['name']:<{name_width}}{tuple(t['shape'])!s:<16}{t['dtype']}" for t in slot["tensors"]]
    if "config" in summary:
        lines += ["config", json.dumps(summary["config"], indent=1)]
    return "\n".join(lines)


def _aligned(rows: list[tuple[str, Any]]) -> str:
    width = max(len(label) for label, _ in rows) + 2
    return "\n".join(f"{label:<{width}}{value}" for label, value in rows)


def _optimizer_text(steps: int | None) -> str:
    if steps is None:
        return "not saved"
    return f"saved (state for {steps} parameters)" if steps else "saved (no step taken yet)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="feda2v-checkpoint", description=__doc__.splitlines()[0])
    parser.add_argument(
        "path",
        help="a checkpoint .pt of any kind (run, node state, client generator), a *_latest.json pointer, a "
        "checkpoint directory or a run folder (outputs/<run>)",
    )
    parser.add_argument("--config", action="store_true", help="also print the run's resolved config")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args(argv)
    try:
        summary = describe_checkpoint(args.path, with_config=args.config)
    except CheckpointError as err:
        print(f"feda2v-checkpoint: {' '.join(str(err).split())}", file=sys.stderr)  # one line
        return 2
    print(json.dumps(summary, indent=1) if args.json else format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
