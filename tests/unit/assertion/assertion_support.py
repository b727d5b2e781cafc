"""Test support for the signed identity assertion: key files, settings, decisions, and
verification exactly as an upstream does it (PyJWT against the published JWKS)."""

from __future__ import annotations

import os
import time
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from app.assertion.keys import PrivateKey
from app.decision import Decision
from app.evidence.model import Evidence
from app.identity.principal import Principal
from app.reasons import Reason
from app.request import RequestContext, make_context
from app.settings import AssertionSettings

# The signers' clock in these tests (the real clock at import); verify() checks exp and iat as of it.
NOW = float(int(time.time()))
ISSUER = "https://ztauthz.example/sidecar"
AUDIENCE = "https://invoices.internal"
ALGORITHMS = ["ES256", "EdDSA", "RS256"]
KeyKind = Literal["ec", "ed25519", "rsa"]


@cache
def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)  # slow: once


def private_key(kind: KeyKind) -> PrivateKey:
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return _rsa()


def pem(key: Any) -> bytes:
    data: bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return data


def write_key(
    directory: Path, name: str, kind: KeyKind = "ec", *, written_at: float = NOW - 3600
) -> Path:
    """A PEM key file ``name`` in ``directory``, its modification time set to ``written_at``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(pem(private_key(kind)))
    os.utime(path, (written_at, written_at))
    return path


def settings(keys: Path, **overrides: Any) -> AssertionSettings:
    values: dict[str, Any] = {
        "enabled": True,
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "keys": keys,
        "signing_delay": "0s",
        "jwks_max_age": "0s",
    }
    values.update(overrides)
    return AssertionSettings(**values)


def principal(**overrides: Any) -> Principal:
    values: dict[str, Any] = {
        "issuer": "https://idp.example.com",
        "subject": "alice",
        "groups": frozenset({"finance", "auditors"}),
        "scopes": frozenset({"invoices:read", "invoices:list"}),
        "audience": ("https://api.example.com",),
        "expires_at": int(NOW) + 900,
        "issued_at": int(NOW) - 60,
        "claims": MappingProxyType({}),
        "client_id": "web",
    }
    values.update(overrides)
    return Principal(**values)


def allow(
    who: Principal | None = None,
    *,
    evidence: Evidence | None = None,
    decision_id: str = "d-1",
    rule: str = "invoices-read",
    version: str = "sha256:v1",
) -> Decision:
    reason = Reason.ALLOWED if who is not None else Reason.ALLOWED_ANONYMOUS
    return Decision(True, reason, decision_id, version, rule, "invoices", who, evidence=evidence)


def request(host: str = "api.example.com", path: str = "/invoices/42") -> RequestContext:
    return make_context("GET", host, path, {})


def verify(
    token: str, jwks: bytes, *, audience: str = AUDIENCE, leeway: float = 0
) -> dict[str, Any]:
    """What an upstream does: the key by ``kid`` from the JWKS, then signature, ``iss``,
    ``aud``, ``exp`` and ``iat`` checked by PyJWT. The signer's clock is ``NOW`` (fixed when
    this module was imported, maybe minutes before the test runs in a long suite); PyJWT knows
    only the real clock, so the time since ``NOW`` is added to the leeway: ``exp`` is checked as
    of ``NOW``."""
    header = jwt.get_unverified_header(token)
    key = jwt.PyJWKSet.from_json(jwks.decode())[header["kid"]]
    claims: dict[str, Any] = jwt.decode(
        token,
        key,
        algorithms=ALGORITHMS,
        audience=audience,
        issuer=ISSUER,
        leeway=leeway + max(0.0, time.time() - NOW),
        options={"require": ["iss", "aud", "exp", "iat", "jti"]},
    )
    return claims
