"""Revocation records: what an applied event leaves behind, in every replica's view and in the
shared store.

A record says "from ``at`` on, for whatever matches ``key`` (and every group in ``also``), this
holds": tokens issued at or before ``at`` are refused (``REVOKE``), a device is or is not
compliant (``DEVICE``), the assurance level changed (``ASSURANCE``), claims changed
(``CLAIMS``). It lasts until ``until`` (epoch seconds), when nothing it could affect is valid
any more (app/signals/effects.py says how long for each event).

Match keys name one identifier in one namespace, issuer first so that two identity providers'
subjects never meet:

- ``u|<iss>|<sub>``: a user (a token's ``sub``);
- ``s|<iss>|<sid>``: a session (a token's ``sid`` claim);
- ``e|<iss>|<email>``: a user by email (a token's ``email`` claim, lower-cased);
- ``t|<iss>|<jti>``: one token (its ``jti``);
- ``c|<iss>|<client_id>``: an application (a token's ``client_id`` or ``azp``);
- ``d|<device id>``: a device (the device evidence's id, app/evidence/).

In the store a record is one JSON object (``encode``); ``decode`` reads it back and refuses
anything malformed (the store is shared: what another process wrote is checked, not trusted).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

import orjson

from app.reasons import Reason

NAMESPACE: Final = "revocation"
MAX_KEY = 2200  # an issuer URL and an identifier, each bounded (app/signals/subjects.py)
_EMPTY: Mapping[str, Any] = MappingProxyType({})
_MAX_EPOCH = 2**53


class Effect(StrEnum):
    REVOKE = "revoke"
    DEVICE = "device"
    ASSURANCE = "assurance"
    CLAIMS = "claims"


# The reasons a record may carry (every other reason in a stored record is refused).
REVOCATION_REASONS: Final = frozenset(
    {
        Reason.SESSION_REVOKED,
        Reason.ACCOUNT_DISABLED,
        Reason.CREDENTIAL_CHANGED,
        Reason.CREDENTIAL_CHANGE_REQUIRED,
        Reason.ACCESS_REVOKED,
    }
)
DEVICE_REASONS: Final = frozenset({Reason.DEVICE_NONCOMPLIANT, Reason.DEVICE_REVOKED})


class RecordError(ValueError):
    """A stored record that cannot be read (never applied)."""


@dataclass(frozen=True, slots=True)
class Record:
    effect: Effect
    key: str  # the match key the view indexes the record under
    at: float  # the event's time: the cutoff for REVOKE, the order for the others
    until: float  # when the record stops mattering (epoch seconds)
    event: str  # the event type (app/signals/events.py EventType) or "operator"
    origin: str  # the transmitter's name, or "admin" for the kill switch
    id: str  # the SET's jti (or the operator action's id): one event, one id
    written: float  # when the receiving replica applied it (propagation delay)
    also: tuple[tuple[str, ...], ...] = ()  # each group: one of these keys must match too
    reason: Reason | None = None  # REVOKE and not-compliant DEVICE records: the refusal
    compliant: bool | None = None  # DEVICE
    details: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)  # ASSURANCE, CLAIMS

    @property
    def store_key(self) -> str:
        """The record's key in the store: one per (event, match key, effect)."""
        raw = "\x1f".join((self.origin, self.id, self.effect.value, self.key))
        return hashlib.sha256(raw.encode()).hexdigest()

    @property
    def operator(self) -> bool:
        return self.origin == "admin"


def encode(record: Record) -> bytes:
    return orjson.dumps(
        {
            "v": 1,
            "effect": record.effect.value,
            "key": record.key,
            "at": record.at,
            "until": record.until,
            "event": record.event,
            "origin": record.origin,
            "id": record.id,
            "written": record.written,
            "also": [list(group) for group in record.also],
            "reason": None if record.reason is None else record.reason.value,
            "compliant": record.compliant,
            "details": dict(record.details),
        }
    )


def _time(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise RecordError(f"{name} is not a number")
    if not 0 <= value < _MAX_EPOCH:
        raise RecordError(f"{name} is out of range")
    return float(value)


def _text(value: Any, name: str, limit: int = 256) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise RecordError(f"{name} is not a string of 1 to {limit} characters")
    return value


def _key(value: Any) -> str:
    key = _text(value, "key", MAX_KEY)
    if key[:2] not in ("u|", "s|", "e|", "t|", "c|", "d|"):
        raise RecordError("key has no known namespace")
    return key


def decode(raw: bytes) -> Record:
    """Read a stored record back; RecordError for anything that is not one."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise RecordError("not JSON") from None
    if not isinstance(data, dict) or data.get("v") != 1:
        raise RecordError("not a version 1 record")
    try:
        effect = Effect(str(data.get("effect")))
    except ValueError:
        raise RecordError("unknown effect") from None
    also = data.get("also", [])
    if not isinstance(also, list) or len(also) > 8:
        raise RecordError("also is not a list")
    groups = []
    for group in also:
        if not isinstance(group, list) or not 0 < len(group) <= 64:
            raise RecordError("an also group is not a list of keys")
        groups.append(tuple(_key(k) for k in group))
    reason: Reason | None = None
    if data.get("reason") is not None:
        try:
            reason = Reason(data["reason"])
        except ValueError:
            raise RecordError("unknown reason") from None
    compliant = data.get("compliant")
    if compliant is not None and not isinstance(compliant, bool):
        raise RecordError("compliant is not a boolean")
    details = data.get("details", {})
    if not isinstance(details, dict):
        raise RecordError("details is not an object")
    if effect is Effect.REVOKE and reason not in REVOCATION_REASONS:
        raise RecordError("a revocation without a revocation reason")
    if effect is Effect.DEVICE:
        if compliant is None or (not compliant and reason not in DEVICE_REASONS):
            raise RecordError("a device record without its state")
        if not _key(data.get("key")).startswith("d|"):
            raise RecordError("a device record not about a device")
    return Record(
        effect=effect,
        key=_key(data.get("key")),
        at=_time(data.get("at"), "at"),
        until=_time(data.get("until"), "until"),
        event=_text(data.get("event"), "event", 64),
        origin=_text(data.get("origin"), "origin", 64),
        id=_text(data.get("id"), "id"),
        written=_time(data.get("written"), "written"),
        also=tuple(groups),
        reason=reason,
        compliant=compliant,
        details=MappingProxyType(details),
    )
