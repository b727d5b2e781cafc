"""Where the local stack listens (``Ports``) and what its ``ztauthz serve`` runs: the demo's
configuration (every evidence source, the SSF receiver, the kill switch) bound to the stack's
ports, issuers and files."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from app.dev.ports import free_port
from app.settings.server import ADMIN_PORT, CHECK_PORT

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_POLICIES = REPO_ROOT / "policies"
AUDIENCE = "https://api.example.com"
RECEIVER_AUDIENCE = "urn:ztauthz:dev-receiver"  # the aud of the dev transmitter's SETs
DEV_STREAM = "dev"
PUSH_TOKEN_FILE = "ssf-push-token"  # noqa: S105 - a file name: the dev stream's push token
ADMIN_TOKEN_FILE = "admin-token"  # noqa: S105 - a file name: the kill switch's token
LOOPBACK = "127.0.0.1"
DEMO_TOKEN_TTL = 600.0  # within the demo issuer's max_token_lifetime (15m)


@dataclass(frozen=True, slots=True)
class Ports:
    """Every port the stack listens on (all on loopback). 0 means "any free port"."""

    envoy: int = 10000
    envoy_admin: int = 9901
    check: int = CHECK_PORT
    admin: int = ADMIN_PORT
    issuer: int = 9400
    upstream: int = 8081
    envoy_mtls: int = 10443  # the mTLS listener (workload identity)
    envoy_mtls_admin: int = 9902
    device_issuer: int = 9401  # the dev device-trust provider (device attestation tokens)
    receiver: int = 9200  # ztauthz's SSF receiver (security events, RFC 8935)

    def resolved(self) -> Ports:
        """The same ports with each 0 replaced by a distinct free port."""
        given = [getattr(self, f.name) for f in fields(self)]
        used = {port for port in given if port}
        if len(used) != len([port for port in given if port]):
            raise ValueError(f"the same port is given twice: {given}")
        chosen = []
        for port in given:
            if port == 0:
                port = free_port()
                while port in used:
                    port = free_port()
            used.add(port)
            chosen.append(port)
        return Ports(*chosen)

    @classmethod
    def ephemeral(cls) -> Ports:
        return cls(**{f.name: 0 for f in fields(cls)}).resolved()


def demo_config() -> dict[str, Any]:
    """The ztauthz configuration of the demo (ports and issuer URLs are set by bind_config).

    Evidence: Envoy is the edge (its peer is the client); the dev issuer's tokens may name a
    device (``device_id``, ``device.managed``, ``device.compliant``) and a country; the dev
    device provider's attestation tokens arrive in ``x-device-token``; the mTLS Envoy sets
    ``x-forwarded-client-cert`` (SANITIZE_SET), so workload identities are believed over HTTP.
    """
    issuer = f"http://{LOOPBACK}:9400"
    return {
        "issuers": [
            {
                "issuer": issuer,
                "discovery": True,
                "audiences": [AUDIENCE],
                "algorithms": ["RS256", "ES256"],
                "max_token_lifetime": "15m",
                "leeway": "30s",
            }
        ],
        "evidence": {
            "client_ip": {},
            "token_claims": [
                {
                    "issuer": issuer,
                    "device": {
                        "id": "device_id",
                        "managed": "device.managed",
                        "compliant": "device.compliant",
                    },
                    "country": "country",
                }
            ],
            "device_token": {
                "provider": {
                    "issuer": f"http://{LOOPBACK}:9401",
                    "audiences": [AUDIENCE],
                    "algorithms": ["ES256", "RS256"],
                    "max_token_lifetime": "1h",
                },
                "max_age": "10m",
            },
            "client_certificate": {"envoy_forward_client_cert_details": "SANITIZE_SET"},
            # The dev issuer's signed `country` claim is the request's country (there is no
            # GeoIP database on loopback): `ztauthz dev token --country DE` shows x-auth-country.
            "location": {"country_from_claims": True},
        },
        # The dev issuer is also an SSF transmitter (``ztauthz dev signal``): its CAEP events
        # are pushed to the receiver; bind_config sets the tokens' files and the port.
        "signals": {
            "transmitters": [
                {
                    "name": DEV_STREAM,
                    "issuer": issuer,
                    "audiences": [RECEIVER_AUDIENCE],
                    "push": {"token_file": PUSH_TOKEN_FILE},
                }
            ],
            "admin": {"token_file": ADMIN_TOKEN_FILE},
        },
        "log_level": "info",
    }


def bind_config(
    base: Mapping[str, Any],
    *,
    ports: Ports,
    issuer_url: str,
    policies: Path,
    device_issuer_url: str | None = None,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """``base`` with the listeners, the (first) issuer's URL and the policy directory set.

    Evidence settings follow the URLs: ``token_claims`` entries for the first issuer's original
    URL get the new one, and the device provider gets ``device_issuer_url`` when given. So do
    signals: a transmitter with the first issuer's URL gets the new one, the receiver listens on
    ``ports.receiver``, and relative token files are made relative to ``workdir``.
    """
    config = copy.deepcopy(dict(base))
    config["server"] = {
        "check": {"host": LOOPBACK, "port": ports.check, "path_prefix": "/check"},
        "admin": {"host": LOOPBACK, "port": ports.admin},
    }
    issuers = [dict(i) for i in config.get("issuers", [])]
    if not issuers:
        raise ValueError("the base configuration must list at least one issuer")
    original = issuers[0].get("issuer")
    issuers[0]["issuer"] = issuer_url
    config["issuers"] = issuers
    config["policies"] = str(policies.resolve())
    evidence = config.get("evidence")
    if isinstance(evidence, dict):
        for entry in evidence.get("token_claims", []):
            if isinstance(entry, dict) and entry.get("issuer") == original:
                entry["issuer"] = issuer_url
        device_token = evidence.get("device_token")
        if device_issuer_url is not None and isinstance(device_token, dict):
            device_token.setdefault("provider", {})["issuer"] = device_issuer_url
    signals = config.get("signals")
    if isinstance(signals, dict):
        signals["receiver"] = {"listener": "own", "host": LOOPBACK, "port": ports.receiver}
        for transmitter in signals.get("transmitters", []):
            if isinstance(transmitter, dict) and transmitter.get("issuer") == original:
                transmitter["issuer"] = issuer_url
            push = transmitter.get("push") if isinstance(transmitter, dict) else None
            if isinstance(push, dict) and workdir is not None and "token_file" in push:
                push["token_file"] = str((workdir / push["token_file"]).resolve())
        admin = signals.get("admin")
        if isinstance(admin, dict) and workdir is not None and "token_file" in admin:
            admin["token_file"] = str((workdir / admin["token_file"]).resolve())
    return config
