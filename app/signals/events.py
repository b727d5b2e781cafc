"""The security events ztauthz understands: CAEP 1.0, RISC 1.0 and SSF 1.0 event types.

``parse_event(uri, payload)`` turns one member of a SET's ``events`` claim (RFC 8417 §2.2)
into a typed, frozen event, or raises ``EventError`` when the payload does not conform to the
event's definition (RFC 8935 §2.4 ``invalid_request``). Event types outside ``KNOWN`` parse
to ``Unhandled``: they are acknowledged and change nothing (SSF §4.2.3: a receiver ignores
what it does not understand).

CAEP's optional claims (CAEP §2): ``event_timestamp`` (when the event happened, seconds since
the epoch), ``initiating_entity`` (``admin``, ``user``, ``policy``, ``system``), and the
localized ``reason_admin`` / ``reason_user`` messages, which are never used to decide and
never logged (they may carry personal data).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

CAEP: Final = "https://schemas.openid.net/secevent/caep/event-type/"
RISC: Final = "https://schemas.openid.net/secevent/risc/event-type/"
SSF: Final = "https://schemas.openid.net/secevent/ssf/event-type/"

_MAX_CLAIMS = 64  # members of a token-claims-change ``claims`` object
_MAX_EPOCH = 2**53
_NO_CLAIMS: Mapping[str, Any] = MappingProxyType({})


class EventError(ValueError):
    """The event payload does not conform to its definition (messages hold no values)."""


class EventType(StrEnum):
    """Short, stable names of the event types that ztauthz acts on: metric label values and
    the ``events`` a transmitter may be limited to in the configuration."""

    SESSION_REVOKED = "session-revoked"  # CAEP
    CREDENTIAL_CHANGE = "credential-change"  # CAEP
    DEVICE_COMPLIANCE_CHANGE = "device-compliance-change"  # CAEP
    ASSURANCE_LEVEL_CHANGE = "assurance-level-change"  # CAEP
    TOKEN_CLAIMS_CHANGE = "token-claims-change"  # noqa: S105 - CAEP, an event type
    ACCOUNT_DISABLED = "account-disabled"  # RISC
    ACCOUNT_PURGED = "account-purged"  # RISC
    SESSIONS_REVOKED = "sessions-revoked"  # RISC
    CREDENTIAL_CHANGE_REQUIRED = "account-credential-change-required"  # RISC
    VERIFICATION = "verification"  # SSF
    STREAM_UPDATED = "stream-updated"  # SSF
    OTHER = "other"  # any other type: acknowledged, no effect


URIS: Final[Mapping[str, EventType]] = MappingProxyType(
    {
        CAEP + "session-revoked": EventType.SESSION_REVOKED,
        CAEP + "credential-change": EventType.CREDENTIAL_CHANGE,
        CAEP + "device-compliance-change": EventType.DEVICE_COMPLIANCE_CHANGE,
        CAEP + "assurance-level-change": EventType.ASSURANCE_LEVEL_CHANGE,
        CAEP + "token-claims-change": EventType.TOKEN_CLAIMS_CHANGE,
        RISC + "account-disabled": EventType.ACCOUNT_DISABLED,
        RISC + "account-purged": EventType.ACCOUNT_PURGED,
        RISC + "sessions-revoked": EventType.SESSIONS_REVOKED,
        RISC + "account-credential-change-required": EventType.CREDENTIAL_CHANGE_REQUIRED,
        SSF + "verification": EventType.VERIFICATION,
        SSF + "stream-updated": EventType.STREAM_UPDATED,
    }
)
URI_OF: Final[Mapping[EventType, str]] = MappingProxyType({t: u for u, t in URIS.items()})

INITIATORS: Final = frozenset({"admin", "user", "policy", "system"})
CHANGE_TYPES: Final = frozenset({"create", "revoke", "update", "delete"})
COMPLIANCE: Final = frozenset({"compliant", "not-compliant"})
DIRECTIONS: Final = frozenset({"increase", "decrease"})
STREAM_STATUSES: Final = frozenset({"enabled", "paused", "disabled"})


@dataclass(frozen=True, slots=True)
class Event:
    """One event of a SET. ``at`` is its ``event_timestamp`` (None when not given: the SET's
    ``iat`` stands in, see app/signals/effects.py). ``subject`` is the event-level ``subject``
    member older CAEP and RISC transmitters use (SSF §3.1.1), unparsed; the SET's top-level
    ``sub_id`` takes precedence."""

    type: EventType
    uri: str
    at: float | None = None
    initiating_entity: str | None = None
    subject: Any = None
    # device-compliance-change
    compliant: bool | None = None
    # credential-change
    credential_type: str | None = None
    change_type: str | None = None
    # assurance-level-change
    namespace: str | None = None
    current_level: str | None = None
    previous_level: str | None = None
    change_direction: str | None = None
    # token-claims-change
    claims: Mapping[str, Any] = field(default_factory=lambda: _NO_CLAIMS)
    # verification / stream-updated
    state: str | None = None
    status: str | None = None


def _text(payload: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    value = payload.get(name)
    if value is None:
        if required:
            raise EventError(f"the event lacks {name!r}")
        return None
    if not isinstance(value, str) or not value or len(value) > 1024:
        raise EventError(f"{name!r} must be a non-empty string")
    return value


def _one_of(
    payload: Mapping[str, Any], name: str, allowed: frozenset[str], required: bool
) -> str | None:
    value = _text(payload, name, required=required)
    if value is not None and value not in allowed:
        raise EventError(f"{name!r} must be one of {sorted(allowed)}")
    return value


def _timestamp(payload: Mapping[str, Any]) -> float | None:
    value = payload.get("event_timestamp")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EventError("'event_timestamp' must be a number")
    if not 0 <= value < _MAX_EPOCH or math.isnan(value):
        raise EventError("'event_timestamp' is out of range")
    return float(value)


def parse_event(uri: str, payload: Any) -> Event:
    """One ``events`` member: its type URI and its payload object."""
    if not isinstance(payload, dict):
        raise EventError("an event payload must be a JSON object")
    kind = URIS.get(uri, EventType.OTHER)
    common: dict[str, Any] = {
        "type": kind,
        "uri": uri,
        "at": _timestamp(payload),
        "initiating_entity": _one_of(payload, "initiating_entity", INITIATORS, False),
        "subject": payload.get("subject"),
    }
    if kind is EventType.DEVICE_COMPLIANCE_CHANGE:
        current = _one_of(payload, "current_status", COMPLIANCE, True)
        _one_of(payload, "previous_status", COMPLIANCE, True)
        return Event(**common, compliant=current == "compliant")
    if kind is EventType.CREDENTIAL_CHANGE:
        return Event(
            **common,
            credential_type=_text(payload, "credential_type", required=True),
            change_type=_one_of(payload, "change_type", CHANGE_TYPES, True),
        )
    if kind is EventType.ASSURANCE_LEVEL_CHANGE:
        return Event(
            **common,
            namespace=_text(payload, "namespace", required=True),
            current_level=_text(payload, "current_level", required=True),
            previous_level=_text(payload, "previous_level"),
            change_direction=_one_of(payload, "change_direction", DIRECTIONS, False),
        )
    if kind is EventType.TOKEN_CLAIMS_CHANGE:
        claims = payload.get("claims")
        if not isinstance(claims, dict) or not 0 < len(claims) <= _MAX_CLAIMS:
            raise EventError(f"'claims' must be an object of 1 to {_MAX_CLAIMS} claims")
        return Event(**common, claims=MappingProxyType(dict(claims)))
    if kind is EventType.VERIFICATION:
        return Event(**common, state=_text(payload, "state"))
    if kind is EventType.STREAM_UPDATED:
        return Event(**common, status=_one_of(payload, "status", STREAM_STATUSES, True))
    return Event(**common)
