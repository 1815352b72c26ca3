"""Payload: bytes a client uploads and downloads per round, per target profile and precision.

For each profile the adapters are built as a run builds them (``build_model``; minilm with the
default config's widths, sd and flux with the shipped FLUX configs' widths, SPEC 3.3: clip
hidden [1024, 2048], t5 hidden [1024, 2048, 2048], 8 heads) and one client's reply is encoded
with the real ``encode_update`` (adapters + per-class statistics, clip counts always float32),
in float32 and with ``feda2v.transfer_dtype: float16``. Download = the global adapters in that
precision. A second table: the statistics part with the richer uploads of issue 18 (a
3-component Gaussian mixture per class, or 5 samples of the node's own generator per class).

- ``minilm`` (the offline default): the default config's mel-patch tokens, MiniLM slots;
- ``sd``: AST tokens (1214 x 768), one CLIP slot of 77 x 768 (Stable Diffusion 1.5);
- ``flux``: AST tokens, CLIP pooled 768 + T5 17 x 4096 (FLUX.1).

The text-encoder sizes for sd / flux are the models' published ones (fixed here so the
benchmark needs no download). Usage: ``python benchmarks/payload.py [--classes-per-node 2]``
"""

from __future__ import annotations

import argparse

import numpy as np

from feda2v_flwr.config import load_config
from feda2v_flwr.encoders import audio_embed_dim, build_audio_encoder
from feda2v_flwr.encoders.text_targets import PROFILE_SLOTS, SlotSpec
from feda2v_flwr.payload import encode_update, for_transfer, module_to_ndarrays
from feda2v_flwr.training.adapters import build_model
from feda2v_flwr.training.statistics import ClassStats, Mixture

AST_TOKENS, AST_DIM = 1214, 768
SPEC_WIDTHS = (
    "feda2v.clip_adapter_hidden_dims=[1024, 2048]; feda2v.t5_adapter_hidden_dims=[1024, 2048, 2048]; "
    "feda2v.adapter_width=256; feda2v.adapter_heads=8"
)
PROFILES = {
    "minilm": PROFILE_SLOTS["minilm"],
    "sd": (SlotSpec("clip", 77, 768),),
    "flux": (SlotSpec("clip", 1, 768), SlotSpec("t5", 17, 4096)),
}


def reply_bytes(
    profile: str,
    classes: int,
    dtype: str,
    statistics_length: int | None,
    components: int = 1,
    client_samples: int = 0,
) -> tuple[int, int, int]:
    """(upload, download, statistics part of the upload) in bytes for one client and round;
    ``components`` > 1: each class also carries a K-component mixture (``statistics_components``),
    ``client_samples`` > 0: N samples of the node's generator (``synthetic_source: clients``)."""
    overrides = f"feda2v.target_profile={profile}"
    if profile != "minilm":
        overrides += f"; {SPEC_WIDTHS}"
    config = load_config("configs/default.json", overrides)
    slots = PROFILES[profile]
    if profile == "minilm":
        tokens, dim = build_audio_encoder(config).num_tokens, audio_embed_dim(config)
    else:
        tokens, dim = AST_TOKENS, AST_DIM
    tokens = statistics_length or tokens
    adapters = build_model(config, slots, dim)
    state = dict(zip(adapters.state_dict(), module_to_ndarrays(adapters), strict=True))
    stats = {
        f"class_{c}": ClassStats(
            count=40,
            slot_means={s.name: np.zeros(s.shape, np.float32) for s in slots},
            audio_mean=np.zeros((tokens, dim), np.float32),
            audio_std=np.zeros((tokens, dim), np.float32),
            val_count=4,
            val_audio_mean=np.zeros((tokens, dim), np.float32),
            mixture=_mixture(components, tokens, dim) if components > 1 else None,
            samples=np.zeros((client_samples, tokens, dim), np.float32) if client_samples else None,
        )
        for c in range(classes)
    }
    upload = sum(a.nbytes for a in encode_update(state, stats, dtype)[0])
    adapters_only = sum(a.nbytes for a in encode_update(state, {}, dtype)[0])
    download = sum(a.nbytes for a in for_transfer(list(state.values()), dtype))
    return upload, download, upload - adapters_only


def _mixture(components: int, tokens: int, dim: int) -> Mixture:
    shape = (components, tokens, dim)
    weights = np.full(components, 1.0 / components, np.float32)
    return Mixture(weights, np.zeros(shape, np.float32), np.ones(shape, np.float32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes-per-node", type=int, default=2)
    parser.add_argument("--statistics-length", type=int, default=None, help="tokens of the statistics (default: all)")
    args = parser.parse_args()
    print(f"{args.classes_per_node} classes per node; statistics at {args.statistics_length or 'full'} tokens\n")
    print("| profile | precision | upload / client / round | of which statistics | download / client / round |")
    print("|---|---|---|---|---|")
    for profile in PROFILES:
        for dtype in ("float32", "float16"):
            up, down, stats = reply_bytes(profile, args.classes_per_node, dtype, args.statistics_length)
            print(f"| {profile} | {dtype} | {up / 1e6:.2f} MB | {stats / 1e6:.2f} MB | {down / 1e6:.2f} MB |")
    print("\nRicher uploads (issue 18), float32: the statistics part of one client's upload per round")
    kinds = {
        "mean + std (default)": {},
        "+ 3-component mixture per class (`statistics_components=3`)": {"components": 3},
        "+ 5 client-generator samples per class (`synthetic_source=clients`)": {"client_samples": 5},
    }
    print("| statistics | " + " | ".join(PROFILES) + " |")
    print("|---|" + "---|" * len(PROFILES))
    for kind, extra in kinds.items():
        sizes = [reply_bytes(p, args.classes_per_node, "float32", args.statistics_length, **extra)[2] for p in PROFILES]
        print(f"| {kind} | " + " | ".join(f"{b / 1e6:.2f} MB" for b in sizes) + " |")


if __name__ == "__main__":
    main()
