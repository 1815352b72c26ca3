"""ClientApp: a NumPyClient that decodes, calls the plain-torch task, encodes (thin glue)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, RecordDict
from flwr.client import ClientApp, NumPyClient

from feda2v_flwr.checkpointing.nodes import load_client_state, save_client_state
from feda2v_flwr.config import ExperimentConfig, load_config
from feda2v_flwr.instructions import DATA_DIR, NUM_PARTITIONS, PARTITION_ID, RoundInstructions
from feda2v_flwr.logging_setup import setup_logging
from feda2v_flwr.training.task import ClientTask

log = logging.getLogger(__name__)
STATE_KEY = "feda2v"
_TASKS: dict[tuple, ClientTask] = {}  # long-lived simulation actors reuse loaded data across rounds


class FedA2VClient(NumPyClient):
    def __init__(self, *, run_config: dict, node_config: dict, state: RecordDict):
        self.run_config, self.node_config, self.state = run_config, node_config, state
        self.partition_id = int(node_config[PARTITION_ID])
        self.num_partitions = int(node_config[NUM_PARTITIONS])

    def _instructions(self, config: dict) -> RoundInstructions:
        """The round's instructions, with this node's own folders where its node config sets them."""
        return RoundInstructions.from_config(config).on_node(self.node_config)

    def _task(self, ins: RoundInstructions) -> ClientTask:
        if ins.cache_dir is None:
            raise ValueError("no embedding cache folder: the server sends cache-dir, or the node config sets it")
        cache_dir = ins.cache_dir
        data_dir = str(self.node_config.get(DATA_DIR) or "")
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

    def _restore_state(self, ins: RoundInstructions, server_round: int) -> None:
        """A node without state after round 1 (a resumed run, a restarted node) takes its last
        saved state from before this round, so its optimizers and generators go on as they were."""
        if STATE_KEY in self.state or server_round <= 1 or ins.client_state_dir is None:
            return
        record = load_client_state(Path(ins.client_state_dir), self.partition_id, before_round=server_round)
        if record is None:
            log.warning(
                "node %d: no saved state before round %d; optimizers start fresh", self.partition_id, server_round
            )
            return
        self.state[STATE_KEY] = ConfigRecord(record)

    def _save_state(self, ins: RoundInstructions, server_round: int, record: dict) -> None:
        """On checkpoint rounds: the node's state to disk, for resuming (a failure to write it is
        a warning, not a failed round)."""
        directory = ins.client_state_dir
        if directory is None or not ins.save_client_state:
            return
        try:
            keep = ins.keep_client_states
            save_client_state(Path(directory), self.partition_id, server_round, record, keep_last=keep)
        except OSError as err:
            log.warning(
                "node %d: cannot save its state to %s (%s); set node_config client-state-dir to a writable folder",
                self.partition_id,
                directory,
                err,
            )

    def get_parameters(self, config: dict) -> list[np.ndarray]:
        return self._task(self._instructions(config)).initial_arrays()

    def fit(self, parameters: list[np.ndarray], config: dict):
        ins = self._instructions(config)
        server_round = ins.server_round
        self._restore_state(ins, server_round)
        if not ins.trains(self.partition_id):
            record = self.state.get(STATE_KEY)
            if isinstance(record, ConfigRecord):  # unchanged, but a checkpoint round must find it
                self._save_state(ins, server_round, dict(record))
            return [], 0, {"partition_id": self.partition_id, "sat_out": 1}  # not drawn this round
        outcome = self._task(ins).fit(
            parameters,
            server_round,
            self._saved("optimizer"),
            self._saved("local_adapters"),
            generator_state=self._saved("generators"),
            generator_dir=_path(ins.client_generator_dir) if ins.save_client_state else None,  # a checkpoint round
            pretrained_path=_path(ins.pretrained_generator_path),
        )
        record = {"optimizer": outcome.optimizer_state, "local_adapters": outcome.local_adapters}
        if outcome.generator_state is not None:
            record["generators"] = outcome.generator_state
        self.state[STATE_KEY] = ConfigRecord(record)
        self._save_state(ins, server_round, record)
        return outcome.arrays, outcome.num_examples, outcome.metrics

    def evaluate(self, parameters: list[np.ndarray], config: dict):
        ins = self._instructions(config)
        self._restore_state(ins, ins.server_round + 1)  # a node restarted since its fit
        metrics = self._task(ins).evaluate(
            parameters,
            self._saved("local_adapters"),
            server_round=ins.server_round,
            image_dir=_path(ins.image_dir),
        )
        return float(metrics.get("test_mse", 0.0)), int(metrics["test_examples"]), metrics


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


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
