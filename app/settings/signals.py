"""Continuous access evaluation: the security event receiver, its transmitters, the kill switch.

``signals.receiver`` is where transmitters push SETs (RFC 8935): on its own listener
(``listener: own``, the default, port 9200) so that only this port is exposed to the
transmitters, or on the admin listener (``listener: admin``). ``signals.transmitters`` lists
who may send events and about whom; ``signals.admin`` turns on the operator's kill switch on
the admin listener. See docs/continuous-access-evaluation.md.

Secrets (push and poll bearer tokens, the admin token) are never configuration values that
could be printed: each is read from a file (``token_file``, e.g. a mounted Kubernetes secret),
or for the push token also given as ``token`` through the environment
(``ZTAUTHZ_SIGNALS__TRANSMITTERS='[{..., "push": {"token": "..."}}]'``), kept as a SecretStr.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from app.durations import Duration
from app.settings.base import Algorithms, HttpsUrl, Model, jwks_uri_pins_keys
from app.settings.issuers import Jwks

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
# The event types a transmitter may be limited to (app/signals/events.py EventType values).
EVENT_NAMES = frozenset(
    {
        "session-revoked",
        "credential-change",
        "device-compliance-change",
        "assurance-level-change",
        "token-claims-change",
        "account-disabled",
        "account-purged",
        "sessions-revoked",
        "account-credential-change-required",
        "verification",
        "stream-updated",
        "other",
    }
)


class Secret(Model):
    """A bearer token from a file (read at each use, so it can be rotated in place) or, for
    push tokens, from the configuration itself (given through the environment)."""

    token_file: Path | None = None
    token: SecretStr | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Secret:
        if (self.token_file is None) == (self.token is None):
            raise ValueError("give exactly one of token_file or token")
        if self.token is not None and len(self.token.get_secret_value()) < 16:
            raise ValueError("token must be at least 16 characters")
        return self


class PushSettings(Secret):
    """RFC 8935 push: the transmitter POSTs SETs with ``Authorization: Bearer <token>``."""


class PollSettings(Secret):
    """RFC 8936 poll: ztauthz fetches SETs from the transmitter's ``endpoint`` (SSF §6.1.2:
    the stream's ``endpoint_url``), authenticating with ``Authorization: Bearer <token>``."""

    endpoint: HttpsUrl
    # How long to wait between polls when the transmitter had nothing more to give.
    interval: Duration = timedelta(seconds=5)
    max_events: int = Field(default=50, ge=1, le=1000)
    timeout: Duration = timedelta(seconds=10)

    @model_validator(mode="after")
    def _times(self) -> PollSettings:
        if not timedelta(milliseconds=100) <= self.interval <= timedelta(hours=1):
            raise ValueError("interval must be between 100ms and 1h")
        if not timedelta(0) < self.timeout <= timedelta(minutes=1):
            raise ValueError("timeout must be positive and at most 1m")
        return self


class Transmitter(Model):
    """One SSF transmitter (an IdP, an MDM) and the stream it delivers on.

    ``issuers`` are the token issuers whose users and sessions its events may affect (default:
    its own ``issuer`` when that is a configured token issuer); an event about a subject of
    another issuer is refused (``access_denied``). Device events are accepted from every
    transmitter unless ``events`` leaves them out.
    """

    name: str  # the stream's name: the push path is <path_prefix>/<name>
    issuer: HttpsUrl  # the SETs' "iss" (SSF §4.1.6)
    audiences: list[str] = Field(min_length=1)  # accepted "aud" values: this receiver
    # Keys: the jwks_uri of its SSF configuration metadata (SSF §7), or a pinned jwks_uri.
    configuration: bool = True
    jwks_uri: HttpsUrl | None = None
    algorithms: Algorithms = Field(default_factory=lambda: ["RS256", "ES256"], min_length=1)
    jwks: Jwks = Jwks()
    issuers: list[str] | None = None
    # The event types accepted from it (short names, app/signals/events.py); None: all.
    events: list[str] | None = None
    stream_id: str | None = Field(default=None, min_length=1, max_length=256)
    leeway: Duration = timedelta(seconds=30)
    push: PushSettings | None = None
    poll: PollSettings | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError("use 1-63 lower-case letters, digits, '-' or '_'")
        return value

    @field_validator("events")
    @classmethod
    def _events(cls, value: list[str] | None) -> list[str] | None:
        bad = sorted(set(value or ()) - EVENT_NAMES)
        if bad:
            raise ValueError(f"unknown event type(s) {bad}; known: {sorted(EVENT_NAMES)}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _jwks_uri_pins_keys(cls, data: Any) -> Any:
        return jwks_uri_pins_keys(data, "configuration")

    @model_validator(mode="after")
    def _delivery(self) -> Transmitter:
        if not self.configuration and self.jwks_uri is None:
            raise ValueError("set configuration: true or give jwks_uri")
        if self.push is None and self.poll is None:
            raise ValueError("give push (RFC 8935) or poll (RFC 8936) delivery, or both")
        if self.leeway > timedelta(minutes=5):
            raise ValueError("leeway must be at most 5m")
        return self


class ReceiverSettings(Model):
    """Where transmitters push. ``own``: a listener of its own (expose this port to the
    transmitters only, through TLS); ``admin``: on the admin listener."""

    listener: Literal["own", "admin"] = "own"
    host: str = "127.0.0.1"
    port: int = Field(default=9200, ge=0, le=65535)
    path_prefix: str = "/ssf"
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=1024 * 1024)

    @field_validator("path_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value.startswith("/") or value.endswith("/") or "?" in value:
            raise ValueError("must start with '/', not end with '/', and hold no query")
        return value


class AdminApiSettings(Model):
    """The operator's kill switch (``ztauthz revoke``) on the admin listener; off without a
    token. The token file holds one line: the bearer token (at least 16 characters)."""

    token_file: Path | None = None


class SignalsSettings(Model):
    receiver: ReceiverSettings = ReceiverSettings()
    transmitters: list[Transmitter] = Field(default_factory=list)
    admin: AdminApiSettings = AdminApiSettings()
    # How long a device stays refused after a not-compliant event (or an operator's device
    # revocation) when no later compliant event comes.
    device_state_ttl: Duration = timedelta(days=7)
    # The shared store unreachable for longer than this: /readyz reports not ready (the last
    # known revocations keep being enforced meanwhile).
    store_grace: Duration = timedelta(seconds=30)
    # Every replica re-reads every revocation this often (heals a missed change).
    resync_interval: Duration = timedelta(seconds=30)

    @property
    def own_listener(self) -> bool:
        """Whether the receiver listens on a port of its own (it exists with a transmitter)."""
        return self.receiver.listener == "own" and bool(self.transmitters)

    @field_validator("transmitters")
    @classmethod
    def _unique(cls, value: list[Transmitter]) -> list[Transmitter]:
        names = [t.name for t in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"transmitter name listed more than once: {dupes}")
        return value

    @model_validator(mode="after")
    def _times(self) -> SignalsSettings:
        if not timedelta(minutes=1) <= self.device_state_ttl <= timedelta(days=366):
            raise ValueError("device_state_ttl must be between 1m and 366d")
        if not timedelta(seconds=1) <= self.store_grace <= timedelta(hours=1):
            raise ValueError("store_grace must be between 1s and 1h")
        if not timedelta(seconds=1) <= self.resync_interval <= timedelta(hours=1):
            raise ValueError("resync_interval must be between 1s and 1h")
        return self
