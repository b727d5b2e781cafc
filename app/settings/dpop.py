"""Sender-constrained tokens: how DPoP proofs (RFC 9449) are checked.

Binding is always enforced: a token whose ``cnf`` names a key (``jkt``) or a certificate
(``x5t#S256``) is accepted only with a matching proof or client certificate, whatever this
section says. These keys tune the proof checks only. The defaults suit most deployments.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from app.durations import Duration
from app.settings.base import SUPPORTED_ALGORITHMS, Model

# RFC 9449 §4.3 item 5: registered asymmetric algorithms only, never "none" or HMAC.
DEFAULT_PROOF_ALGORITHMS = (
    "ES256",
    "ES384",
    "ES512",
    "PS256",
    "PS384",
    "PS512",
    "RS256",
    "RS384",
    "RS512",
    "EdDSA",
)


class DpopNonceSettings(Model):
    """Server-provided nonces (RFC 9449 §9): proofs must carry a nonce this deployment issued
    within the last one or two ``window``s. Every replica reads the same secret file, so they
    accept each other's nonces without sharing any state (app/identity/dpop_nonce.py)."""

    secret_file: Path
    window: Duration = timedelta(minutes=5)

    @field_validator("window")
    @classmethod
    def _window(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=10) <= value <= timedelta(hours=1):
            raise ValueError("must be between 10s and 1h")
        return value


class DpopSettings(Model):
    algorithms: list[str] = Field(default_factory=lambda: list(DEFAULT_PROOF_ALGORITHMS))
    # How old a proof may be (its iat); every proof's jti is remembered this long (plus
    # leeway) in the replay cache (the store), so a replay within the window is refused.
    max_age: Duration = timedelta(seconds=60)
    # How far in the future a proof's iat may lie (the client's clock running ahead).
    leeway: Duration = timedelta(seconds=5)
    max_proof_bytes: int = Field(default=8192, ge=512, le=65536)
    nonce: DpopNonceSettings | None = None

    @field_validator("algorithms")
    @classmethod
    def _asymmetric(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("name at least one algorithm")
        bad = [alg for alg in value if alg not in SUPPORTED_ALGORITHMS]
        if bad:
            raise ValueError(
                f"{bad} not allowed: asymmetric algorithms only "
                f"({', '.join(sorted(SUPPORTED_ALGORITHMS))}); never none or HMAC"
            )
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _window(self) -> DpopSettings:
        if not timedelta(seconds=1) <= self.max_age <= timedelta(minutes=10):
            raise ValueError("max_age must be between 1s and 10m")
        if not timedelta(0) <= self.leeway <= timedelta(minutes=1):
            raise ValueError("leeway must be between 0s and 1m")
        return self
