"""The signed identity assertion ztauthz hands the upstream on every allow (off by default).

One JWT header carrying who was allowed and on what evidence, signed with a key only ztauthz
holds; the upstream verifies it against the JWKS the admin listener serves. The keys live in
files (a PEM file, or a directory of them such as a mounted Kubernetes secret), never in this
configuration. See docs/identity-assertion.md.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from app.durations import Duration
from app.settings.base import Model

# The default header. ``x-auth-*`` is the family every shipped Envoy, Kubernetes, compose and
# Istio configuration already lets ztauthz set on allow and strips from client requests, so the
# assertion passes through them (and cannot be smuggled past them) with no change.
ASSERTION_HEADER = "x-auth-assertion"

_HEADER_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,126}")
# Headers that carry something else already: the client's credentials, Envoy's own controls.
_RESERVED_HEADERS = frozenset(
    {
        "authorization",
        "cookie",
        "host",
        "dpop",
        "x-forwarded-for",
        "x-forwarded-client-cert",
        "x-request-id",
    }
)


class AssertionRoute(Model):
    """The audience (``aud``) for requests to some hosts and paths: the first route that
    matches names the upstream; ``assertion.audience`` covers every other request.

    ``hosts`` are matched like policy hosts (``*.example.com`` is a single-label wildcard; no
    port); empty means any host. ``path_prefixes`` match whole segments (``/billing`` matches
    ``/billing`` and ``/billing/x``, not ``/billingx``); empty means any path.
    """

    audience: str = Field(min_length=1, max_length=1024)
    hosts: list[str] = Field(default_factory=list)
    path_prefixes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _narrows(self) -> AssertionRoute:
        if not self.hosts and not self.path_prefixes:
            raise ValueError("a route needs hosts or path_prefixes (else use assertion.audience)")
        return self


class AssertionSettings(Model):
    """``assertion:``. With ``enabled: true``, ``issuer``, ``audience`` and ``keys`` are
    required.

    ``keys`` is a PEM private key file or a directory of them (every visible file is a key; a
    Kubernetes secret's ``..data`` links are followed). A key's ``kid`` is its file name without
    the extension. The newest key (the most recently written file; among files written together,
    the greatest name) that has been published for ``signing_delay`` signs; every key is
    published. Files are re-read when they change (checked every ``reload_interval``).
    """

    enabled: bool = False
    header: str = ASSERTION_HEADER
    issuer: str | None = Field(default=None, min_length=1, max_length=1024)
    audience: str | None = Field(default=None, min_length=1, max_length=1024)
    routes: list[AssertionRoute] = Field(default_factory=list)
    lifetime: Duration = timedelta(seconds=60)
    keys: Path | None = None
    reload_interval: Duration = timedelta(seconds=10)
    # A new key signs only once it has been published this long, so that verifiers holding a
    # cached JWKS (up to jwks_max_age old) have fetched it first: at least jwks_max_age.
    signing_delay: Duration = timedelta(minutes=5)
    jwks_max_age: Duration = timedelta(minutes=5)
    # Reuse a signed assertion for the same principal, audience, evidence and decision while
    # more than half its lifetime is left (see docs/identity-assertion.md); 0 signs per request.
    cache_size: int = Field(default=10_000, ge=0, le=1_000_000)

    @field_validator("header")
    @classmethod
    def _header(cls, value: str) -> str:
        if _HEADER_NAME.fullmatch(value) is None:
            raise ValueError("expected a lower-case header name (letters, digits, '-')")
        if value in _RESERVED_HEADERS or value.startswith(("x-envoy-", "x-ztauthz-client-")):
            raise ValueError(f"{value} carries something else; choose another header")
        return value

    @field_validator("lifetime")
    @classmethod
    def _lifetime(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=5) <= value <= timedelta(hours=1):
            raise ValueError("must be between 5s and 1h")
        if value.total_seconds() != int(value.total_seconds()):
            raise ValueError("must be whole seconds (exp and iat are whole seconds)")
        return value

    @field_validator("reload_interval")
    @classmethod
    def _interval(cls, value: timedelta) -> timedelta:
        if not timedelta(milliseconds=100) <= value <= timedelta(hours=1):
            raise ValueError("must be between 100ms and 1h")
        return value

    @field_validator("signing_delay", "jwks_max_age")
    @classmethod
    def _bounded(cls, value: timedelta) -> timedelta:
        if value > timedelta(days=1):
            raise ValueError("must be at most 1d")
        return value

    @model_validator(mode="after")
    def _complete(self) -> AssertionSettings:
        if self.enabled:
            missing = [
                name for name in ("issuer", "audience", "keys") if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(f"enabled: true needs {', '.join(missing)}")
        if self.signing_delay < self.jwks_max_age:
            # A verifier may use its cached JWKS that long (and PyJWT's client, for one, does not
            # refetch sooner than 30 s on an unknown kid): a key signing earlier would fail it.
            raise ValueError("signing_delay must be at least jwks_max_age")
        if self.header.startswith("x-auth-") and self.header != ASSERTION_HEADER:
            # The other x-auth-* names are the plain identity headers (app/transport/render.py).
            raise ValueError(f"header: x-auth-* names other than {ASSERTION_HEADER} are reserved")
        return self
