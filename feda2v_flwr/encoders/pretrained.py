"""Loading pretrained models (hub ids or local ``save_pretrained`` directories) with one clear
error, and naming a model's exact weights for cache keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class ModelLoadError(RuntimeError):
    """A pretrained model that cannot be loaded; the message says how to supply it."""


def load_pretrained(what: str, model: str, loader):  # noqa: ANN001, ANN201 (transformers' from_pretrained)
    """``loader(model)`` for a hub id or a local directory; failures become one ModelLoadError."""
    looks_local = model.startswith(("/", ".", "~"))
    try:
        if looks_local and not Path(model).expanduser().is_dir():
            raise OSError("no such directory")
        return loader(str(Path(model).expanduser()) if looks_local else model)
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"Cannot load the {what} '{model}': {str(err).splitlines()[0]}.\n"
            f"Give a local directory made with save_pretrained (config.json + weights, plus the tokenizer "
            f"files for a text model), or fetch it once on a machine with network access (hf download {model}) "
            "and run with HF_HUB_OFFLINE=1 so nothing is fetched at run time."
        ) from None


def model_identity(model: str, config: Any = None) -> dict[str, Any]:
    """What makes a model's outputs what they are: the id, the hub commit when known, and for a
    local directory its files' names, sizes and modification times (ns)."""
    identity: dict[str, Any] = {"model": model}
    if config is not None:
        settings = config.to_dict()
        settings.pop("transformers_version", None)  # an upgrade alone must not invalidate caches
        identity["config"] = settings
        identity["commit"] = getattr(config, "_commit_hash", None)
    local = Path(model).expanduser()
    if local.is_dir():
        identity["files"] = sorted(
            (str(p.relative_to(local)), p.stat().st_size, p.stat().st_mtime_ns) for p in local.rglob("*") if p.is_file()
        )
    return identity
