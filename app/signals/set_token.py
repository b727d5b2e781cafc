"""Security Event Tokens (RFC 8417) as SSF 1.0 profiles them: from the bytes a transmitter
sent to a ``VerifiedSet``, or a ``SetError`` with its RFC 8935 §2.4 code.

The order is fixed, and nothing is trusted before the signature:

1. the body is a compact JWS (RFC 7515 §7.1) of ASCII characters (``invalid_request``),
   read by the same reader as access tokens (app/identity/jws.py: no ``crit``, no ``b64``);
2. ``typ`` is ``secevent+jwt`` (RFC 8417 §2.3, SSF §4.1.1: explicit typing, so that no other
   JWT, an access token above all, passes as a SET) (``invalid_request``);
3. ``alg`` is signed (never ``none``: an unsigned SET is refused as ``invalid_request``, there
   is no key to call invalid) and in the transmitter's allowlist (``invalid_key``);
4. the key for (``kid``, ``alg``) from the transmitter's JWKS (``invalid_key`` when unknown;
   ``SetUnavailable``, answered 503, when no keys could be loaded at all), header-supplied
   keys (``jwk``, ``jku``, ``x5c``) never used; the signature (``invalid_key``);
5. the claims: ``iss`` is the transmitter's (SSF §4.1.6, ``invalid_issuer``), ``aud`` names
   this receiver (RFC 8417 §2.2, SSF §4.1.8, ``invalid_audience``), ``jti`` and ``iat`` are
   present (RFC 8417 §2.2) and ``iat`` is not in the future beyond the leeway, ``sub`` and
   ``exp`` are absent (SSF §4.1.2, §4.1.7), ``events`` holds at least one event, each
   conforming to its definition, and the subject (``sub_id``, SSF §3.1, or the event's own
   ``subject`` member from older transmitters) parses (all ``invalid_request``).

Whether this transmitter may send these events about these subjects (``access_denied``) and
whether the ``jti`` was seen before are decided after, by app/signals/intake.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.identity.errors import TokenError
from app.identity.jwks import KeySource
from app.identity.jws import Compact, parse_compact, verify_signature
from app.reasons import Reason
from app.settings.signals import Transmitter
from app.signals.errors import SetError, SetErrorCode, SetUnavailable
from app.signals.events import Event, EventError, parse_event
from app.signals.subjects import Subject, SubjectError, parse_subject

SET_TYPES = frozenset({"secevent+jwt", "application/secevent+jwt"})  # RFC 8417 §2.3
MAX_EVENTS = 8
MAX_JTI = 256
_MAX_EPOCH = 2**53
_REQUEST = SetErrorCode.INVALID_REQUEST


@dataclass(frozen=True, slots=True)
class VerifiedSet:
    """A SET whose signature and claims were checked. ``subject`` is its ``sub_id`` (None when
    only the events carry their own ``subject``)."""

    issuer: str
    jti: str
    iat: float
    events: tuple[Event, ...]
    subject: Subject | None = None
    txn: str | None = None


def _refuse(description: str, code: SetErrorCode = _REQUEST) -> SetError:
    return SetError(code, description)


def parse_set(raw: bytes) -> Compact:
    """Steps 1 and 2: the compact JWS and its explicit type."""
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise _refuse("the body is not a compact JWS (non-ASCII bytes)") from None
    try:
        compact = parse_compact(text)
    except TokenError as exc:
        raise _refuse(f"the body is not a compact JWS ({exc.detail})") from None
    typ = compact.header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in SET_TYPES:
        raise _refuse("the JOSE header's typ must be secevent+jwt (RFC 8417 section 2.3)")
    return compact


async def verify_set(
    raw: bytes, transmitter: Transmitter, keys: KeySource, now: float
) -> VerifiedSet:
    """Verify ``raw`` as a SET of ``transmitter`` (module doc); raise SetError or
    SetUnavailable."""
    compact = parse_set(raw)
    alg = compact.header.get("alg")
    if not isinstance(alg, str) or alg.lower() == "none":
        raise _refuse("the SET is not signed (alg none); SETs must be signed")
    if alg not in transmitter.algorithms:
        raise _refuse("the signing algorithm is not accepted", SetErrorCode.INVALID_KEY)
    kid = compact.header.get("kid")
    try:
        key = await keys.get_key(kid, alg, now)
        verify_signature(compact, key, alg)
    except TokenError as exc:
        if exc.reason is Reason.KEYS_UNAVAILABLE:
            raise SetUnavailable("the transmitter's signing keys are unavailable") from None
        if exc.reason is Reason.TOKEN_KEY_UNKNOWN:
            raise _refuse(
                "no key of the transmitter matches kid and alg", SetErrorCode.INVALID_KEY
            ) from None
        raise _refuse("the signature does not verify", SetErrorCode.INVALID_KEY) from None
    return read_claims(compact.payload, transmitter, now)


def read_claims(payload: Mapping[str, Any], transmitter: Transmitter, now: float) -> VerifiedSet:
    """Step 5, on a payload whose signature was verified."""
    if payload.get("iss") != transmitter.issuer:
        raise _refuse("iss is not this stream's transmitter", SetErrorCode.INVALID_ISSUER)
    aud = payload.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not set(transmitter.audiences).intersection(
        a for a in audiences if isinstance(a, str)
    ):
        raise _refuse("aud does not name this receiver", SetErrorCode.INVALID_AUDIENCE)
    jti = payload.get("jti")
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI:
        raise _refuse(f"jti must be a string of 1 to {MAX_JTI} characters")
    iat = payload.get("iat")
    if isinstance(iat, bool) or not isinstance(iat, int | float) or math.isnan(iat):
        raise _refuse("iat must be a number")
    if not 0 <= iat < _MAX_EPOCH or iat > now + transmitter.leeway.total_seconds():
        raise _refuse("iat is in the future or out of range")
    if "sub" in payload:
        raise _refuse("a SET carries no sub claim (SSF 1.0 section 4.1.2); use sub_id")
    if "exp" in payload:
        raise _refuse("a SET carries no exp claim (SSF 1.0 section 4.1.7)")
    txn = payload.get("txn")
    if txn is not None and not isinstance(txn, str):
        raise _refuse("txn must be a string")
    events = payload.get("events")
    if not isinstance(events, dict) or not 0 < len(events) <= MAX_EVENTS:
        raise _refuse(f"events must be an object of 1 to {MAX_EVENTS} events")
    try:
        parsed = tuple(parse_event(str(uri), body) for uri, body in events.items())
        subject = None if "sub_id" not in payload else parse_subject(payload["sub_id"])
        if subject is None:
            for event in parsed:
                if event.subject is None:
                    raise _refuse("the SET names no subject (sub_id)")
                parse_subject(event.subject)
    except (EventError, SubjectError) as exc:
        raise _refuse(str(exc)) from None
    return VerifiedSet(
        issuer=transmitter.issuer,
        jti=jti,
        iat=float(iat),
        events=parsed,
        subject=subject,
        txn=txn,
    )
