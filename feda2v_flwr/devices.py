"""Device choice from ``training.device``."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> str:
    """``auto`` -> cuda when visible (in simulation: only with client-resources-num-gpus > 0)."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "training.device is 'cuda' but no CUDA device is visible to this process. In simulation a "
            "ClientApp sees a GPU only with client-resources-num-gpus > 0 (feda2v-sim --num-gpus-per-client)."
        )
    return name
