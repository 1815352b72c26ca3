"""FedA2VStrategy: FedAvg whose ``aggregate_fit`` runs the server-side FedA2V round (SPEC 4).

The Flower hooks only: what the nodes are told (``configure_*``), which replies count
(``feda2v_flwr.replies``), the aggregation maths (``strategies.aggregation``). The server step,
its state and checkpoints are the recipe's (``feda2v_flwr.server.recipe``); what the run reports
is the run log's (``feda2v_flwr.server.run_log``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import replace

import numpy as np
from flwr.common import EvaluateIns, EvaluateRes, FitIns, FitRes, Parameters, Scalar, ndarrays_to_parameters
from flwr.common import parameters_to_ndarrays as to_ndarrays
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg

from feda2v_flwr.config import resolve_run_path
from feda2v_flwr.instructions import RoundInstructions
from feda2v_flwr.payload import ClientUpdate, for_transfer
from feda2v_flwr.replies import ReplyChecker
from feda2v_flwr.seeding import participants_rng
from feda2v_flwr.server.recipe import ServerRecipe, Teachers
from feda2v_flwr.server.run_log import RunLog
from strategies.aggregation import aggregate_adapters
from strategies.node_count import wait_for_nodes

log = logging.getLogger(__name__)


class FedA2VStrategy(FedAvg):
    def __init__(self, *, recipe: ServerRecipe, run_log: RunLog):
        """Flower counts a session's rounds from 1; a resumed run's hooks add the recipe's
        ``start_round``."""
        self.config, self.recipe, self.run_log = recipe.config, recipe, run_log
        fed = self.config.federation
        min_fit = min(fed.min_fit_clients, fed.num_clients)
        self.adapter_keys = list(recipe.state)
        super().__init__(
            fraction_fit=1.0,
            fraction_evaluate=1.0,
            min_fit_clients=min_fit,
            min_evaluate_clients=min_fit,
            min_available_clients=fed.num_clients,
            accept_failures=fed.accept_failures,
            initial_parameters=ndarrays_to_parameters([recipe.state[k] for k in self.adapter_keys]),
        )
        pretrained = self.config.feda2v.pretrained_generator_path
        self.pretrained_path = resolve_run_path(pretrained) if pretrained else None  # clients get it absolute
        self._phase_started: dict[tuple[str, int], float] = {}  # (phase, round) -> perf_counter when configured
        shapes = {k: v.shape for k, v in recipe.state.items()}
        self.replies = ReplyChecker(self.config, recipe.classes, shapes, recipe.slot_shapes)

    def __repr__(self) -> str:
        return f"FedA2VStrategy(mode={self.config.feda2v.adapter_aggregation_mode})"

    # ---- configure -----------------------------------------------------------------------------
    def instructions(self, server_round: int) -> RoundInstructions:
        """What every node is told this round (its own folders, if set, replace these paths)."""
        run_dir = self.recipe.run_dir
        return RoundInstructions(
            server_round=server_round,
            cache_dir=str(self.recipe.cache_dir),
            client_generator_dir=str(run_dir / "client_generators"),
            image_dir=str(run_dir / self.config.images.output_dir),  # an absolute output_dir stays
            client_state_dir=str(run_dir / "client_state"),
            save_client_state=self.recipe.checkpoint_due(server_round),
            keep_client_states=self.config.feda2v.checkpoint_keep_last,
            pretrained_generator_path=str(self.pretrained_path) if self.pretrained_path else None,
        )

    def _for_transfer(self, parameters: Parameters) -> Parameters:
        """The global adapters in ``feda2v.transfer_dtype`` (the server keeps them in float32)."""
        dtype = self.config.feda2v.transfer_dtype
        return (
            parameters if dtype == "float32" else ndarrays_to_parameters(for_transfer(to_ndarrays(parameters), dtype))
        )

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        if server_round == 1:  # this session's first round: the right number of nodes, or fail now
            fed = self.config.federation
            wait_for_nodes(client_manager, fed.num_clients, timeout=fed.node_wait_timeout)
        server_round += self.recipe.start_round
        if self.recipe.evaluation_only:
            log.info("Round %d: trained and checkpointed before the run stopped; evaluating only", server_round)
            return []
        pairs = super().configure_fit(server_round, self._for_transfer(parameters), client_manager)
        self.replies.connected = {str(cid) for cid in client_manager.all()}
        self._phase_started[("fit", server_round)] = time.perf_counter()  # after waiting for the nodes
        participants = self.participants(server_round)
        instructions = self.instructions(server_round)
        if participants is not None:
            instructions = replace(instructions, participants=tuple(participants))
            log.info("Round %d: partitions %s train; the other nodes sit out", server_round, participants)
        else:
            log.info("Round %d: training on %d nodes", server_round, len(pairs))
        config = instructions.to_config()
        return [(c, FitIns(ins.parameters, {**ins.config, **config})) for c, ins in pairs]

    def _elapsed(self, phase: str, server_round: int) -> float | None:
        """Wall time since this round's ``phase`` was configured: clients' work, transfers and the
        server's own step (None when it was not configured here, e.g. strategy tests)."""
        started = self._phase_started.pop((phase, server_round), None)
        return None if started is None else time.perf_counter() - started

    def participants(self, server_round: int) -> list[int] | None:
        """Partial participation (``federation.clients_per_round``): the partition ids that train
        this round, drawn from (seed, round), so any run with that seed draws the same (Flower's
        own sampling goes by node ids, which are random per run). None: every node trains."""
        fed = self.config.federation
        if fed.clients_per_round is None or fed.clients_per_round >= fed.num_clients:
            return None
        rng = participants_rng(self.config.training.seed, server_round)
        return sorted(int(i) for i in rng.choice(fed.num_clients, size=fed.clients_per_round, replace=False))

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        server_round += self.recipe.start_round
        if not self.config.evaluation_due(server_round, self.recipe.last_round):
            return []
        pairs = super().configure_evaluate(server_round, self._for_transfer(parameters), client_manager)
        self._phase_started[("evaluate", server_round)] = time.perf_counter()
        config = self.instructions(server_round).to_config()
        return [(c, EvaluateIns(ins.parameters, {**ins.config, **config})) for c, ins in pairs]

    # ---- aggregate -------------------------------------------------------------------------------
    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        server_round += self.recipe.start_round
        start = time.perf_counter()
        failure_reasons = [_failure_reason(f) for f in failures]
        for reason in failure_reasons:
            log.warning("Round %d: a node failed: %s", server_round, reason)
        results = [(proxy, res) for proxy, res in results if not _sat_out(res)]
        updates, dropped = self.replies.fit_updates(results)
        self.run_log.drawn.update(self.participants(server_round) or range(self.config.federation.num_clients))
        if (failures and not self.accept_failures) or len(updates) < self.min_fit_clients:
            reason = f"{len(updates)} valid replies (need {self.min_fit_clients}), {len(failures)} failures"
            self._elapsed("fit", server_round)
            self.run_log.skipped(server_round, reason, failure_reasons, dropped)
            self.run_log.note_missing(server_round, self.recipe.last_round)
            return None, {"skipped": 1}
        self.run_log.contributed.update(u.partition_id for u in updates)
        self.run_log.note_missing(server_round, self.recipe.last_round)

        updates.sort(key=lambda u: u.partition_id)  # bitwise-reproducible sums, whatever the arrival order
        aggregated, teachers = self._aggregate(updates)
        download = (
            sum(v.size for v in self.recipe.state.values()) * np.dtype(self.config.feda2v.transfer_dtype).itemsize
        )
        client_losses, uploads = self.run_log.fit(server_round, updates, dropped, failure_reasons, int(download))
        class_stats: dict[str, list] = {}
        for update in updates:
            for name, stats in update.stats.items():
                class_stats.setdefault(name, []).append(stats)
        outcome = self.recipe.run_round(server_round, aggregated, class_stats, teachers)
        self.run_log.server_step(server_round, outcome.report, outcome.rejected)
        checkpoint = self.recipe.save_checkpoint(server_round, outcome.kept, self.run_log.wandb_run_id)

        whole = [d for d in dropped if "part" not in d]  # the rest: adapters dropped, statistics used
        metrics: dict[str, Scalar] = {"num_updates": len(updates), "dropped": len(whole), "failures": len(failures)}
        if len(whole) < len(dropped):
            metrics["adapters_dropped"] = len(dropped) - len(whole)
        if outcome.kept.generator_loss is not None:
            metrics["generator_loss"] = outcome.kept.generator_loss
        if outcome.kept.finetune_loss is not None:
            metrics["adapter_finetuning_loss"] = outcome.kept.finetune_loss
        fit_round_s = self._elapsed("fit", server_round)
        self.run_log.round_end(
            server_round,
            metrics,
            checkpoint=checkpoint,
            report=outcome.kept,
            client_losses=client_losses,
            uploads=uploads,
            seconds=fit_round_s if fit_round_s is not None else time.perf_counter() - start,
            timings={"aggregate_fit_s": time.perf_counter() - start, "fit_round_s": fit_round_s},
            evaluation_due=self.config.evaluation_due(server_round, self.recipe.last_round),
        )
        if server_round == self.recipe.last_round:
            self.run_log.write_plots(self.recipe.trainer)
        return ndarrays_to_parameters([self.recipe.state[k] for k in self.adapter_keys]), metrics

    def _aggregate(self, updates: list[ClientUpdate]) -> tuple[dict[str, np.ndarray], Teachers | None]:
        """The round's aggregated adapters (the previous ones when no update carries adapters) and,
        for ``kd`` or ``synthetic_targets: teachers``, each client's adapters and classes."""
        f = self.config.feda2v
        with_adapters = [u for u in updates if u.adapter_state is not None]  # some may have sent statistics only
        if not with_adapters:
            state = {k: v.copy() for k, v in self.recipe.state.items()}
        else:  # kd starts from the weighted average, then distils in the server step (it needs the generator)
            mode = "avg" if f.adapter_aggregation_mode == "kd" else f.adapter_aggregation_mode
            states, counts = [u.adapter_state for u in with_adapters], [u.num_examples for u in with_adapters]
            state = aggregate_adapters(mode, states, counts, self.recipe.state, trim_fraction=f.trim_fraction)
        wants_teachers = f.adapter_aggregation_mode == "kd" or f.synthetic_targets == "teachers"
        return state, [(u.adapter_state, set(u.stats)) for u in with_adapters] if wants_teachers else None

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        server_round += self.recipe.start_round
        evaluations, dropped = self.replies.evaluations(results)
        seconds = self._elapsed("evaluate", server_round)
        metrics = self.run_log.evaluation(
            server_round, evaluations, failures=len(failures), dropped=dropped, seconds=seconds
        )
        if not metrics:
            return None, {}
        if server_round == self.recipe.last_round:
            self.run_log.write_plots()
            if self.run_log.wandb is not None:
                self.run_log.wandb.finish()
        return metrics.get("test_mse"), metrics


def _sat_out(res: FitRes) -> bool:
    """A node that was not drawn this round (partial participation) says so instead of training."""
    return isinstance(res.metrics, Mapping) and res.metrics.get("sat_out") == 1


def _failure_reason(failure: tuple[ClientProxy, FitRes] | BaseException) -> str:
    if isinstance(failure, BaseException):
        return f"{type(failure).__name__}: {failure}"
    proxy, res = failure
    return f"node {proxy.cid}: {res.status.code.name} {res.status.message}"
