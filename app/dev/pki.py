"""A throwaway PKI for the demo's mTLS listener and the tests, made with ``cryptography``.

DEVELOPMENT ONLY. One CA (EC P-256, valid for a day) signs Envoy's server certificate (for
127.0.0.1 and localhost) and client certificates: a workload whose URI SAN is a SPIFFE ID, a
device whose URI SAN names it (``urn:ztauthz:device:<id>``), and any other the caller asks for.
Everything is written as PEM files into one directory (keys 0600).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEMO_WORKLOAD_ID: Final = "spiffe://example.org/ns/billing/sa/invoice-worker"
DEVICE_URI_PREFIX: Final = "urn:ztauthz:device:"


@dataclass(frozen=True, slots=True)
class CertPair:
    """A certificate and its private key, as PEM files."""

    certificate: Path
    key: Path

    def pem(self) -> str:
        return self.certificate.read_text(encoding="ascii")


@dataclass(frozen=True, slots=True, eq=False)
class DevCa:
    """A CA that can issue more certificates into ``directory``."""

    directory: Path
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    path: Path  # the CA certificate, PEM

    def issue(
        self,
        name: str,
        *,
        uris: Sequence[str] = (),
        dns: Sequence[str] = (),
        ips: Sequence[str] = (),
        server: bool = False,
    ) -> CertPair:
        """A leaf certificate ``<name>.crt`` / ``<name>.key`` with these SANs, for clients (or,
        with ``server``, for a TLS server)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
        sans += [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        pair = CertPair(self.directory / f"{name}.crt", self.directory / f"{name}.key")
        pair.certificate.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, pair.key)
        return pair


@dataclass(frozen=True, slots=True, eq=False)
class DevPki:
    authority: DevCa  # issues further client certificates
    server: CertPair  # Envoy's listener: 127.0.0.1, ::1, localhost
    workload: CertPair  # URI SAN DEMO_WORKLOAD_ID

    @property
    def ca(self) -> Path:
        """The CA certificate (PEM) clients and Envoy trust."""
        return self.authority.path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


def make_ca(directory: Path, common_name: str = "ztauthz dev CA") -> DevCa:
    """A new self-signed CA; its certificate is written to ``<directory>/<slug>.crt``."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
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
        .sign(key, hashes.SHA256())
    )
    path = directory / (common_name.replace(" ", "-").lower() + ".crt")
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return DevCa(directory, cert, key, path)


def make_dev_pki(directory: Path) -> DevPki:
    """A CA, Envoy's server certificate and the demo workload's client certificate."""
    ca = make_ca(directory)
    server = ca.issue("envoy", dns=["localhost"], ips=["127.0.0.1", "::1"], server=True)
    workload = ca.issue("workload", uris=[DEMO_WORKLOAD_ID])
    return DevPki(ca, server, workload)
