"""How big are the adapters at the FLUX sizes, and what does one round move over the network?

Builds the flux profile's adapters (SPEC 3.3: clip hidden [1024, 2048] -> (768,), t5 hidden
[1024, 2048, 2048] -> (17, 4096), attention at ``--width``) on 768-d AST tokens and reports
parameters and the bytes a client downloads (global adapters) and uploads (adapters + per-class
statistics at the full 1214-token length or ``--statistics-length``) per round, in float32 and
with ``feda2v.transfer_dtype: float16`` (clip counts stay float32: 4 bytes a class).

Usage: ``python benchmarks/adapter_size.py [--width 256] [--classes-per-node 10]``
"""

from __future__ import annotations

import argparse

from feda2v_flwr.encoders.text_targets import SlotSpec
from feda2v_flwr.models.adapter import build_adapters

FLUX_SLOTS = (SlotSpec("clip", 1, 768), SlotSpec("t5", 17, 4096))
HIDDEN = {"clip": [1024, 2048], "t5": [1024, 2048, 2048]}
AST_TOKENS, AST_DIM = 1214, 768
BYTES = {"float32": 4, "float16": 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=256, help="attention width before the last projection")
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--classes-per-node", type=int, default=10)
    parser.add_argument("--statistics-length", type=int, default=AST_TOKENS, help="tokens of the audio statistics")
    args = parser.parse_args()

    adapters = build_adapters(FLUX_SLOTS, in_dim=AST_DIM, hidden_dims=HIDDEN, width=args.width, heads=args.heads)
    rows = []
    for slot, module in adapters.items():
        parts = {name: sum(p.numel() for p in child.parameters()) for name, child in module.named_children()}
        rows.append((slot, sum(parts.values()), parts))
    total = sum(r[1] for r in rows)
    per_class_values = 768 + 17 * 4096 + 3 * args.statistics_length * AST_DIM  # slot means, audio mean/std/val mean

    print(f"flux adapters on {AST_DIM}-d tokens, attention width {args.width}, {args.heads} heads\n")
    print("| slot | parameters | of which token MLP / attention pooling / projection |")
    print("|---|---|---|")
    for slot, count, parts in rows:
        print(f"| {slot} | {count:,} | {' / '.join(f'{v:,}' for v in parts.values())} |")
    print(f"| total | {total:,} | |\n")
    for dtype, size in BYTES.items():
        adapter_bytes = total * size
        statistics = args.classes_per_node * (per_class_values * size + 2 * 4)  # + count and val count
        print(
            f"{dtype}: download per client per round (global adapters) {adapter_bytes / 1e6:.1f} MB; upload "
            f"({args.classes_per_node} classes, statistics at {args.statistics_length} tokens) "
            f"{(adapter_bytes + statistics) / 1e6:.1f} MB (adapters {adapter_bytes / 1e6:.1f} MB + statistics "
            f"{statistics / 1e6:.1f} MB)"
        )


if __name__ == "__main__":
    main()
