"""Claim validation (RFC 7519 §4.1, RFC 9068 §2.2) and claim reading, after the signature.

Pure functions with the clock (``now``, epoch seconds) and the leeway passed in, one
``validate_<claim>`` per claim, each refusing with a stable reason code:
missing -> token_claims_missing, wrong JSON type -> token_claims_invalid, and a specific code
for each time or audience rule. Numbers must be finite JSON numbers (never booleans, never
NaN/Infinity, which Python's JSON parser accepts and which compare false with everything).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.identity.errors import TokenError
from app.reasons import Reason
from app.settings import Issuer
from app.shared import shared_names

_MISSING = object()


@dataclass(frozen=True, slots=True)
class ValidClaims:
    """What ``validate_claims`` read while it validated, so that nothing is read twice: the
    audience, groups and scopes as the Principal holds them, and the times as numbers."""

    audience: tuple[str, ...]
    groups: frozenset[str]
    scopes: frozenset[str]
    exp: float
    iat: float
    nbf: float | None


def validate_claims(payload: Mapping[str, Any], issuer: Issuer, now: float) -> ValidClaims:
    """Raise TokenError unless the verified ``payload`` is acceptable for ``issuer`` at ``now``;
    what was read on the way, when it is."""
    leeway = issuer.leeway.total_seconds()
    validate_iss(payload, issuer.issuer)
    audience = read_audience(payload)
    if not set(audience).intersection(issuer.audiences):  # validate_aud, on what was read
        raise TokenError(Reason.TOKEN_AUDIENCE_INVALID, "aud names none of our audiences")
    exp = validate_exp(payload, now, leeway)
    iat = validate_iat(payload, now, leeway)
    nbf = validate_nbf(payload, now, leeway)
    validate_lifetime(exp, iat, issuer.max_token_lifetime.total_seconds())
    validate_sub(payload)
    for name in ("jti", "client_id", "azp"):
        validate_optional_string(payload, name)
    groups = read_groups(payload, issuer.claims.groups)
    scopes = read_scopes(payload, issuer.claims.scopes)
    return ValidClaims(audience, groups, scopes, exp, iat, nbf)


def validate_iss(payload: Mapping[str, Any], expected: str) -> None:
    iss = payload.get("iss", _MISSING)
    if iss is _MISSING:
        raise TokenError(Reason.TOKEN_CLAIMS_MISSING, "iss is missing")
    if not isinstance(iss, str):
        raise TokenError(Reason.TOKEN_CLAIMS_INVALID, "iss is not a string")
    if iss != expected:
        raise TokenError(Reason.TOKEN_ISSUER_UNKNOWN, "iss is not the expected issuer")


def validate_aud(payload: Mapping[str, Any], accepted: Sequence[str]) -> None:
    """``aud`` (a string or a list of strings) must name at least one accepted audience."""
    if not set(read_audience(payload)).intersection(accepted):
        raise TokenError(Reason.TOKEN_AUDIENCE_INVALID, "aud names none of our audiences")


def validate_exp(payload: Mapping[str, Any], now: float, leeway: float) -> float:
    exp = _number(payload, "exp")
    check_exp(exp, now, leeway)
    return exp


def validate_iat(payload: Mapping[str, Any], now: float, leeway: float) -> float:
    iat = _number(payload, "iat")
    check_iat(iat, now, leeway)
    return iat


def validate_nbf(payload: Mapping[str, Any], now: float, leeway: float) -> float | None:
    if "nbf" not in payload:
        return None
    nbf = _number(payload, "nbf")
    check_nbf(nbf, now, leeway)
    return nbf


# The time rules on numbers already read: validate_claims applies them once, and a cached
# verification (app/identity/token_cache.py) applies them again at every use, in this order.


def check_exp(exp: float, now: float, leeway: float) -> None:
    if exp + leeway <= now:
        raise TokenError(Reason.TOKEN_EXPIRED, "exp is in the past")


def check_iat(iat: float, now: float, leeway: float) -> None:
    if iat - leeway > now:
        raise TokenError(Reason.TOKEN_NOT_YET_VALID, "iat is in the future")


def check_nbf(nbf: float | None, now: float, leeway: float) -> None:
    if nbf is not None and nbf - leeway > now:
        raise TokenError(Reason.TOKEN_NOT_YET_VALID, "nbf is in the future")


def validate_lifetime(exp: float, iat: float, max_lifetime: float) -> None:
    """Short-lived tokens only: a long-lived token is refused however it was signed."""
    if exp - iat > max_lifetime:
        raise TokenError(Reason.TOKEN_LIFETIME_EXCEEDED, "exp - iat exceeds the maximum")


def validate_sub(payload: Mapping[str, Any]) -> None:
    sub = payload.get("sub", _MISSING)
    if sub is _MISSING or sub == "":
        raise TokenError(Reason.TOKEN_CLAIMS_MISSING, "sub is missing or empty")
    if not isinstance(sub, str):
        raise TokenError(Reason.TOKEN_CLAIMS_INVALID, "sub is not a string")


def validate_optional_string(payload: Mapping[str, Any], name: str) -> None:
    if name in payload and not isinstance(payload[name], str):
        raise TokenError(Reason.TOKEN_CLAIMS_INVALID, f"{name} is not a string")


def read_audience(payload: Mapping[str, Any]) -> tuple[str, ...]:
    aud = payload.get("aud", _MISSING)
    if aud is _MISSING:
        raise TokenError(Reason.TOKEN_AUDIENCE_INVALID, "aud is missing")
    if isinstance(aud, str):
        return (aud,)
    if isinstance(aud, list) and all(isinstance(item, str) for item in aud):
        return tuple(aud)
    raise TokenError(Reason.TOKEN_CLAIMS_INVALID, "aud is not a string or list of strings")


def claim_at(payload: Mapping[str, Any], path: str) -> Any:
    """The claim named ``path``; a dotted path reaches into nested objects.

    A top-level claim with the literal name wins, because namespaced claim names are often
    URLs full of dots (``https://example.com/groups``). None when absent.
    """
    if path in payload:
        return payload[path]
    value: Any = payload
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def read_groups(payload: Mapping[str, Any], path: str) -> frozenset[str]:
    """Groups: a list of strings or a single string; absent means none."""
    value = claim_at(payload, path)
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return shared_names(frozenset({value}))
    return shared_names(_strings(value, "groups"))


def read_scopes(payload: Mapping[str, Any], path: str) -> frozenset[str]:
    """Scopes: a space-separated string (RFC 8693 §4.2, RFC 9068 §2.2.3) or a list.

    RFC 6749 §3.3: ``scope = scope-token *( SP scope-token )`` and ``scope-token = 1*( %x21 /
    %x23-5B / %x5D-7E )``. The string is split on the space character (%x20) alone, never on
    other whitespace (``str.split()`` would read ``"openid\tapi:read"`` or a no-break space as
    two scopes); runs of spaces are tolerated. Every scope, in a string or a list, must be a
    scope-token: a tab, a no-break space, a quote, a backslash or any non-ASCII character
    refuses the token (token_claims_invalid) instead of becoming part of some scope.
    """
    value = claim_at(payload, path)
    if value is None:
        return frozenset()
    if isinstance(value, str):
        if _SCOPE_STRING.fullmatch(value) is None:
            raise TokenError(Reason.TOKEN_CLAIMS_INVALID, "scope holds more than scope-tokens")
        scopes = frozenset(value.split(" "))
        scopes = scopes - _EMPTY if "" in scopes else scopes
    else:
        scopes = _strings(value, "scopes")
        if not all(_SCOPE_TOKEN.fullmatch(scope) for scope in scopes):
            raise TokenError(Reason.TOKEN_CLAIMS_INVALID, "a scope is not a scope-token")
    return shared_names(scopes)


# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ). The one definition (the
# introspection answer's scope grammar is built from it too).
_SCOPE_CHARS = r"\x21\x23-\x5b\x5d-\x7e"
SCOPE_TOKEN = rf"[{_SCOPE_CHARS}]+"
_SCOPE_TOKEN = re.compile(SCOPE_TOKEN)
_SCOPE_STRING = re.compile(rf"[ {_SCOPE_CHARS}]*")  # scope-tokens and SP, in any order
_EMPTY = frozenset({""})


def _strings(value: Any, what: str) -> frozenset[str]:
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return frozenset(value)
    raise TokenError(Reason.TOKEN_CLAIMS_INVALID, f"{what} claim is not a list of strings")


def _number(payload: Mapping[str, Any], name: str) -> float:
    value = payload.get(name, _MISSING)
    if value is _MISSING:
        raise TokenError(Reason.TOKEN_CLAIMS_MISSING, f"{name} is missing")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenError(Reason.TOKEN_CLAIMS_INVALID, f"{name} is not a number")
    try:
        if not math.isfinite(value):
            raise TokenError(Reason.TOKEN_CLAIMS_INVALID, f"{name} is not a finite number")
    except OverflowError:  # an int too large for a float
        raise TokenError(Reason.TOKEN_CLAIMS_INVALID, f"{name} is out of range") from None
    return float(value)
