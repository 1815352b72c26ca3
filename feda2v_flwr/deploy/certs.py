"""TLS and SuperNode identity material for a deployment: a CA, the SuperLink's certificate and
one EC key pair per SuperNode.

Layout written under ``out`` (the names the deployment commands and the compose overlay use)::

    ca.crt  ca.key                 the certificate authority (keep ca.key offline)
    superlink.crt  superlink.key   the SuperLink's certificate (its SANs: every name nodes dial)
    nodes/node-<i>  node-<i>.pub   SuperNode i's private key (OpenSSH, ECDSA P-384) and public key

The CA certificate goes to every machine that dials the SuperLink (SuperNodes, ``flwr`` CLI);
a node's private key stays on that node; its public key is registered with
``flwr supernode register``. Flower accepts only EC keys for SuperNodes (not ed25519 or RSA).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_NAMES = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class CertificateFiles:
    """Where the material of one ``make_certificates`` call lies."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def superlink_certificate(self) -> Path:
        return self.directory / "superlink.crt"

    @property
    def superlink_key(self) -> Path:
        return self.directory / "superlink.key"

    def node_key(self, index: int) -> Path:
        return self.directory / "nodes" / f"node-{index}"

    def node_public_key(self, index: int) -> Path:
        return self.directory / "nodes" / f"node-{index}.pub"


def subject_alternative_names(names: list[str]) -> x509.SubjectAlternativeName:
    """IP addresses become IP SANs, anything else a DNS SAN (clients check the name they dial)."""
    entries: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _write(path: Path, data: bytes, *, private: bool) -> None:
    """Private files are created owner-only (never readable by others, not even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not private:
        path.write_bytes(data)
        return
    path.unlink(missing_ok=True)  # an existing file would keep its old mode
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)


def _pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )


def make_certificates(
    out: Path, *, names: list[str], nodes: int, days: int = 365, force: bool = False
) -> CertificateFiles:
    """Write a CA, a SuperLink certificate valid for ``names`` and ``nodes`` SuperNode key pairs.

    Refuses to overwrite existing material unless ``force`` (a new CA invalidates every machine's
    copy of the old one).
    """
    files = CertificateFiles(out)
    if files.ca.exists() and not force:
        raise FileExistsError(f"{files.ca} exists: keep the existing CA, or pass --force to replace all of {out}")
    if not names:
        raise ValueError("give at least one name (IP address or DNS name) that the SuperNodes dial")
    now = datetime.datetime.now(datetime.UTC)
    validity = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days))

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "feda2v-flwr deployment CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(subject_alternative_names(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    _write(out / "ca.key", _pem_key(ca_key), private=True)
    _write(files.ca, ca.public_bytes(serialization.Encoding.PEM), private=False)
    _write(files.superlink_key, _pem_key(server_key), private=True)
    _write(files.superlink_certificate, server.public_bytes(serialization.Encoding.PEM), private=False)
    files.node_key(0).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    for index in range(nodes):
        make_node_key(files.node_key(index))
    return files


def make_node_key(path: Path) -> Path:
    """One SuperNode identity: ``path`` (private, OpenSSH) and ``path.pub``."""
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    _write(path, private, private=True)
    _write(path.with_name(path.name + ".pub"), public + f" {path.name}\n".encode(), private=False)
    return path
