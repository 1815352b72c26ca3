"""Deployment pieces without processes: certificates, command flags, connection entries, node data."""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

from conftest import tiny_config
from feda2v_flwr.client_app import with_data_root
from feda2v_flwr.deploy.certs import make_certificates
from feda2v_flwr.deploy.cli import main as deploy_main
from feda2v_flwr.deploy.commands import Tls, node_config_string, superlink_command, supernode_command, write_connection


def test_certificates_chain_to_the_ca_with_the_names_nodes_dial(tmp_path):
    files = make_certificates(tmp_path / "certs", names=["10.0.0.5", "superlink", "::1"], nodes=2)
    ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    server = x509.load_pem_x509_certificate(files.superlink_certificate.read_bytes())
    server.verify_directly_issued_by(ca)  # raises unless the CA signed it
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5"), ipaddress.ip_address("::1")]
    assert names.get_values_for_type(x509.DNSName) == ["superlink"]
    for private in (files.superlink_key, files.directory / "ca.key", files.node_key(0)):
        assert oct(private.stat().st_mode & 0o777) == "0o600"
    assert oct(files.node_key(0).parent.stat().st_mode & 0o777) == "0o700"


def test_node_keys_are_openssh_ec_pairs(tmp_path):
    files = make_certificates(tmp_path / "certs", names=["127.0.0.1"], nodes=3)
    publics = set()
    for index in range(3):
        private = load_ssh_private_key(files.node_key(index).read_bytes(), password=None)
        public = load_ssh_public_key(files.node_public_key(index).read_bytes())
        assert isinstance(private, ec.EllipticCurvePrivateKey)  # Flower rejects ed25519 and RSA keys
        assert private.public_key().public_numbers() == public.public_numbers()
        publics.add(files.node_public_key(index).read_text().split()[1])
    assert len(publics) == 3


def test_existing_material_is_kept_unless_forced(tmp_path):
    first = make_certificates(tmp_path, names=["127.0.0.1"], nodes=1).ca.read_bytes()
    with pytest.raises(FileExistsError, match="--force"):
        make_certificates(tmp_path, names=["127.0.0.1"], nodes=1)
    assert make_certificates(tmp_path, names=["127.0.0.1"], nodes=1, force=True).ca.read_bytes() != first
    assert deploy_main(["certs", "--out", str(tmp_path), "--nodes", "1"]) == 2


def test_superlink_flags():
    tls = Tls(Path("ca.crt"), Path("sl.crt"), Path("sl.key"))
    command = superlink_command(host="0.0.0.0", port=9091, tls=tls, node_auth=True, database="state.db")
    assert command == [
        "flower-superlink",
        "--ssl-ca-certfile",
        "ca.crt",
        "--ssl-certfile",
        "sl.crt",
        "--ssl-keyfile",
        "sl.key",
        "--enable-supernode-auth",
        "--isolation",
        "subprocess",
        "--host",
        "0.0.0.0",
        "--port",
        "9091",
        "--database",
        "state.db",
        "--disable-runtime-dependency-installation",
    ]
    insecure = superlink_command(simulation=True)
    assert "--insecure" in insecure and "--simulation" in insecure and ":flwr-in-memory:" in insecure
    with pytest.raises(ValueError, match="needs TLS"):
        superlink_command(node_auth=True)
    with pytest.raises(ValueError, match="certificate and key"):
        superlink_command(tls=Tls(Path("ca.crt")))


def test_supernode_flags_and_node_config():
    node_config = node_config_string(1, 3, data_dir="/data/esc50", cache_dir="/cache")
    assert node_config == 'partition-id=1 num-partitions=3 data-dir="/data/esc50" cache-dir="/cache"'
    command = supernode_command(
        superlink="10.0.0.5:9091", node_config=node_config, port=9095, tls=Tls(Path("ca.crt")), auth_key=Path("k")
    )
    assert command[:5] == ["flower-supernode", "--root-certificates", "ca.crt", "--auth-supernode-private-key", "k"]
    assert command[command.index("--node-config") + 1] == node_config
    assert command[-4:] == ["--host", "127.0.0.1", "--port", "9095"]
    assert supernode_command(superlink="h:1", node_config="", max_retries=2)[-2:] == ["--max-retries", "2"]
    with pytest.raises(ValueError, match="0..2"):
        node_config_string(3, 3)
    with pytest.raises(ValueError, match="spaces or quotes"):
        node_config_string(0, 2, data_dir="/my data")
    with pytest.raises(ValueError, match="TLS"):
        supernode_command(superlink="h:1", node_config="", auth_key=Path("k"))


def test_connection_entry_is_added_beside_the_users_own(tmp_path):
    (tmp_path / "config.toml").write_text(
        '[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local:"\n\n'
        '[superlink.feda2v-deploy]\naddress = "old:1"\ninsecure = true\n\n'
        '[superlink.sim]\naddress = ":local:"\noptions.num-supernodes = 3\n'
        "options.backend.client-resources.num-cpus = 1\n"
    )
    write_connection(tmp_path, "feda2v-deploy", "10.0.0.5:9091", tmp_path / "ca.crt")
    written = tomllib.loads((tmp_path / "config.toml").read_text())["superlink"]
    assert written["default"] == "local"
    assert written["local"] == {"address": ":local:"}
    assert written["sim"]["options"] == {"num-supernodes": 3, "backend": {"client-resources": {"num-cpus": 1}}}
    assert written["feda2v-deploy"] == {"address": "10.0.0.5:9091", "root-certificates": str(tmp_path / "ca.crt")}


def test_a_nodes_data_dir_replaces_data_root():
    on_disk = tiny_config(data={"dataset": "audiofolder", "root": "/server/copy"})
    assert with_data_root(on_disk, "/node/data", 0).data.root == "/node/data"
    assert on_disk.data.root == "/server/copy"  # the shared config is not changed
    procedural = tiny_config()
    assert with_data_root(procedural, "/node/data", 0) is procedural


def test_dry_run_prints_the_flower_command(tmp_path, capsys):
    make_certificates(tmp_path / "certs", names=["127.0.0.1"], nodes=1)
    assert deploy_main(["superlink", "--certs", str(tmp_path / "certs"), "--node-auth", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("flower-superlink --ssl-ca-certfile") and "--enable-supernode-auth" in printed
    assert deploy_main(["superlink", "--node-auth", "--dry-run"]) == 2
    assert deploy_main(["superlink", "--certs", str(tmp_path / "missing"), "--dry-run"]) == 2


def test_plain_http_beyond_loopback_must_be_asked_for_and_tls_without_node_auth_warns(tmp_path, capsys):
    assert deploy_main(["superlink", "--dry-run"]) == 2  # 0.0.0.0 by default
    assert "give --certs DIR (TLS" in capsys.readouterr().err
    assert deploy_main(["superlink", "--host", "127.0.0.1", "--dry-run"]) == 0
    assert "WARNING" not in capsys.readouterr().err
    assert deploy_main(["superlink", "--insecure", "--dry-run"]) == 0
    assert "WARNING: plain HTTP on 0.0.0.0:9091 (--insecure)" in capsys.readouterr().err
    make_certificates(tmp_path / "certs", names=["127.0.0.1"], nodes=1)
    assert deploy_main(["superlink", "--certs", str(tmp_path / "certs"), "--dry-run"]) == 0
    assert "WARNING: TLS without --node-auth" in capsys.readouterr().err


def test_supernode_refuses_missing_local_files(tmp_path, capsys):
    base = ["supernode", "--superlink", "h:9091", "--partition-id", "0", "--num-partitions", "2", "--dry-run"]
    assert deploy_main([*base, "--data-dir", str(tmp_path / "absent")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert deploy_main([*base, "--ca", str(tmp_path / "ca.crt")]) == 2
    assert deploy_main([*base, "--data-dir", str(tmp_path)]) == 0
    assert f'data-dir="{tmp_path}"' in capsys.readouterr().out
