"""Before the first round: are exactly ``federation.num_clients`` nodes connected?

Partitions are numbered 0..num_clients-1 and every node learns its own id and the partition
count from its node config, so another number of nodes trains on partitions the server does not
expect. Flower's own wait (``min_available_clients``) is silent and lasts up to a day; this one
is bounded and says what to change.
"""

from __future__ import annotations

import logging
import time

from flwr.server.client_manager import ClientManager

log = logging.getLogger(__name__)


class NodeCountError(RuntimeError):
    """The connected nodes do not match ``federation.num_clients``; the message says what to change."""


def wait_for_nodes(client_manager: ClientManager, expected: int, *, timeout: float, poll: float = 1.0) -> int:
    """Wait up to ``timeout`` seconds until exactly ``expected`` nodes are connected; return the
    count. Raises ``NodeCountError`` when another number is connected at the deadline (too many
    may be transient: a restarted SuperNode's old entry lives until its heartbeat expires)."""
    deadline = time.monotonic() + timeout
    announced = False
    while True:
        connected = client_manager.num_available()
        if connected == expected:
            return connected
        if time.monotonic() >= deadline:
            raise NodeCountError(mismatch_message(expected, connected, waited=timeout))
        if not announced:
            log.info(
                "Waiting up to %.0f s for %d nodes (federation.num_clients); %d connected", timeout, expected, connected
            )
            announced = True
        time.sleep(poll)


def mismatch_message(expected: int, connected: int, *, waited: float | None = None) -> str:
    after = f" after waiting {waited:.0f} s (federation.node_wait_timeout)" if waited is not None else ""
    return (
        f"federation.num_clients is {expected} but {connected} SuperNodes are connected{after}. "
        f'Simulation: run with --federation-config "num-supernodes={expected}" (feda2v-sim sets it), '
        f"or set federation.num_clients={connected} (--run-config 'overrides=\"federation.num_clients={connected}\"'). "
        f"Deployment: start one SuperNode per partition id 0..{expected - 1}, each with num-partitions={expected}."
    )
