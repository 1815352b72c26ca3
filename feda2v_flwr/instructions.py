"""What the strategy tells a node each round, and the node-config keys a SuperNode may set.

One typed object, ``RoundInstructions``, is written by the strategy (``to_config``: Flower's
config record of ``FitIns`` / ``EvaluateIns``) and read by the ClientApp (``from_config``). The
string keys on the wire and in a SuperNode's ``--node-config`` live in this module only.

A SuperNode's own folders win over the server's (``on_node``): a node on another machine keeps
its embedding cache, resume state, client generators and images where its ``--node-config``
says, not at the server's run-folder paths.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

# ---- a SuperNode's node config (``flower-supernode --node-config``) ---------------------------
PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"
DATA_DIR = "data-dir"  # the node's dataset folder, in place of data.root
CACHE_DIR = "cache-dir"  # the node's embedding cache
CLIENT_STATE_DIR = "client-state-dir"  # the node's resume state


@dataclass(frozen=True)
class RoundInstructions:
    server_round: int = 0
    cache_dir: str | None = None  # embedding cache
    client_generator_dir: str | None = None  # where nodes keep their generators' checkpoints
    image_dir: str | None = None  # generated images of the final evaluation
    client_state_dir: str | None = None  # the node's resume state
    save_client_state: bool = False  # a checkpoint round: the node writes its state and generators
    keep_client_states: int = 3
    pretrained_generator_path: str | None = None  # client generators start from these weights
    participants: tuple[int, ...] | None = None  # None: every node trains this round

    def to_config(self) -> dict[str, bool | int | str]:
        """Flower's config record (scalars only; a field left at None is not sent)."""
        config: dict[str, bool | int | str] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if value is None:
                continue
            if field.name == "participants":
                value = ",".join(map(str, value))
            elif field.name == "save_client_state":
                value = int(value)
            config[WIRE_KEYS[field.name]] = value
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RoundInstructions:
        """Read what ``to_config`` wrote; keys that are absent keep their defaults."""
        values: dict[str, Any] = {}
        for field in fields(cls):
            key = WIRE_KEYS[field.name]
            if key not in config:
                continue
            raw = config[key]
            if field.name == "participants":
                values[field.name] = tuple(int(p) for p in str(raw).split(",") if p) or None  # "": everyone
            elif field.name == "save_client_state":
                values[field.name] = bool(int(raw))
            elif field.name in ("server_round", "keep_client_states"):
                values[field.name] = int(raw)
            else:
                values[field.name] = str(raw)
        return cls(**values)

    def on_node(self, node_config: Mapping[str, Any]) -> RoundInstructions:
        """The same instructions with the node's own folders (its ``--node-config``) in place of
        the server's paths."""
        local = {}
        for name, keys in NODE_KEYS.items():
            value = next((node_config[k] for k in keys if node_config.get(k)), None)
            if value is not None:
                local[name] = str(value)
        return replace(self, **local)

    def trains(self, partition_id: int) -> bool:
        """Whether the node with this partition trains this round (False: it sits out)."""
        return self.participants is None or partition_id in self.participants


# Field -> key in Flower's config record. The mixed spelling is the wire format of earlier
# versions, kept so that a node and a server of different versions still understand each other.
WIRE_KEYS = {
    "server_round": "server_round",
    "cache_dir": "cache-dir",
    "client_generator_dir": "client-generator-dir",
    "image_dir": "image-dir",
    "client_state_dir": "client-state-dir",
    "save_client_state": "save-client-state",
    "keep_client_states": "keep-client-states",
    "pretrained_generator_path": "pretrained-generator-path",
    "participants": "participants",
}
# Field -> the node-config keys that replace it on a node (first one set wins). ``generator-dir``
# is the earlier name of ``client-generator-dir`` and still read.
NODE_KEYS = {
    "cache_dir": (CACHE_DIR,),
    "client_generator_dir": ("client-generator-dir", "generator-dir"),
    "image_dir": ("image-dir",),
    "client_state_dir": (CLIENT_STATE_DIR,),
    "pretrained_generator_path": ("pretrained-generator-path",),
}
