"""The strategy's round instructions: one typed object, the same wire format as before."""

import re
from pathlib import Path

from feda2v_flwr.instructions import NODE_KEYS, WIRE_KEYS, RoundInstructions

PROJECT = Path(__file__).resolve().parent.parent


def test_the_wire_format_is_the_one_earlier_versions_send_and_read():
    ins = RoundInstructions(
        server_round=3,
        cache_dir="/c",
        client_generator_dir="/run/client_generators",
        image_dir="/run/images",
        client_state_dir="/run/client_state",
        save_client_state=True,
        keep_client_states=2,
        participants=(0, 3),
    )
    # the dict the strategy built by hand before this object existed (less "num-rounds": the
    # nodes checkpoint their generators on the rounds "save-client-state" names)
    assert ins.to_config() == {
        "server_round": 3,
        "cache-dir": "/c",
        "client-generator-dir": "/run/client_generators",
        "image-dir": "/run/images",
        "client-state-dir": "/run/client_state",
        "save-client-state": 1,
        "keep-client-states": 2,
        "participants": "0,3",
    }
    assert RoundInstructions.from_config(ins.to_config()) == ins
    assert RoundInstructions.from_config({**ins.to_config(), "num-rounds": 5}) == ins  # an older server's key
    with_weights = RoundInstructions(server_round=1, pretrained_generator_path="/w/gen.pt")
    assert RoundInstructions.from_config(with_weights.to_config()) == with_weights


def test_absent_keys_keep_their_defaults_and_an_empty_participant_list_means_everyone():
    ins = RoundInstructions.from_config({"server_round": "2", "participants": ""})
    assert ins == RoundInstructions(server_round=2)
    assert ins.trains(0) and ins.trains(7)
    assert not ins.save_client_state and ins.keep_client_states == 3
    drawn = RoundInstructions.from_config({"participants": "1,4"})
    assert drawn.trains(4) and not drawn.trains(0)


def test_a_nodes_own_folders_replace_the_servers_paths():
    ins = RoundInstructions(server_round=1, cache_dir="/server/cache", client_state_dir="/server/state", image_dir="/i")
    node = {"partition-id": 0, "cache-dir": "/node/cache", "generator-dir": "/node/gen", "client-state-dir": ""}
    local = ins.on_node(node)
    assert local.cache_dir == "/node/cache"
    assert local.client_generator_dir == "/node/gen"  # the earlier node-config name is still read
    assert local.client_state_dir == "/server/state"  # an empty value does not replace the server's
    assert local.image_dir == "/i" and local.server_round == 1
    both = ins.on_node({"client-generator-dir": "/new", "generator-dir": "/old"})
    assert both.client_generator_dir == "/new"


def test_no_instruction_key_is_spelled_outside_the_instructions_module():
    keys = {*WIRE_KEYS.values(), *(k for names in NODE_KEYS.values() for k in names)}
    keys |= {"partition-id", "num-partitions", "data-dir"}
    sources = [*(PROJECT / "feda2v_flwr").rglob("*.py"), *(PROJECT / "strategies").rglob("*.py")]
    found = {
        (path.name, key)
        for path in sources
        if path.name != "instructions.py"
        for key in keys
        if re.search(rf"[\"']{re.escape(key)}[\"'=]", path.read_text())
    }
    assert not found, found
