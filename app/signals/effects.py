"""What each event does: from a verified SET to the records the view applies (a pure function
of the SET, what the transmitter may speak about, and ``now``).

| event | effect | lifetime |
| --- | --- | --- |
| CAEP session-revoked, RISC sessions-revoked | tokens of the subject/session issued at or before the event refused, 401 ``session_revoked`` | until those tokens expire |
| RISC account-disabled, account-purged | same, 401 ``account_disabled`` | same |
| CAEP credential-change | same, 401 ``credential_changed`` | same |
| RISC account-credential-change-required | same, 401 ``credential_change_required`` | same |
| CAEP device-compliance-change | ``not-compliant``: requests with the device's evidence refused, 403 ``device_noncompliant``; ``compliant``: lifts it | ``device_state_ttl`` |
| CAEP assurance-level-change | recorded for policies (``signals.assurance``); a ``decrease`` voids the authentication claims of earlier tokens (step-up again) | until those tokens expire |
| CAEP token-claims-change | recorded for policies (``signals.claims``) | same |
| SSF verification, stream-updated, other types | acknowledged, no effect | - |

"Until those tokens expire" is the event's time plus the longest any token of the issuers the
transmitter speaks for may live (``max_token_lifetime``) plus twice their leeway: by then
every token the event could refuse has expired anyway. The event's time is its
``event_timestamp``, or the SET's ``iat`` without one, and never later than ``now`` (an event
dated in the future cannot refuse tokens issued after it was received).

Subjects (app/signals/subjects.py) become match keys (app/signals/records.py), each user,
session, email or application identifier in the namespace of the token issuers the transmitter
speaks for: an ``iss_sub`` or ``jwt_id`` of another issuer is refused (``access_denied``); an
``email`` or ``opaque`` identifier is looked for under each of them. A simple subject is the
user, except for device-compliance-change (the device) and for an ``opaque`` subject of
session-revoked, which is matched against both the token's ``sid`` and its ``sub`` (a simple
opaque subject does not say which it is, and refusing more is the safe side). A complex
subject's parts must all match (SSF §3.3.1); a part ztauthz cannot see in a request
(``tenant``, ``org_unit``, ``group``, other members, unusable formats) is a wildcard unless the
transmitter marks it critical (SSF §3.6: then the event is refused, ``invalid_request``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from app.reasons import Reason
from app.signals.errors import SetError, SetErrorCode
from app.signals.events import Event, EventType
from app.signals.records import Effect, Record
from app.signals.set_token import VerifiedSet
from app.signals.subjects import (
    Complex,
    Email,
    IssSub,
    JwtId,
    Opaque,
    Other,
    Simple,
    Subject,
    alternatives,
    parse_subject,
)

REVOCATIONS: Final = MappingProxyType(
    {
        EventType.SESSION_REVOKED: Reason.SESSION_REVOKED,
        EventType.SESSIONS_REVOKED: Reason.SESSION_REVOKED,
        EventType.ACCOUNT_DISABLED: Reason.ACCOUNT_DISABLED,
        EventType.ACCOUNT_PURGED: Reason.ACCOUNT_DISABLED,
        EventType.CREDENTIAL_CHANGE: Reason.CREDENTIAL_CHANGED,
        EventType.CREDENTIAL_CHANGE_REQUIRED: Reason.CREDENTIAL_CHANGE_REQUIRED,
    }
)
# Parts of a complex subject no request carries: wildcards unless critical.
_UNSEEN: Final = ("tenant", "org_unit", "group")
_DENIED = SetErrorCode.ACCESS_DENIED


@dataclass(frozen=True, slots=True)
class Scope:
    """What one transmitter may speak about, and how long its effects last."""

    name: str
    issuers: tuple[str, ...]  # token issuers whose users and sessions its events affect
    token_lifetime: float  # max_token_lifetime + 2 x leeway, the longest over ``issuers``
    device_ttl: float
    events: frozenset[EventType] | None = None  # None: every type
    critical: frozenset[str] = frozenset()  # from its SSF configuration metadata
    stream_id: str | None = None


def _part_keys(part: Simple, kind: str, scope: Scope) -> list[str]:
    """The match keys of one identifier used as a ``kind`` part (user, session, application,
    device); empty when no request could carry it."""
    keys: list[str] = []
    prefix = {"user": "u", "session": "s", "application": "c"}.get(kind)
    for alt in alternatives(part):
        if isinstance(alt, JwtId):
            _own(alt.iss, scope)
            keys.append(f"t|{alt.iss}|{alt.jti}")
        elif kind == "device":
            if isinstance(alt, IssSub):
                keys.append(f"d|{alt.sub}")
            elif isinstance(alt, Opaque):
                keys.append(f"d|{alt.id}")
            elif isinstance(alt, Other) and alt.format == "uri":
                keys.append(f"d|{alt.value}")
        elif isinstance(alt, IssSub) and prefix is not None:
            _own(alt.iss, scope)
            keys.append(f"{prefix}|{alt.iss}|{alt.sub}")
        elif isinstance(alt, Opaque) and prefix is not None:
            keys += [f"{prefix}|{iss}|{alt.id}" for iss in scope.issuers]
        elif isinstance(alt, Email) and kind == "user":
            keys += [f"e|{iss}|{alt.normalized}" for iss in scope.issuers]
    return list(dict.fromkeys(keys))


def _own(issuer: str, scope: Scope) -> None:
    if issuer not in scope.issuers:
        raise SetError(
            _DENIED, "the subject belongs to an issuer this transmitter may not speak for"
        )


def _parts(subject: Subject, event: EventType, scope: Scope) -> list[list[str]]:
    """The subject as groups of match keys, the group to index by first."""
    device_event = event is EventType.DEVICE_COMPLIANCE_CHANGE
    if not isinstance(subject, Complex):
        if device_event:
            groups = [_part_keys(subject, "device", scope)]
        elif event is EventType.SESSION_REVOKED and isinstance(subject, Opaque):
            # one group, either key: the session with that sid, or the user with that sub
            groups = [_part_keys(subject, "session", scope) + _part_keys(subject, "user", scope)]
        else:
            groups = [_part_keys(subject, "user", scope)]
        if not groups[0]:
            raise SetError(
                SetErrorCode.INVALID_REQUEST, "no identifier of the subject can be matched"
            )
        return groups
    critical = scope.critical
    for name in (*_UNSEEN, *subject.other):
        if name in critical and (name in subject.other or getattr(subject, name) is not None):
            raise SetError(
                SetErrorCode.INVALID_REQUEST, f"critical subject member {name!r} is not understood"
            )
    order = (
        ("device", "session", "user", "application")
        if device_event
        else ("session", "user", "application", "device")
    )
    groups = []
    for name in order:
        part = getattr(subject, name)
        if part is None:
            continue
        keys = _part_keys(part, name, scope)
        if keys:
            groups.append(keys)
        elif name in critical:
            raise SetError(
                SetErrorCode.INVALID_REQUEST, f"critical subject member {name!r} is not understood"
            )
    if not groups or (device_event and not groups[0][0].startswith("d|")):
        raise SetError(SetErrorCode.INVALID_REQUEST, "no identifier of the subject can be matched")
    return groups


def event_time(event: Event, verified: VerifiedSet, now: float) -> float:
    return min(event.at if event.at is not None else verified.iat, now)


def records_for(verified: VerifiedSet, scope: Scope, now: float) -> list[Record]:
    """The records ``verified`` leaves (empty for events without effect). Raises SetError
    (``access_denied``, ``invalid_request``) before anything is applied."""
    records: list[Record] = []
    for event in verified.events:
        if scope.events is not None and event.type not in scope.events:
            raise SetError(_DENIED, "this transmitter may not send this event type")
        subject = verified.subject if verified.subject is not None else parse_subject(event.subject)
        if event.type in (EventType.VERIFICATION, EventType.STREAM_UPDATED):
            _stream_subject(subject, scope)
            continue
        if event.type is EventType.OTHER:
            continue
        records += _event_records(event, subject, verified, scope, now)
    return records


def _stream_subject(subject: Subject, scope: Scope) -> None:
    """SSF §8.1.4.1, §8.1.5: the subject of a stream event is the stream, as an opaque id."""
    if not isinstance(subject, Opaque):
        raise SetError(SetErrorCode.INVALID_REQUEST, "a stream event's sub_id must be opaque")
    if scope.stream_id is not None and subject.id != scope.stream_id:
        raise SetError(SetErrorCode.INVALID_REQUEST, "the sub_id is not this stream's id")


def _event_records(
    event: Event, subject: Subject, verified: VerifiedSet, scope: Scope, now: float
) -> Iterable[Record]:
    groups = _parts(subject, event.type, scope)
    at = event_time(event, verified, now)
    common = {
        "at": at,
        "event": event.type.value,
        "origin": scope.name,
        "id": verified.jti,
        "written": now,
        "also": tuple(tuple(g) for g in groups[1:]),
    }
    if event.type is EventType.DEVICE_COMPLIANCE_CHANGE:
        until = at + scope.device_ttl
        effect, reason = Effect.DEVICE, None if event.compliant else Reason.DEVICE_NONCOMPLIANT
        extra: dict[str, object] = {"compliant": event.compliant}
    else:
        until = at + scope.token_lifetime
        extra = {}
        if event.type in REVOCATIONS:
            effect, reason = Effect.REVOKE, REVOCATIONS[event.type]
        elif event.type is EventType.ASSURANCE_LEVEL_CHANGE:
            effect, reason = Effect.ASSURANCE, None
            extra["details"] = MappingProxyType(
                {
                    "namespace": event.namespace,
                    "current_level": event.current_level,
                    "previous_level": event.previous_level,
                    "change_direction": event.change_direction,
                }
            )
        else:
            effect, reason = Effect.CLAIMS, None
            extra["details"] = MappingProxyType(dict(event.claims))
    if until <= now:
        return []  # nothing it could affect is still valid
    return [
        Record(effect=effect, key=key, until=until, reason=reason, **common, **extra)  # type: ignore[arg-type]
        for key in groups[0]
    ]
