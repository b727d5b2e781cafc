"""Reading an introspection answer (RFC 7662 §2.2) into the Principal a JWT would give.

Pure functions with the clock passed in. Two kinds of failure, kept apart because clients
must react differently:

- the *answer* is unusable (not a JSON object, ``active`` missing or not a JSON boolean):
  ``IntrospectionError``, which the pipeline turns into ``introspection_unavailable`` (503,
  fail closed: ztauthz cannot decide, the token may well be good);
- the answer is usable and says the token is not acceptable: ``active: false`` is
  ``token_inactive`` (401); an active token whose members fail the checks below is refused
  with the same ``token_*`` reason a JWT with those claims would get (401).

An active answer is held to the rules a JWT's claims are held to (app/identity/claims.py,
``validate_claims``): ``iss`` must be the issuer (RFC 7662 makes it optional, we require it:
it is what ties the answer to the issuer we asked about), ``aud`` must name a configured
audience, ``exp`` and ``iat`` are required, ``nbf`` is honoured, the issuer's
``max_token_lifetime`` applies. On top of that:

- ``token_type``, if present, must be ``Bearer`` (compared case-insensitively, RFC 6749 §5.1):
  a DPoP-bound or other sender-constrained type presented as a bearer token is refused;
- ``scope``, if present, is a string of scope tokens separated by single spaces
  (RFC 7662 §2.2 points to RFC 6749 §3.3: ``scope-token *( SP scope-token )``, each token
  ``1*( %x21 / %x23-5B / %x5D-7E )``); tabs, runs of spaces, leading or trailing spaces
  and characters outside that set are refused (``token_claims_invalid``); "" means none;
- ``sub`` is required, unless the issuer is configured to take the client as the subject
  when the answer has none (``subject_from_client_id``: RFC 9068 §2.2 says a token without a
  resource owner, e.g. from the client credentials grant, names the client in ``sub``, and
  that is what the same server's JWT would carry);
- a ``jti`` equal to the token itself (some servers echo opaque tokens as their id) is dropped,
  so the token never reaches a decision log through ``Principal.token_id``.

``active`` and ``token_type`` describe the answer, not the token: they are not copied into
``Principal.claims``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from app.identity.claims import SCOPE_TOKEN, validate_claims
from app.identity.errors import TokenError
from app.identity.principal import Principal, principal_from_claims
from app.reasons import Reason
from app.settings import Issuer

# RFC 6749 §3.3 (and Appendix A.4): scope = scope-token *( SP scope-token ).
SCOPE = re.compile(rf"{SCOPE_TOKEN}(?: {SCOPE_TOKEN})*")
_ANSWER_ONLY = ("active", "token_type")


class IntrospectionError(Exception):
    """The introspection endpoint gave no usable answer (transport, status, body). Messages
    name the endpoint without credentials and never include the token."""


def read_active(document: Any) -> bool:
    """``active`` of an answer, or IntrospectionError when the answer is not RFC 7662's."""
    if not isinstance(document, dict):
        raise IntrospectionError("the answer is not a JSON object")
    active = document.get("active")
    if not isinstance(active, bool):
        # RFC 7662 §2.2: REQUIRED, a boolean. "true" as a string is no answer at all.
        raise IntrospectionError("the answer's 'active' is missing or not a boolean")
    return active


def parse_scope(value: Any) -> frozenset[str]:
    """RFC 6749 §3.3 scopes, split on single spaces only; TokenError for anything else."""
    if not isinstance(value, str):
        raise TokenError(Reason.TOKEN_CLAIMS_INVALID, "scope is not a string")
    if value == "":
        return frozenset()
    if SCOPE.fullmatch(value) is None:
        raise TokenError(
            Reason.TOKEN_CLAIMS_INVALID, "scope is not scope tokens separated by single spaces"
        )
    return frozenset(value.split(" "))


def token_claims(
    document: Mapping[str, Any], token: str, subject_from_client_id: bool
) -> dict[str, Any]:
    """The members of an active answer that describe the token, checked for the rules above
    that JWT validation does not know (token_type, scope grammar, the subject fallback)."""
    token_type = document.get("token_type")
    if token_type is not None:
        if not isinstance(token_type, str):
            raise TokenError(Reason.TOKEN_CLAIMS_INVALID, "token_type is not a string")
        if token_type.lower() != "bearer":
            raise TokenError(Reason.TOKEN_TYPE_INVALID, "token_type is not Bearer")
    if "scope" in document:
        parse_scope(document["scope"])
    claims = {name: value for name, value in document.items() if name not in _ANSWER_ONLY}
    if claims.get("jti") == token:
        del claims["jti"]
    if "sub" not in claims and subject_from_client_id:
        client_id = claims.get("client_id")
        if isinstance(client_id, str) and client_id:
            claims["sub"] = client_id
    return claims


def active_principal(
    document: Mapping[str, Any], token: str, issuer: Issuer, now: float
) -> Principal:
    """The Principal of an answer that said ``active: true``; TokenError when refused."""
    settings = issuer.introspection
    fallback = settings is not None and settings.subject_from_client_id
    claims = token_claims(document, token, fallback)
    validate_claims(claims, issuer, now)
    return principal_from_claims(claims, issuer.issuer, issuer.claims.groups, issuer.claims.scopes)


def answer_principal(document: Any, token: str, issuer: Issuer, now: float) -> Principal:
    """The whole answer: IntrospectionError if unusable, TokenError(token_inactive) if the
    token is not active, TokenError for a refused active token, else its Principal."""
    if not read_active(document):
        raise TokenError(Reason.TOKEN_INACTIVE, "the issuer says the token is not active")
    return active_principal(document, token, issuer, now)
