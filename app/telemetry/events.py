"""Events: discrete changes, each a JSON log line with an ``event`` name, a span event on the
current span (when one is recording) and an increment of ``ztauthz_events_total{event}``.

Call ``Events.emit`` from anywhere that holds the runtime's telemetry::

    telemetry.events.emit(Event.POLICIES_RELOADED, policy_version=version, rules=count)

Field values are scalars or tuples of strings. A field named ``subject`` is recorded the way
the configuration asks (as is, or as its keyed hash). Never pass a token, cookie or secret.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from enum import StrEnum

from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from app.telemetry.logging import safe_extra
from app.telemetry.metrics import Metrics
from app.telemetry.subject import SubjectView

FieldValue = str | int | float | bool | tuple[str, ...] | None


class Event(StrEnum):
    """The closed set of event names (they are metric label values)."""

    CONFIG_LOADED = "config_loaded"
    POLICIES_RELOADED = "policies_reloaded"
    POLICIES_REJECTED = "policies_rejected"
    KEYS_ROTATED = "keys_rotated"
    KEY_REFRESH_FAILED = "key_refresh_failed"
    GRANT_ACTIVE = "grant_active"
    GRANT_EXPIRED = "grant_expired"
    ASSERTION_KEYS_RELOADED = "assertion_keys_reloaded"
    ASSERTION_KEYS_REJECTED = "assertion_keys_rejected"
    ASSERTION_SIGNING_KEY_CHANGED = "assertion_signing_key_changed"
    STORE_UNAVAILABLE = "store_unavailable"
    STORE_RECOVERED = "store_recovered"
    # continuous access evaluation (app/signals/)
    SIGNAL_APPLIED = "signal_applied"
    SIGNAL_REJECTED = "signal_rejected"
    ACCESS_REVOKED = "access_revoked"
    STREAM_VERIFIED = "stream_verified"
    STREAM_UPDATED = "stream_updated"
    SIGNALS_STORE_UNREACHABLE = "signals_store_unreachable"
    SIGNALS_STORE_RECOVERED = "signals_store_recovered"
    INTROSPECTION_FAILING = "introspection_failing"
    INTROSPECTION_RECOVERED = "introspection_recovered"


_WARNINGS = frozenset(
    {
        Event.POLICIES_REJECTED,
        Event.KEY_REFRESH_FAILED,
        Event.ASSERTION_KEYS_REJECTED,
        Event.STORE_UNAVAILABLE,
        Event.SIGNAL_REJECTED,
        Event.ACCESS_REVOKED,
        Event.SIGNALS_STORE_UNREACHABLE,
        Event.INTROSPECTION_FAILING,
    }
)
_MESSAGES: Mapping[Event, str] = {
    Event.CONFIG_LOADED: "configuration loaded",
    Event.POLICIES_RELOADED: "policies reloaded",
    Event.POLICIES_REJECTED: "policies rejected; the previous policies stay in force",
    Event.KEYS_ROTATED: "issuer signing keys rotated",
    Event.KEY_REFRESH_FAILED: "issuer key refresh failed; keeping the last good keys",
    Event.GRANT_ACTIVE: "access grant became active",
    Event.GRANT_EXPIRED: "access grant expired",
    Event.ASSERTION_KEYS_RELOADED: "assertion signing keys reloaded",
    Event.ASSERTION_KEYS_REJECTED: "assertion signing keys rejected; the keys in force stay",
    Event.ASSERTION_SIGNING_KEY_CHANGED: "assertion signing key changed",
    Event.STORE_UNAVAILABLE: "shared store unavailable; checks that need it are refused",
    Event.STORE_RECOVERED: "shared store available again",
    Event.SIGNAL_APPLIED: "security event applied",
    Event.SIGNAL_REJECTED: "security event refused; nothing changed",
    Event.ACCESS_REVOKED: "access revoked by an operator (kill switch)",
    Event.STREAM_VERIFIED: "security event stream verified by its transmitter",
    Event.STREAM_UPDATED: "security event stream status changed by its transmitter",
    Event.SIGNALS_STORE_UNREACHABLE: "shared store unreachable; known revocations stay enforced",
    Event.SIGNALS_STORE_RECOVERED: "shared store reachable again",
    Event.INTROSPECTION_FAILING: "token introspection is failing; opaque tokens are refused (503)",
    Event.INTROSPECTION_RECOVERED: "token introspection answers again",
}
# Policy reloads are also counted by outcome in their own metric.
_RELOAD_OUTCOME: Mapping[Event, str] = {
    Event.POLICIES_RELOADED: "success",
    Event.POLICIES_REJECTED: "failure",
}


class Events:
    def __init__(
        self,
        metrics: Metrics,
        subject: SubjectView,
        logger: logging.Logger | None = None,
    ) -> None:
        self._metrics = metrics
        self._subject = subject
        self._log = logger if logger is not None else logging.getLogger("ztauthz.events")
        for event in Event:
            metrics.events.labels(event.value)  # explicit zeros for every event name

    def emit(self, event: Event | str, /, **fields: FieldValue) -> None:
        """Record one event. Unknown names raise ValueError (the set is closed)."""
        name = Event(event)
        if isinstance(fields.get("subject"), str):
            fields["subject"] = self._subject(str(fields["subject"]))
        self._metrics.event(name.value)
        outcome = _RELOAD_OUTCOME.get(name)
        if outcome is not None:
            self._metrics.policy_reloads.labels(outcome).inc()
        span = trace.get_current_span()
        if span.is_recording():
            attributes: dict[str, AttributeValue] = {
                f"ztauthz.{key}": value for key, value in fields.items() if value is not None
            }
            span.add_event(f"ztauthz.{name.value}", attributes)
        level = logging.WARNING if name in _WARNINGS else logging.INFO
        self._log.log(level, _MESSAGES[name], extra={"event": name.value, **safe_extra(fields)})
