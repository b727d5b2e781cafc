"""Token introspection (RFC 7662) at one issuer: ``issuers[].introspection``.

The issuer's authorization server is asked about tokens ztauthz cannot verify alone: opaque
(non-JWT) access tokens, and JWTs on routes a policy marks ``high_risk``. ztauthz authenticates
to the introspection endpoint as a confidential client (RFC 7662 §2.1) with
``client_secret_basic`` (RFC 6749 §2.3.1) or ``private_key_jwt`` (RFC 7523 §2.2, OIDC Core §9).

Secrets are never part of the configuration: the client secret comes from a file or an
environment variable, the private key from a file; both are read once at start
(app/identity/introspection_client.py) and never logged.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from app.durations import Duration
from app.settings.base import HttpsUrl, Model

ClientAuthMethod = Literal["client_secret_basic", "private_key_jwt"]

# Client assertions are signed with the client's private key: asymmetric algorithms only
# (RFC 7518 §3; HS* would be client_secret_jwt, which this does not offer). Edwards curves by
# their fully-specified names (RFC 9864 §2.2: Ed25519, Ed448), not the deprecated "EdDSA".
ASSERTION_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
    | {"Ed25519", "Ed448"}
)
# The longest an ``active: true`` answer may be remembered: introspection exists to learn about
# revocation, so a long cache would defeat it.
MAX_CACHE_TTL = timedelta(minutes=5)
MAX_TIMEOUT = timedelta(seconds=30)
# Keys that would put a secret into the configuration itself.
_INLINE_SECRETS = ("client_secret", "private_key", "secret", "password")


class Introspection(Model):
    """How and when tokens of one issuer are introspected (docs/introspection.md)."""

    # The introspection endpoint; None: the discovery document's ``introspection_endpoint``
    # (RFC 8414 §2), which then is required.
    endpoint: HttpsUrl | None = None
    client_id: str = Field(min_length=1)
    auth: ClientAuthMethod
    # client_secret_basic: exactly one of these.
    client_secret_file: Path | None = None
    client_secret_env: str | None = Field(default=None, min_length=1)
    # private_key_jwt: the client's private key (PEM, or a private JWK as JSON).
    private_key_file: Path | None = None
    signing_alg: str = "RS256"
    key_id: str | None = Field(default=None, min_length=1)  # the assertion's ``kid`` header
    # The client assertion's ``aud``; None: the issuer identifier (RFC 7523 §3, "identifies the
    # authorization server"; the issuer is what RFC 7523bis recommends over endpoint URLs).
    assertion_audience: str | None = Field(default=None, min_length=1)
    # Opaque tokens carry no issuer: at most one issuer may accept them (checked in model.py),
    # so a token is never sent to an authorization server that did not issue it.
    opaque_tokens: bool = True
    # Introspect this issuer's JWTs too when a ``high_risk`` rule would allow the request. Off
    # for servers that refuse to introspect their JWTs (oidc-provider does).
    high_risk_jwts: bool = False
    # An answer without ``sub`` takes its ``client_id`` as the subject (RFC 9068 §2.2: tokens
    # without a resource owner, e.g. client credentials, name the client). Off: ``sub`` is
    # required, as in a JWT.
    subject_from_client_id: bool = False
    # How long an ``active: true`` answer is used (never past the token's ``exp``); 0: never.
    cache_ttl: Duration = timedelta(seconds=30)
    # On a ``high_risk`` rule, the answer may be at most this old (0: ask on every request).
    high_risk_max_age: Duration = timedelta(0)
    timeout: Duration = timedelta(seconds=3)
    cache_size: int = Field(default=10_000, ge=1, le=1_000_000)
    # Introspections of distinct tokens waiting at once; beyond it a check is refused with
    # introspection_unavailable instead of queueing (a flood of random tokens cannot pile up).
    max_in_flight: int = Field(default=64, ge=1, le=10_000)
    max_bytes: int = Field(default=64 * 1024, ge=1024, le=4 * 1024 * 1024)

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secret(cls, data: Any) -> Any:
        if isinstance(data, dict):
            inline = [key for key in _INLINE_SECRETS if key in data]
            if inline:
                raise ValueError(
                    f"{inline[0]}: secrets are never written into the configuration; use "
                    "client_secret_file or client_secret_env (client_secret_basic) or "
                    "private_key_file (private_key_jwt)"
                )
        return data

    @field_validator("signing_alg")
    @classmethod
    def _alg(cls, value: str) -> str:
        if value not in ASSERTION_ALGORITHMS:
            hint = (
                " (RFC 9864 deprecates EdDSA: name the curve, Ed25519)" if value == "EdDSA" else ""
            )
            raise ValueError(f"signing_alg must be one of {sorted(ASSERTION_ALGORITHMS)}{hint}")
        return value

    @model_validator(mode="after")
    def _credentials(self) -> Introspection:
        secret_sources = [self.client_secret_file, self.client_secret_env]
        given = sum(source is not None for source in secret_sources)
        if self.auth == "client_secret_basic":
            if given != 1:
                raise ValueError(
                    "client_secret_basic needs exactly one of client_secret_file, client_secret_env"
                )
            if self.private_key_file is not None:
                raise ValueError("private_key_file is for auth: private_key_jwt")
        else:
            if self.private_key_file is None:
                raise ValueError("private_key_jwt needs private_key_file")
            if given:
                raise ValueError("client_secret_file/client_secret_env are for client_secret_basic")
        return self

    @model_validator(mode="after")
    def _bounds(self) -> Introspection:
        if self.cache_ttl > MAX_CACHE_TTL:
            raise ValueError(f"cache_ttl must be at most {MAX_CACHE_TTL.total_seconds():g}s")
        if self.high_risk_max_age > self.cache_ttl:
            raise ValueError("high_risk_max_age must be at most cache_ttl")
        if not timedelta(0) < self.timeout <= MAX_TIMEOUT:
            raise ValueError(f"timeout must be positive and at most {MAX_TIMEOUT.seconds}s")
        if not (self.opaque_tokens or self.high_risk_jwts):
            raise ValueError("enable opaque_tokens or high_risk_jwts, or remove introspection")
        return self
