"""``feda2v-checkpoint``: what a server checkpoint holds, without a config or a GPU.

Usage::

    feda2v-checkpoint outputs/<run>                      # the run's latest checkpoint
    feda2v-checkpoint outputs/<run>/checkpoints/server_generator_round_10.pt --config
    feda2v-checkpoint outputs/<run>/checkpoints/server_generator_latest.json --json

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

from feda2v_flwr.checkpoint import CheckpointError, find_checkpoint, load_checkpoint


def describe_checkpoint(path: str | Path, *, with_config: bool = False) -> dict[str, Any]:
    """A JSON-ready summary of the checkpoint ``path`` stands for (see :func:`find_checkpoint`)."""
    file = find_checkpoint(path)
    payload = load_checkpoint(file)
    try:
        summary = _summary(file, payload)
        if with_config:
            summary["config"] = json.loads(payload["config"])
    except (AttributeError, TypeError, ValueError, KeyError) as err:  # right keys, wrong contents
        raise CheckpointError(f"Checkpoint {file} has malformed contents ({type(err).__name__}: {err})") from None
    return summary


def _summary(file: Path, payload: dict[str, Any]) -> dict[str, Any]:
    slots: dict[str, dict[str, Any]] = {}
    for name, tensor in payload["global_adapters"].items():
        slot = slots.setdefault(name.split(".", 1)[0], {"parameters": 0, "tensors": []})
        slot["parameters"] += tensor.numel()
        slot["tensors"].append({"name": name, "shape": list(tensor.shape), "dtype": _dtype(tensor)})
    discriminator = payload["discriminator_args"]
    return {
        "file": str(file),
        "format_version": payload["format_version"],
        "round": payload["round"],
        "timestamp": datetime.fromtimestamp(payload["timestamp"], tz=UTC).isoformat(timespec="seconds"),
        "generator": {
            "type": payload["generator_type"],
            "class": payload["generator_class"],
            "args": payload["generator_args"],
            "epochs": payload["generator_epochs"],
            **_state_size(payload["generator_state"]),
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
    width = max(len(label) for label, _ in rows) + 2
    lines = [f"{label:<{width}}{value}" for label, value in rows]
    name_width = max((len(t["name"]) for slot in adapters.values() for t in slot["tensors"]), default=0) + 2
    for name, slot in adapters.items():
        lines.append(f"  {name}: {slot['parameters']:,} parameters")
        lines += [f"    {t['name']:<{name_width}}{tuple(t['shape'])!s:<16}{t['dtype']}" for t in slot["tensors"]]
    if "config" in summary:
        lines += ["config", json.dumps(summary["config"], indent=1)]
    return "\n".join(lines)


def _optimizer_text(steps: int | None) -> str:
    if steps is None:
        return "not saved"
    return f"saved (state for {steps} parameters)" if steps else "saved (no step taken yet)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="feda2v-checkpoint", description=__doc__.splitlines()[0])
    parser.add_argument(
        "path", help="a checkpoint .pt, a *_latest.json pointer, a checkpoint directory or a run folder (outputs/<run>)"
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
