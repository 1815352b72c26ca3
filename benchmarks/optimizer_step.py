"""AdamW step time: PyTorch's default per-tensor loop vs the fused kernel ``training/optim.adamw`` uses.

On the default config's server generator (built by the server's own ``setup_generator``) and its
global adapters: the mean of ``--steps`` steps after one warm-up step, with random gradients.
Usage: ``python benchmarks/optimizer_step.py [--steps 20]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from feda2v_flwr.config import load_config
from feda2v_flwr.encoders import build_audio_encoder
from feda2v_flwr.server_app import build_strategy


def step_ms(parameters: list[torch.Tensor], steps: int, **kernel: bool) -> float:
    params = [torch.nn.Parameter(p.detach().clone()) for p in parameters]
    for p in params:
        p.grad = torch.randn_like(p)
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, **kernel)
    optimizer.step()
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    return (time.perf_counter() - start) / steps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    config = load_config("configs/default.json", "wandb.enabled=false")
    with tempfile.TemporaryDirectory() as run_dir:
        strategy = build_strategy(config, Path(run_dir))
    tokens = build_audio_encoder(config).num_tokens
    strategy.recipe.trainer.setup_generator(audio_length=tokens, classes=strategy.recipe.classes)
    models = {
        "server generator": list(strategy.recipe.trainer.learner.model.parameters()),
        "global adapters": list(strategy.recipe.trainer.adapters.parameters()),
    }
    print(f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}\n")
    print("| parameters | count | default loop (ms/step) | foreach (ms/step) | fused (ms/step) |")
    print("|---|---|---|---|---|")
    for name, params in models.items():
        count = sum(p.numel() for p in params)
        loop, foreach, fused = (step_ms(params, args.steps, **k) for k in ({}, {"foreach": True}, {"fused": True}))
        print(f"| {name} | {count / 1e6:.1f} M | {loop:.1f} | {foreach:.1f} | {fused:.1f} |")


if __name__ == "__main__":
    main()
