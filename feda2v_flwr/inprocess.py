"""A whole federation in one process: Flower's own server loop, the real strategy and clients,
no Ray and no SuperLink.

``flwr run`` is the way to run experiments; this is for many small runs in a row (the ablation
runner in ``experiments/``), notebooks and debugging. The rounds are Flower's
(``flwr.server.Server.fit``: configure, fit, aggregate, evaluate), the strategy is
``build_strategy``'s and every node is a ``FedA2VClient`` that keeps its state between rounds as
the simulation's node state does. Only the transport differs: a proxy calls the client directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flwr.app import RecordDict
from flwr.common import (
    Code,
    DisconnectRes,
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    GetParametersIns,
    GetParametersRes,
    GetPropertiesIns,
    GetPropertiesRes,
    ReconnectIns,
    Status,
)
from flwr.server import History, Server
from flwr.server.client_manager import SimpleClientManager
from flwr.server.client_proxy import ClientProxy

from feda2v_flwr.client_app import FedA2VClient
from feda2v_flwr.config.schema import ExperimentConfig
from feda2v_flwr.instructions import NUM_PARTITIONS, PARTITION_ID
from feda2v_flwr.server_app import build_strategy
from feda2v_flwr.training.task import ClientTask
from strategies.feda2v import FedA2VStrategy


class _NodeClient(FedA2VClient):
    """A FedA2VClient that holds its own ``ClientTask`` (the Ray actors' cache keeps one)."""

    def __init__(self, task: ClientTask, *, num_partitions: int):
        super().__init__(
            run_config={},
            node_config={PARTITION_ID: task.partition_id, NUM_PARTITIONS: num_partitions},
            state=RecordDict(),
        )
        self.task = task

    def _task(self, config: dict) -> ClientTask:
        return self.task


class InProcessClientProxy(ClientProxy):
    """Hands Flower's instructions to a client in this process."""

    def __init__(self, cid: str, client: FedA2VClient):
        super().__init__(cid)
        self.client = client.to_client()

    def fit(self, ins: FitIns, timeout: float | None, group_id: int | None) -> FitRes:
        return self.client.fit(ins)

    def evaluate(self, ins: EvaluateIns, timeout: float | None, group_id: int | None) -> EvaluateRes:
        return self.client.evaluate(ins)

    def get_parameters(self, ins: GetParametersIns, timeout: float | None, group_id: int | None) -> GetParametersRes:
        return self.client.get_parameters(ins)

    def get_properties(self, ins: GetPropertiesIns, timeout: float | None, group_id: int | None) -> GetPropertiesRes:
        return GetPropertiesRes(status=Status(code=Code.OK, message=""), properties={})

    def reconnect(self, ins: ReconnectIns, timeout: float | None, group_id: int | None) -> DisconnectRes:
        return DisconnectRes(reason="")


@dataclass
class InProcessRun:
    strategy: FedA2VStrategy
    clients: dict[int, _NodeClient]
    history: History
    seconds: float

    def task(self, partition_id: int) -> ClientTask:
        return self.clients[partition_id].task


def run_in_process(config: ExperimentConfig, run_dir: Path) -> InProcessRun:
    """Run ``config``'s federation round by round in this process; outputs go to ``run_dir``
    (metrics.jsonl, summary.json, checkpoints, as with ``flwr run``). Nodes run one after the
    other, so the run does not depend on thread timing."""
    strategy = build_strategy(config, run_dir)
    num_clients = config.federation.num_clients
    manager = SimpleClientManager()
    clients = {}
    for partition_id in range(num_clients):
        clients[partition_id] = _NodeClient(
            ClientTask(config, partition_id, num_clients, strategy.recipe.cache_dir), num_partitions=num_clients
        )
        manager.register(InProcessClientProxy(f"node-{partition_id}", clients[partition_id]))
    server = Server(client_manager=manager, strategy=strategy)
    server.set_max_workers(1)
    history, seconds = server.fit(num_rounds=strategy.recipe.last_round, timeout=config.federation.round_timeout)
    return InProcessRun(strategy=strategy, clients=clients, history=history, seconds=seconds)
