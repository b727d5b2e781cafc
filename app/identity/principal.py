"""Principal: a verified identity, the only thing policies learn about a token, and how it is
built from verified claims."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from sys import intern
from types import MappingProxyType
from typing import Any

from app.identity.claims import ValidClaims, read_audience, read_groups, read_scopes
from app.identity.errors import TokenError
from app.reasons import Reason


@dataclass(frozen=True, slots=True)
class Principal:
    issuer: str
    subject: str
    groups: frozenset[str]
    scopes: frozenset[str]
    audience: tuple[str, ...]
    expires_at: int
    issued_at: int
    claims: Mapping[str, Any]  # read-only view of the verified payload
    token_id: str | None = None
    client_id: str | None = None
    # Authentication strength (OIDC Core §2): context class, methods, and when the user
    # authenticated (epoch seconds). Policies with ``auth:`` conditions read them (step-up).
    acr: str | None = None
    amr: frozenset[str] = frozenset()
    auth_time: int | None = None


def principal_from_claims(
    payload: Mapping[str, Any], issuer: str, groups_claim: str, scopes_claim: str
) -> Principal:
    """The Principal for claims that are already verified (or, in ``ztauthz policy test`` and
    ``explain``, given as claims). Raises TokenError for claims of the wrong type."""
    return _principal(
        payload,
        issuer,
        read_groups(payload, groups_claim),
        read_scopes(payload, scopes_claim),
        read_audience(payload),
    )


def principal_from_valid_claims(
    payload: Mapping[str, Any], issuer: str, valid: ValidClaims
) -> Principal:
    """``principal_from_claims`` for a payload ``validate_claims`` accepted, from what it read
    (the audience, groups and scopes are not read again)."""
    return _principal(payload, issuer, valid.groups, valid.scopes, valid.audience)


def _principal(
    payload: Mapping[str, Any],
    issuer: str,
    groups: frozenset[str],
    scopes: frozenset[str],
    audience: tuple[str, ...],
) -> Principal:
    client_id = payload.get("client_id")
    acr, amr, auth_time = read_auth_strength(payload)
    return Principal(
        issuer=issuer,
        subject=payload["sub"],
        groups=groups,
        scopes=scopes,
        audience=audience,
        expires_at=int(payload["exp"]),
        issued_at=int(payload["iat"]),
        # A private copy, its keys interned: a cached Principal keeps it for the token's life.
        claims=MappingProxyType({intern(name): value for name, value in payload.items()}),
        token_id=payload.get("jti"),
        client_id=client_id if client_id is not None else payload.get("azp"),
        acr=acr,
        amr=amr,
        auth_time=auth_time,
    )


def read_auth_strength(
    payload: Mapping[str, Any],
) -> tuple[str | None, frozenset[str], int | None]:
    """``acr`` (a string), ``amr`` (a list of strings) and ``auth_time`` (a finite number of
    epoch seconds), each optional; a claim of the wrong type refuses the token."""
    acr = payload.get("acr")
    if acr is not None and not isinstance(acr, str):
        raise TokenError(Reason.TOKEN_CLAIMS_INVALID, "acr is not a string")
    amr = payload.get("amr")
    if amr is not None and not (isinstance(amr, list) and all(isinstance(m, str) for m in amr)):
        raise TokenError(Reason.TOKEN_CLAIMS_INVALID, "amr is not a list of strings")
    auth_time = payload.get("auth_time")
    if auth_time is None:
        return acr, frozenset(amr or ()), None
    if isinstance(auth_time, bool) or not isinstance(auth_time, int | float):
        raise TokenError(Reason.TOKEN_CLAIMS_INVALID, "auth_time is not a number")
    if not -_MAX_EPOCH < auth_time < _MAX_EPOCH or math.isnan(auth_time):
        raise TokenError(Reason.TOKEN_CLAIMS_INVALID, "auth_time is out of range")
    return acr, frozenset(amr or ()), int(auth_time)


_MAX_EPOCH = 2**53  # beyond this a number of seconds is no date (and NaN/Infinity are refused)
