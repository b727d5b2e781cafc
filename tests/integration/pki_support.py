"""The mTLS tests' PKI: the dev PKI (app/dev/pki.py) plus a client certificate from a CA that
Envoy does not trust."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from app.dev.pki import DEMO_WORKLOAD_ID as WORKLOAD_SPIFFE_ID
from app.dev.pki import CertPair as Pair
from app.dev.pki import make_ca, make_dev_pki

__all__ = ["WORKLOAD_SPIFFE_ID", "Pair", "Pki", "make_pki"]


@dataclass(frozen=True, slots=True)
class Pki:
    ca: Path
    server: Pair  # for 127.0.0.1 / localhost
    workload: Pair  # client certificate, URI SAN = WORKLOAD_SPIFFE_ID
    rogue: Pair  # client certificate with the same SPIFFE ID, signed by a CA nobody trusts


def make_pki(directory: Path) -> Pki:
    dev = make_dev_pki(directory)
    untrusted = make_ca(directory / "untrusted", "nobody trusts me")
    rogue = untrusted.issue("rogue", uris=[WORKLOAD_SPIFFE_ID])
    return Pki(dev.ca, dev.server, dev.workload, rogue)
