"""metrics.jsonl and W&B: one set of names, and when W&B goes online."""

from __future__ import annotations

import json

import pytest

from feda2v_flwr.config.schema import WandbSettings
from feda2v_flwr.reporting import MetricsLog
from feda2v_flwr.reporting.metrics import scalar_items
from feda2v_flwr.reporting.wandb_logger import wandb_mode


class RecordingWandb:
    def __init__(self):
        self.logged = []

    def log(self, server_round, metrics):
        self.logged.append((server_round, metrics))


def test_wandb_gets_the_numbers_of_each_line_under_phase_slash_key(tmp_path):
    wandb = RecordingWandb()
    log = MetricsLog(tmp_path / "metrics.jsonl", wandb=wandb)
    log.write(
        3,
        "fit",
        client_loss_mean={"train_loss_clip": 0.5},
        clients={"0": {"classes": "dog,rain", "fit_s": 1.25}},
        payload_bytes_per_client=[10, 20],
        failures=[],
        ok=True,
        missing=None,
        broken=float("nan"),
    )
    line = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert line["round"] == 3 and line["broken"] is None
    assert wandb.logged == [
        (3, {"fit/client_loss_mean/train_loss_clip": 0.5, "fit/clients/0/fit_s": 1.25, "fit/ok": 1.0})
    ]


def test_scalar_items_flattens_nested_numbers_only():
    assert scalar_items("validation", {"similarity": 0.9, "per_class": {"dog": {"mse": 2}}, "name": "x"}) == {
        "validation/similarity": 0.9,
        "validation/per_class/dog/mse": 2.0,
    }


@pytest.mark.parametrize(
    ("config", "environment", "expected"),
    [
        ({}, {}, "offline"),
        ({}, {"WANDB_API_KEY": "k"}, "online"),
        ({}, {"WANDB_API_KEY": "k", "WANDB_MODE": "offline"}, "offline"),
        ({}, {"WANDB_MODE": "disabled"}, "disabled"),
        ({"mode": "offline"}, {"WANDB_API_KEY": "k"}, "offline"),
        ({"mode": "online"}, {"WANDB_MODE": "disabled"}, "online"),
    ],
)
def test_wandb_mode_config_then_environment_then_offline(monkeypatch, config, environment, expected):
    for name in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert wandb_mode(WandbSettings(**config)) == expected
