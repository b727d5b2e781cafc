"""Find the access token in a request: the Authorization header, as a ``Bearer`` (RFC 6750
§2.1) or ``DPoP`` (RFC 9449 §7.1) credential, or a cookie (a bearer token too).

A present but unusable credential is an error, never a silent "no token": a client that sent
something and gets treated as anonymous would hide a misconfiguration (and could be allowed on
anonymous routes by mistake).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from app.http_facts import AUTHORIZATION, COOKIE
from app.identity.errors import TokenError
from app.reasons import Reason

# credentials = "Bearer" 1*SP b64token ; b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~"
# / "+" / "/" ) *"="  (RFC 6750 §2.1). The scheme is case-insensitive (RFC 9110 §11.1).
_B64TOKEN = r"[A-Za-z0-9\-._~+/]+=*"
_BEARER = re.compile(rf"[Bb][Ee][Aa][Rr][Ee][Rr] +({_B64TOKEN})")
# RFC 9449 §7.1: "DPoP" 1*SP token68, token68 having the b64token syntax (RFC 9110 §11.2).
_DPOP = re.compile(rf"[Dd][Pp][Oo][Pp] +({_B64TOKEN})")

Scheme = Literal["bearer", "dpop", "cookie"]


@dataclass(frozen=True, slots=True)
class Credential:
    """An access token and how it was presented: ``dpop`` tokens come with a proof (RFC 9449),
    the others are bearer tokens."""

    scheme: Scheme
    token: str


_TOKEN = re.compile(_B64TOKEN)
_OWS = " \t"
# The b64token characters, deleted by bytes.translate: what is left of a token's body is what
# _B64TOKEN would not match. Every check reads its Authorization header, and this scan costs
# less than the expression (bench/README.md, Cold path); a unit test holds the two to the same
# answers.
_B64_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/"


def is_b64token(text: str) -> bool:
    """``_TOKEN.fullmatch(text) is not None``, faster: 1*b64char *"=" (RFC 6750 §2.1)."""
    body = text.rstrip("=")
    return bool(body) and body.isascii() and not body.encode("ascii").translate(None, _B64_CHARS)


def extract_credential(headers: Mapping[str, str], cookie_name: str | None) -> Credential | None:
    """The credential, or None when the request carries none.

    ``headers`` has lower-cased names. The Authorization header wins; the cookie is consulted
    only when there is no Authorization header and ``cookie_name`` is configured.
    Raises TokenError(TOKEN_MALFORMED) for a credential that is present but neither a bearer
    nor a DPoP token (two Authorization lines, which Envoy joins with a comma, are neither).
    """
    authorization = headers.get(AUTHORIZATION)
    if authorization is not None:
        return _from_authorization(authorization)
    if cookie_name:
        token = _from_cookie(headers.get(COOKIE), cookie_name)
        return None if token is None else Credential("cookie", token)
    return None


def _from_authorization(value: str) -> Credential:
    """What ``_BEARER`` or else ``_DPOP`` fully matches (the scheme, 1*SP, a b64token), read
    without the expressions: the scheme by comparison, the token by ``is_b64token``."""
    value = value.strip(_OWS)
    scheme, space, rest = value.partition(" ")
    if space and scheme.isascii():
        token = rest.lstrip(" ")
        kind = scheme.lower()
        if kind == "bearer" and is_b64token(token):
            return Credential("bearer", token)
        if kind == "dpop" and is_b64token(token):
            return Credential("dpop", token)
    raise TokenError(
        Reason.TOKEN_MALFORMED, "authorization header is not a bearer or DPoP credential"
    )


def _from_cookie(header: str | None, name: str) -> str | None:
    """The value of cookie ``name`` (RFC 6265 §4.2 syntax: ``a=1; b=2``).

    Hand-parsed on purpose: ``http.cookies.SimpleCookie`` silently stops at the first pair it
    cannot parse and lets a later duplicate win. A name that appears more than once is refused:
    a second cookie of the same name is how cookie-tossing from a sibling domain looks.
    """
    if not header:
        return None
    values = []
    for pair in header.split(";"):
        key, sep, value = pair.partition("=")
        if sep and key.strip(_OWS) == name:
            values.append(value.strip(_OWS))
    if not values:
        return None
    if len(values) > 1:
        raise TokenError(Reason.TOKEN_MALFORMED, "token cookie is present more than once")
    value = values[0]
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if value == "":
        return None  # a cleared cookie (e.g. after logout) is no credential at all
    if _TOKEN.fullmatch(value) is None:
        raise TokenError(Reason.TOKEN_MALFORMED, "token cookie holds no bearer token")
    return value
