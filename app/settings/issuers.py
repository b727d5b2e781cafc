"""Token issuers (OIDC providers): where keys come from and what tokens must carry."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import Field, model_validator

from app.durations import Duration
from app.settings.base import Algorithms, HttpsUrl, Model, jwks_uri_pins_keys
from app.settings.introspection import Introspection


class ClaimNames(Model):
    """Where this IdP puts groups and scopes (dotted paths reach into nested claims)."""

    groups: str = "groups"
    scopes: str = "scope"


class Jwks(Model):
    refresh_interval: Duration = timedelta(minutes=5)
    max_staleness: Duration = timedelta(hours=24)
    kid_miss_min_interval: Duration = timedelta(seconds=30)
    fetch_timeout: Duration = timedelta(seconds=5)
    max_bytes: int = Field(default=512 * 1024, ge=1024)

    @model_validator(mode="after")
    def _sane(self) -> Jwks:
        second = timedelta(seconds=1)
        if self.refresh_interval < second or self.kid_miss_min_interval < second:
            # Below a second, refreshes and kid-miss refetches would hammer the IdP.
            raise ValueError("refresh_interval and kid_miss_min_interval must be at least 1s")
        if self.max_staleness < self.refresh_interval:
            raise ValueError("max_staleness must be at least refresh_interval")
        if not timedelta(0) < self.fetch_timeout <= self.refresh_interval:
            raise ValueError("fetch_timeout must be positive and at most refresh_interval")
        return self


class Issuer(Model):
    issuer: HttpsUrl
    discovery: bool = True  # false when jwks_uri is given
    jwks_uri: HttpsUrl | None = None
    audiences: list[str] = Field(min_length=1)
    algorithms: Algorithms = Field(default_factory=lambda: ["RS256", "ES256"], min_length=1)
    max_token_lifetime: Duration = timedelta(minutes=15)
    leeway: Duration = timedelta(seconds=30)
    claims: ClaimNames = ClaimNames()
    jwks: Jwks = Jwks()
    # RFC 7662: opaque tokens, and JWTs on high-risk routes (docs/introspection.md).
    introspection: Introspection | None = None

    @model_validator(mode="before")
    @classmethod
    def _jwks_uri_pins_keys(cls, data: Any) -> Any:
        return jwks_uri_pins_keys(data, "discovery")

    @model_validator(mode="after")
    def _key_source(self) -> Issuer:
        if not self.discovery and self.jwks_uri is None:
            raise ValueError("set discovery: true or give jwks_uri")
        if self.max_token_lifetime <= timedelta(0):
            raise ValueError("max_token_lifetime must be positive")
        introspection = self.introspection
        if introspection is not None and introspection.endpoint is None and not self.discovery:
            # Without discovery there is no document to name the endpoint.
            raise ValueError("introspection.endpoint is required when discovery is off")
        return self


class Token(Model):
    """Where tokens are read from and how large they may be."""

    cookie: str | None = None
    max_bytes: int = Field(default=8192, ge=256, le=65536)
    # Verified tokens remembered (by SHA-256 digest, never the token) so that a repeated token
    # skips the signature check; exp/iat/nbf are checked again on every use, and a key change
    # drops the memory. 0 turns the cache off. About 2 KB per entry.
    cache_size: int = Field(default=10_000, ge=0, le=1_000_000)
