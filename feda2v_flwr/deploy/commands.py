"""The Flower commands of a deployment, built in one place.

``feda2v-deploy``, the loopback tests and (checked by a test) the Docker compose files all use
these flags, so what is tested is what users run. Values are plain strings; nothing here
starts a process. ``write_connection`` writes the one file the ``flwr`` CLI reads to find a
SuperLink.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from feda2v_flwr.instructions import CACHE_DIR, CLIENT_STATE_DIR, DATA_DIR, NUM_PARTITIONS, PARTITION_ID

DEFAULT_SUPERLINK_PORT = 9091  # the SuperLink serves Fleet, Control and ServerAppIo on one port
DEFAULT_NODE_PORT = 9094  # each SuperNode's local ClientAppIo port (two nodes on one host need two)


@dataclass(frozen=True)
class Tls:
    """TLS for the SuperLink (certificate + key + CA) or for a dialling client (``ca`` only)."""

    ca: Path
    certificate: Path | None = None
    key: Path | None = None


def superlink_command(
    *,
    host: str = "0.0.0.0",
    port: int = DEFAULT_SUPERLINK_PORT,
    tls: Tls | None = None,
    node_auth: bool = False,
    database: str | None = None,
    isolation: str = "subprocess",
    simulation: bool = False,
) -> list[str]:
    """``flower-superlink`` for a deployment (or ``simulation=True``: one that runs Ray simulations).

    ``database``: a file for the SuperLink's state (runs, registered nodes), kept across restarts;
    None keeps it in memory.
    """
    if node_auth and tls is None:
        raise ValueError("SuperNode authentication needs TLS: give the SuperLink certificates (feda2v-deploy certs)")
    command = ["flower-superlink"]
    if tls is None:
        command.append("--insecure")
    else:
        if tls.certificate is None or tls.key is None:
            raise ValueError("the SuperLink needs its certificate and key, not only the CA")
        command += ["--ssl-ca-certfile", str(tls.ca), "--ssl-certfile", str(tls.certificate)]
        command += ["--ssl-keyfile", str(tls.key)]
    if node_auth:
        command.append("--enable-supernode-auth")
    if simulation:
        command.append("--simulation")
    command += ["--isolation", isolation, "--host", host, "--port", str(port)]
    command += ["--database", database or ":flwr-in-memory:"]
    command.append("--disable-runtime-dependency-installation")
    return command


def node_config_string(
    partition_id: int,
    num_partitions: int,
    *,
    data_dir: str | None = None,
    cache_dir: str | None = None,
    state_dir: str | None = None,
) -> str:
    """``--node-config`` of one SuperNode: which partition it is and where its files live."""
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition id {partition_id} is not in 0..{num_partitions - 1}")
    pairs = [f"{PARTITION_ID}={partition_id}", f"{NUM_PARTITIONS}={num_partitions}"]
    for key, value in ((DATA_DIR, data_dir), (CACHE_DIR, cache_dir), (CLIENT_STATE_DIR, state_dir)):
        if value:
            if '"' in value or " " in value:
                raise ValueError(f"{key} {value!r}: Flower's --node-config cannot carry spaces or quotes")
            pairs.append(f'{key}="{value}"')
    return " ".join(pairs)


def supernode_command(
    *,
    superlink: str,
    node_config: str,
    port: int = DEFAULT_NODE_PORT,
    host: str = "127.0.0.1",
    tls: Tls | None = None,
    auth_key: Path | None = None,
    isolation: str = "subprocess",
    max_retries: int | None = None,
) -> list[str]:
    """``flower-supernode`` for one machine. ``auth_key``: its registered private key.
    ``max_retries``: give up after that many failed connection attempts (None: retry forever)."""
    if auth_key is not None and tls is None:
        raise ValueError("a SuperNode key is only used over TLS: give the CA certificate too")
    command = ["flower-supernode"]
    command += ["--insecure"] if tls is None else ["--root-certificates", str(tls.ca)]
    if auth_key is not None:
        command += ["--auth-supernode-private-key", str(auth_key)]
    command += ["--superlink", superlink, "--node-config", node_config]
    command += ["--isolation", isolation, "--host", host, "--port", str(port)]
    if max_retries is not None:
        command += ["--max-retries", str(max_retries)]
    return command


def superexec_command(*, appio_address: str, ca: Path | None = None) -> list[str]:
    """``flower-superexec`` that runs the ServerApp (pointed at the SuperLink) or a node's
    ClientApps (pointed at its SuperNode), for ``--isolation process`` (Docker). ``ca``: the API
    it dials is TLS (a TLS SuperLink serves its ServerApp API on the same port)."""
    command = ["flower-superexec"]
    command += ["--insecure"] if ca is None else ["--root-certificates", str(ca)]
    return command + ["--runtime-api-address", appio_address]


def connection_entry(name: str, address: str, *, ca: Path | None = None) -> str:
    """A ``[superlink.<name>]`` table for ``$FLWR_HOME/config.toml`` (what ``flwr run`` dials)."""
    lines = [f"[superlink.{name}]", f'address = "{address}"']
    lines.append(f'root-certificates = "{ca}"' if ca is not None else "insecure = true")
    return "\n".join(lines) + "\n"


def write_connection(flwr_home: Path, name: str, address: str, ca: Path | None = None) -> None:
    """Add (or replace) the ``[superlink.<name>]`` entry of ``$FLWR_HOME/config.toml``, the
    connection ``flwr`` dials (``ca``: over TLS, else plain HTTP); other entries stay as they are,
    and so does the default connection of an existing file."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    path = flwr_home / "config.toml"
    current = tomllib.loads(path.read_text()) if path.exists() else {}
    superlinks = {key: value for key, value in current.get("superlink", {}).items() if isinstance(value, dict)}
    superlinks.pop(name, None)
    default = current.get("superlink", {}).get("default", name)
    text = f'[superlink]\ndefault = "{default}"\n\n'
    for other, table in superlinks.items():
        text += f"[superlink.{other}]\n" + "".join(f"{k} = {v}\n" for k, v in _toml_pairs(table)) + "\n"
    text += connection_entry(name, address, ca=ca.resolve() if ca else None)
    path.write_text(text)


def _toml_pairs(table: dict, prefix: str = "") -> list[tuple[str, str]]:
    """A table's entries as TOML ``dotted.key = value`` pairs (nested tables stay tables)."""
    pairs = []
    for key, value in table.items():
        if isinstance(value, dict):
            pairs += _toml_pairs(value, f"{prefix}{key}.")
        else:
            pairs.append((f"{prefix}{key}", _toml_value(value)))
    return pairs


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
