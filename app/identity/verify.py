"""JWT verification: from a bearer token to a Principal, or a TokenError with its reason.

The order matters and is fixed:

1. size, before any parsing (token_too_large);
2. the *unverified* header and payload, read only to learn ``alg``, ``kid``, ``typ`` and
   ``iss`` (token_malformed); the unverified ``iss`` only selects which issuer's keys and
   rules apply, it is trusted after the signature and ``validate_claims``;
3. issuer configured (token_issuer_unknown), ``alg`` in that issuer's allowlist and never
   ``none`` (token_algorithm_not_allowed), ``typ`` (token_type_invalid), no ``crit``;
4. the key for (``kid``, ``alg``) from the issuer's KeySource; header-supplied keys (``jwk``,
   ``jku``, ``x5u``, ``x5c``) are never used;
5. the signature with PyJWT bound to that one algorithm and key, its own time, audience and
   issuer checks switched off (token_signature_invalid ...);
6. the claims with our clock (``validate_claims``).

Only PyJWT's exceptions are translated, each explicitly; anything else is a bug and propagates
so the pipeline reports it as internal_error instead of disguising it as a bad token.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import httpx
import jwt
import jwt.exceptions
from jwt.types import Options

from app.identity.claims import read_audience, read_groups, read_scopes, validate_claims
from app.identity.errors import TokenError
from app.identity.jwks import JwksCache, KeySource, RefreshObserver
from app.identity.principal import Principal
from app.reasons import Reason
from app.settings import Issuer

# RFC 8725 §3.11 / RFC 9068 §2.1: explicit types we accept; "application/" may be omitted
# (RFC 7515 §4.1.9). Compared case-insensitively.
ACCEPTED_TYPES = frozenset({"jwt", "application/jwt", "at+jwt", "application/at+jwt"})

# Signature only: time, audience and issuer are validated by validate_claims with our clock.
_DECODE_OPTIONS: Options = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
    "require": [],
    "enforce_minimum_key_length": True,
}
# Reading the header and payload before the key is known (step 2). Nothing read this way is
# trusted until step 5 has verified the signature over the same bytes.
_UNVERIFIED: Options = {"verify_signature": False}

# Every PyJWT token exception, most specific first. Other PyJWT errors (JWK set or client
# errors, missing cryptography) cannot come from decoding a token and propagate as bugs.
_PYJWT_REASONS: tuple[tuple[type[jwt.PyJWTError], Reason], ...] = (
    (jwt.InvalidSignatureError, Reason.TOKEN_SIGNATURE_INVALID),
    (jwt.InvalidAlgorithmError, Reason.TOKEN_ALGORITHM_NOT_ALLOWED),
    (jwt.ExpiredSignatureError, Reason.TOKEN_EXPIRED),
    (jwt.ImmatureSignatureError, Reason.TOKEN_NOT_YET_VALID),
    (jwt.InvalidAudienceError, Reason.TOKEN_AUDIENCE_INVALID),
    (jwt.InvalidIssuerError, Reason.TOKEN_ISSUER_UNKNOWN),
    (jwt.MissingRequiredClaimError, Reason.TOKEN_CLAIMS_MISSING),
    (jwt.InvalidIssuedAtError, Reason.TOKEN_CLAIMS_INVALID),
    (jwt.exceptions.InvalidSubjectError, Reason.TOKEN_CLAIMS_INVALID),
    (jwt.exceptions.InvalidJTIError, Reason.TOKEN_CLAIMS_INVALID),
    (jwt.DecodeError, Reason.TOKEN_MALFORMED),
    (jwt.InvalidTokenError, Reason.TOKEN_MALFORMED),  # e.g. an invalid kid or crit header
    (jwt.InvalidKeyError, Reason.TOKEN_KEY_UNKNOWN),  # the key cannot verify (e.g. too weak)
)


def _token_error(exc: jwt.PyJWTError) -> TokenError:
    for kind, reason in _PYJWT_REASONS:
        if isinstance(exc, kind):
            # PyJWT's messages describe the failure, never echo the token.
            return TokenError(reason, f"{type(exc).__name__}: {str(exc)[:200]}")
    raise exc


class TokenVerifier:
    """Verifies tokens of the configured issuers with keys from their KeySources."""

    def __init__(
        self,
        issuers: Sequence[Issuer],
        sources: Mapping[str, KeySource],
        max_token_bytes: int,
    ) -> None:
        missing = [issuer.issuer for issuer in issuers if issuer.issuer not in sources]
        if missing:
            raise ValueError(f"no key source for issuer(s) {missing}")
        self._issuers = {issuer.issuer: issuer for issuer in issuers}
        self._sources = dict(sources)
        self._max_token_bytes = max_token_bytes

    def is_ready(self, now: float) -> bool:
        return all(self._sources[iss].is_ready(now) for iss in self._issuers)

    async def verify(self, token: str, now: float) -> Principal:
        if len(token) > self._max_token_bytes:
            raise TokenError(Reason.TOKEN_TOO_LARGE, f"over {self._max_token_bytes} bytes")
        if not token.isascii():  # a JWS compact serialization is base64url and dots only
            raise TokenError(Reason.TOKEN_MALFORMED, "token has non-ASCII characters")
        header, unverified = _read_unverified(token)
        issuer = self._select_issuer(unverified)
        alg = _check_header(header, issuer)
        key = await self._sources[issuer.issuer].get_key(header.get("kid"), alg, now)
        try:
            payload: dict[str, Any] = jwt.decode(
                token, key, algorithms=[alg], options=_DECODE_OPTIONS
            )
        except jwt.PyJWTError as exc:
            raise _token_error(exc) from exc
        validate_claims(payload, issuer, now)
        return _principal(payload, issuer)

    def _select_issuer(self, unverified: Mapping[str, Any]) -> Issuer:
        iss = unverified.get("iss")
        if iss is None:
            raise TokenError(Reason.TOKEN_CLAIMS_MISSING, "iss is missing")
        if not isinstance(iss, str):
            raise TokenError(Reason.TOKEN_CLAIMS_INVALID, "iss is not a string")
        issuer = self._issuers.get(iss)
        if issuer is None:
            raise TokenError(Reason.TOKEN_ISSUER_UNKNOWN, "iss is not a configured issuer")
        return issuer


def _read_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        decoded = jwt.decode_complete(token, options=_UNVERIFIED)
    except jwt.PyJWTError as exc:
        raise _token_error(exc) from exc
    header: dict[str, Any] = decoded["header"]
    payload: dict[str, Any] = decoded["payload"]
    return header, payload


def _check_header(header: Mapping[str, Any], issuer: Issuer) -> str:
    """The token's algorithm, once the header is acceptable for ``issuer``."""
    alg = header.get("alg")
    if not isinstance(alg, str) or alg.lower() == "none" or alg not in issuer.algorithms:
        raise TokenError(Reason.TOKEN_ALGORITHM_NOT_ALLOWED, "alg is not allowed for the issuer")
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.lower() not in ACCEPTED_TYPES):
        raise TokenError(Reason.TOKEN_TYPE_INVALID, "typ is not JWT or at+jwt")
    if "crit" in header:
        # No critical extension is understood here; RFC 7515 §4.1.11 says reject.
        raise TokenError(Reason.TOKEN_MALFORMED, "crit header is not supported")
    return alg


def _principal(payload: dict[str, Any], issuer: Issuer) -> Principal:
    return principal_from_claims(payload, issuer.issuer, issuer.claims.groups, issuer.claims.scopes)


def principal_from_claims(
    payload: Mapping[str, Any], issuer: str, groups_claim: str, scopes_claim: str
) -> Principal:
    """The Principal for claims that are already verified (or, in ``ztauthz policy test`` and
    ``explain``, given as claims). Raises TokenError for claims of the wrong type."""
    client_id = payload.get("client_id")
    acr, amr, auth_time = read_auth_strength(payload)
    return Principal(
        issuer=issuer,
        subject=payload["sub"],
        groups=read_groups(payload, groups_claim),
        scopes=read_scopes(payload, scopes_claim),
        audience=read_audience(payload),
        expires_at=int(payload["exp"]),
        issued_at=int(payload["iat"]),
        claims=MappingProxyType(dict(payload)),
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


def build_key_sources(
    issuers: Sequence[Issuer],
    client: httpx.AsyncClient,
    clock: Callable[[], float],
    on_refresh: RefreshObserver | None = None,
) -> dict[str, JwksCache]:
    """One JwksCache per configured issuer, keyed by the issuer identifier."""
    return {
        issuer.issuer: JwksCache(issuer, client, clock, on_refresh=on_refresh) for issuer in issuers
    }
