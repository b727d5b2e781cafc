"""A throwaway PKI for mTLS tests, made with ``cryptography``: a CA, Envoy's server certificate,
a workload client certificate whose URI SAN is a SPIFFE ID, and a client certificate from a CA
Envoy does not trust. Keys are EC P-256 (fast to generate); everything lives in ``directory``.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

WORKLOAD_SPIFFE_ID = "spiffe://example.org/ns/billing/sa/invoice-worker"


@dataclass(frozen=True, slots=True)
class Pair:
    certificate: Path
    key: Path

    def pem(self) -> str:
        return self.certificate.read_text(encoding="ascii")


@dataclass(frozen=True, slots=True)
class Pki:
    ca: Path
    server: Pair  # for 127.0.0.1 / localhost
    workload: Pair  # client certificate, URI SAN = WORKLOAD_SPIFFE_ID
    rogue: Pair  # client certificate signed by a CA nobody trusts


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
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
    return cert, key


def _leaf(
    directory: Path,
    name: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    san: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
) -> Pair:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    ca_cert, ca_key = issuer
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pair = Pair(directory / f"{name}.crt", directory / f"{name}.key")
    pair.certificate.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, pair.key)
    return pair


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca("ztauthz test CA")
    ca_path = directory / "ca.crt"
    ca_path.write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
    server = _leaf(
        directory,
        "envoy",
        ca,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        ExtendedKeyUsageOID.SERVER_AUTH,
    )
    workload = _leaf(
        directory,
        "workload",
        ca,
        [x509.UniformResourceIdentifier(WORKLOAD_SPIFFE_ID)],
        ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    rogue = _leaf(
        directory,
        "rogue",
        _ca("nobody trusts me"),
        [x509.UniformResourceIdentifier("spiffe://example.org/ns/billing/sa/invoice-worker")],
        ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    return Pki(ca_path, server, workload, rogue)
