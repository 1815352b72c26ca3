"""The server's bounded wait for exactly federation.num_clients nodes before its first round."""

from __future__ import annotations

import threading
import time

import pytest
from flwr.server.client_manager import SimpleClientManager

from conftest import FakeClientProxy, tiny_config
from feda2v_flwr.server_app import build_strategy
from strategies.node_count import NodeCountError, wait_for_nodes


def manager_with(count: int) -> SimpleClientManager:
    manager = SimpleClientManager()
    for cid in range(count):
        manager.register(FakeClientProxy(str(cid)))
    return manager


def test_the_expected_number_returns_at_once():
    started = time.monotonic()
    assert wait_for_nodes(manager_with(3), 3, timeout=30) == 3
    assert time.monotonic() - started < 0.5


def test_too_few_fail_at_the_deadline_naming_both_numbers_and_the_fix():
    started = time.monotonic()
    with pytest.raises(NodeCountError) as error:
        wait_for_nodes(manager_with(2), 5, timeout=0.3, poll=0.05)
    assert 0.3 <= time.monotonic() - started < 2
    message = str(error.value)
    assert "federation.num_clients is 5 but 2 SuperNodes are connected after waiting 0 s" in message
    assert '--federation-config "num-supernodes=5"' in message and "federation.num_clients=2" in message


def test_too_many_fail_at_the_deadline_unless_one_goes_away():
    with pytest.raises(NodeCountError, match="federation.num_clients is 2 but 3 SuperNodes are connected after"):
        wait_for_nodes(manager_with(3), 2, timeout=0.2, poll=0.05)
    manager = manager_with(3)
    stale = next(iter(manager.all().values()))
    gone = threading.Timer(0.2, manager.unregister, args=(stale,))  # a restarted node's old entry expires
    gone.start()
    try:
        assert wait_for_nodes(manager, 2, timeout=10, poll=0.05) == 2
    finally:
        gone.cancel()


def test_nodes_that_connect_during_the_wait_are_counted():
    manager = manager_with(1)
    late = threading.Timer(0.2, manager.register, args=(FakeClientProxy("late"),))
    late.start()
    try:
        assert wait_for_nodes(manager, 2, timeout=10, poll=0.05) == 2
    finally:
        late.cancel()


def test_the_strategy_checks_before_its_first_round_only(tmp_path, cache_dir):
    config = tiny_config(
        federation={"num_clients": 3, "node_wait_timeout": 0.2},
        feda2v={"use_generator": False},
        data={"cache_dir": str(cache_dir)},
    )
    strategy = build_strategy(config, tmp_path / "run")
    with pytest.raises(NodeCountError, match="num_clients is 3 but 2 SuperNodes"):
        strategy.configure_fit(1, strategy.initial_parameters, manager_with(2))
    assert len(strategy.configure_fit(1, strategy.initial_parameters, manager_with(3))) == 3
    started = time.monotonic()  # round 2 with a node more: no wait, no error
    assert len(strategy.configure_fit(2, strategy.initial_parameters, manager_with(4))) == 4
    assert time.monotonic() - started < 1
