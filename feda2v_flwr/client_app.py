"""ClientApp: a NumPyClient that decodes, calls the plain-torch task, encodes (thin glue)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, RecordDict
from flwr.client import ClientApp, NumPyClient

from feda2v_flwr.config import ExperimentConfig, load_config
from feda2v_flwr.logging_setup import setup_logging
from feda2v_flwr.resume import load_client_state, save_client_state
from feda2v_flwr.training.task import ClientTask

log = logging.getLogger(__name__)
STATE_KEY = "feda2v"
_TASKS: dict[tuple, ClientTask] = {}  # long-lived simulation actors reuse loaded data across rounds


class FedA2VClient(NumPyClient):
    def __init__(self, *, run_config: dict, node_config: dict, state: RecordDict):
        self.run_config, self.node_config, self.state = run_config, node_config, state
        self.partition_id = int(node_config["partition-id"])
        self.num_partitions = int(node_config["num-partitions"])

    def _task(self, config: dict) -> ClientTask:
        cache_dir = str(self.node_config.get("cache-dir") or config["cache-dir"])
        data_dir = str(self.node_config.get("data-dir") or "")
        key = (
            self.partition_id,
            self.num_partitions,
            cache_dir,
            data_dir,
            self.run_config.get("config"),
            self.run_config.get("overrides"),
        )
        if key not in _TASKS:
            experiment = load_config(
                str(self.run_config.get("config", "configs/default.json")), str(self.run_config.get("overrides", ""))
            )
            if data_dir:
                experiment = with_data_root(experiment, data_dir, self.partition_id)
            torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads()))))
            _TASKS.clear()
            _TASKS[key] = ClientTask(experiment, self.partition_id, self.num_partitions, Path(cache_dir))
        return _TASKS[key]

    def _saved(self, name: str) -> bytes | None:
        record = self.state.get(STATE_KEY)
        return record[name] if isinstance(record, ConfigRecord) and name in record else None

    def _state_dir(self, config: dict) -> Path | None:
        directory = self.node_config.get("client-state-dir") or config.get("client-state-dir")
        return Path(str(directory)) if directory else None

    def _restore_state(self, config: dict, server_round: int) -> None:
        """A node without state after round 1 (a resumed run, a restarted node) takes its last
        saved state from before this round, so its optimizers and generators go on as they were."""
        directory = self._state_dir(config)
        if STATE_KEY in self.state or server_round <= 1 or directory is None:
            return
        record = load_client_state(directory, self.partition_id, before_round=server_round)
        if record is None:
            log.warning(
                "node %d: no saved state before round %d; optimizers start fresh", self.partition_id, server_round
            )
            return
        self.state[STATE_KEY] = ConfigRecord(record)

    def _save_state(self, config: dict, server_round: int, record: dict) -> None:
        """On checkpoint rounds: the node's state to disk, for resuming (a failure to write it is
        a warning, not a failed round)."""
        directory = self._state_dir(config)
        if directory is None or not int(config.get("save-client-state", 0)):
            return
        try:
            keep = int(config.get("keep-client-states", 3))
            save_client_state(directory, self.partition_id, server_round, record, keep_last=keep)
        except OSError as err:
            log.warning(
                "node %d: cannot save its state to %s (%s); set node_config client-state-dir to a writable folder",
                self.partition_id,
                directory,
                err,
            )

    def get_parameters(self, config: dict) -> list[np.ndarray]:
        return self._task(config).initial_arrays()

    def fit(self, parameters: list[np.ndarray], config: dict):
        server_round = int(config["server_round"])
        participants = str(config.get("participants", ""))
        self._restore_state(config, server_round)
        if participants and self.partition_id not in {int(p) for p in participants.split(",")}:
            record = self.state.get(STATE_KEY)
            if isinstance(record, ConfigRecord):  # unchanged, but a checkpoint round must find it
                self._save_state(config, server_round, dict(record))
            return [], 0, {"partition_id": self.partition_id, "sat_out": 1}  # not drawn this round
        generator_dir = self.node_config.get("generator-dir") or config.get("client-generator-dir")
        pretrained = self.node_config.get("pretrained-generator-path") or config.get("pretrained-generator-path")
        outcome = self._task(config).fit(
            parameters,
            server_round,
            self._saved("optimizer"),
            self._saved("local_adapters"),
            generator_state=self._saved("generators"),
            generator_dir=Path(str(generator_dir)) if generator_dir else None,
            pretrained_path=Path(str(pretrained)) if pretrained else None,
            num_rounds=int(config["num-rounds"]) if "num-rounds" in config else None,
        )
        record = {"optimizer": outcome.optimizer_state, "local_adapters": outcome.local_adapters}
        if outcome.generator_state is not None:
            record["generators"] = outcome.generator_state
        self.state[STATE_KEY] = ConfigRecord(record)
        self._save_state(config, server_round, record)
        return outcome.arrays, outcome.num_examples, outcome.metrics

    def evaluate(self, parameters: list[np.ndarray], config: dict):
        self._restore_state(config, int(config.get("server_round", 0)) + 1)  # a node restarted since its fit
        image_dir = self.node_config.get("image-dir") or config.get("image-dir")
        metrics = self._task(config).evaluate(
            parameters,
            self._saved("local_adapters"),
            server_round=int(config.get("server_round", 0)),
            image_dir=Path(str(image_dir)) if image_dir else None,
        )
        return float(metrics.get("test_mse", 0.0)), int(metrics["test_examples"]), metrics


def with_data_root(experiment: ExperimentConfig, data_dir: str, partition_id: int) -> ExperimentConfig:
    """A deployment node's own dataset folder (node_config ``data-dir``) in place of ``data.root``."""
    if experiment.data.dataset == "procedural":
        log.warning(
            "node %d: data-dir %s is not used: the 'procedural' dataset synthesises its clips", partition_id, data_dir
        )
        return experiment
    data = experiment.data.model_copy(update={"root": data_dir})
    return experiment.model_copy(update={"data": data})


def client_fn(context: Context):
    setup_logging()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return FedA2VClient(
        run_config=dict(context.run_config), node_config=dict(context.node_config), state=context.state
    ).to_client()


app = ClientApp(client_fn=client_fn)
