"""DEVELOPMENT ONLY: a security event transmitter for the local stack (``ztauthz dev signal``).

It signs CAEP Security Event Tokens (RFC 8417, as SSF 1.0 profiles them: ``typ``
``secevent+jwt``, ``sub_id``, no ``sub`` and no ``exp``) with the dev keys, so the dev issuer
is also the transmitter (its SSF configuration metadata names its JWKS), and pushes them to a
receiver (RFC 8935: ``POST`` of ``application/secevent+jwt`` with a bearer token).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from app.dev.keys import DevKeys

CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
SESSION_REVOKED = CAEP + "session-revoked"
DEVICE_COMPLIANCE_CHANGE = CAEP + "device-compliance-change"


def subject(
    issuer: str, sub: str | None = None, session: str | None = None, device: str | None = None
) -> dict[str, Any]:
    """An SSF subject: a simple ``iss_sub`` user, or a complex subject of the parts given."""
    parts: dict[str, Any] = {}
    if sub is not None:
        parts["user"] = {"format": "iss_sub", "iss": issuer, "sub": sub}
    if session is not None:
        parts["session"] = {"format": "opaque", "id": session}
    if device is not None:
        parts["device"] = {"format": "opaque", "id": device}
    if not parts:
        raise ValueError("name a subject, a session or a device")
    if list(parts) == ["user"]:
        return dict(parts["user"])
    return {"format": "complex", **parts}


def sign_set(
    keys: DevKeys,
    *,
    issuer: str,
    audience: str,
    events: Mapping[str, Mapping[str, Any]],
    sub_id: Mapping[str, Any],
    alg: str = "RS256",
    now: float | None = None,
) -> str:
    issued = time.time() if now is None else now
    claims = {
        "iss": issuer,
        "aud": audience,
        "iat": int(issued),
        "jti": uuid.uuid4().hex,
        "sub_id": dict(sub_id),
        "events": {uri: dict(payload) for uri, payload in events.items()},
    }
    kid, key = keys.private_key_for(alg)
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid, "typ": "secevent+jwt"})


def session_revoked(
    keys: DevKeys,
    *,
    issuer: str,
    audience: str,
    sub_id: Mapping[str, Any],
    now: float | None = None,
) -> str:
    issued = time.time() if now is None else now
    payload = {"event_timestamp": int(issued), "initiating_entity": "admin"}
    return sign_set(
        keys,
        issuer=issuer,
        audience=audience,
        events={SESSION_REVOKED: payload},
        sub_id=sub_id,
        now=now,
    )


def device_compliance_change(
    keys: DevKeys,
    *,
    issuer: str,
    audience: str,
    device: str,
    compliant: bool,
    now: float | None = None,
) -> str:
    issued = time.time() if now is None else now
    current, previous = (
        ("compliant", "not-compliant") if compliant else ("not-compliant", "compliant")
    )
    payload = {
        "event_timestamp": int(issued),
        "current_status": current,
        "previous_status": previous,
        "initiating_entity": "policy",
    }
    return sign_set(
        keys,
        issuer=issuer,
        audience=audience,
        events={DEVICE_COMPLIANCE_CHANGE: payload},
        sub_id=subject(issuer, device=device),
        now=now,
    )


@dataclass(frozen=True, slots=True)
class Pushed:
    status: int
    body: str


def push(url: str, token: str, set_token: str, *, timeout: float = 10.0) -> Pushed:
    """RFC 8935 §2.1: one SET, POSTed with the stream's bearer token."""
    response = httpx.post(
        url,
        content=set_token.encode("ascii"),
        headers={
            "content-type": "application/secevent+jwt",
            "accept": "application/json",
            "authorization": f"Bearer {token}",
        },
        timeout=timeout,
        follow_redirects=False,
    )
    return Pushed(response.status_code, response.text)
