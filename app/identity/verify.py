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
5. the signature with PyJWT's algorithm bound to that one key (app/identity/jws.py reads the
   compact JWS once; token_signature_invalid ...);
6. the claims with our clock (``validate_claims``).

A token that is no JWS at all (app/identity/jws.py ``looks_like_jws``) is an opaque token: it
is introspected (RFC 7662, app/identity/introspection.py) at the one issuer configured to take
opaque tokens, or refused as ``token_malformed`` when none is. ``confirm`` asks a token's
issuer again for routes a policy marks ``high_risk``.

A verification that succeeded is remembered (app/identity/token_cache.py) under the token's
digest and the issuer's key generation: the same token is then only checked again against the
clock (``exp``, ``iat``, ``nbf``), until its keys change or it expires.

Only TokenErrors mean a bad token; anything else is a bug and propagates so the pipeline
reports it as internal_error instead of disguising it as a bad token.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from app.identity.claims import ValidClaims, validate_claims
from app.identity.errors import TokenError
from app.identity.introspection import Introspector
from app.identity.jwks import JwksCache, KeyGenerations, KeySource, RefreshObserver
from app.identity.jws import looks_like_jws, read_jws, verify_signature
from app.identity.principal import Principal, principal_from_valid_claims
from app.identity.token_cache import CachedVerification, TokenCache, token_digest
from app.reasons import Reason
from app.settings import Issuer

# RFC 8725 §3.11 / RFC 9068 §2.1: explicit types we accept; "application/" may be omitted
# (RFC 7515 §4.1.9). Compared case-insensitively.
ACCEPTED_TYPES = frozenset({"jwt", "application/jwt", "at+jwt", "application/at+jwt"})


class TokenVerifier:
    """Verifies tokens of the configured issuers with keys from their KeySources."""

    def __init__(
        self,
        issuers: Sequence[Issuer],
        sources: Mapping[str, KeySource],
        max_token_bytes: int,
        cache: TokenCache | None = None,
        introspectors: Mapping[str, Introspector] | None = None,
    ) -> None:
        """``cache`` remembers verified tokens (None: every token is verified in full);
        ``introspectors`` are those of the issuers with ``introspection`` settings."""
        missing = [issuer.issuer for issuer in issuers if issuer.issuer not in sources]
        if missing:
            raise ValueError(f"no key source for issuer(s) {missing}")
        self._issuers = {issuer.issuer: issuer for issuer in issuers}
        self._sources = dict(sources)
        # The sources that report key generations (JwksCache): only their tokens are cached.
        # Decided once here: a runtime_checkable isinstance costs microseconds per call.
        self._versioned = {
            name: source for name, source in sources.items() if isinstance(source, KeyGenerations)
        }
        self._max_token_bytes = max_token_bytes
        self.cache = cache
        self.introspectors = dict(introspectors or {})
        opaque = [i for i in self.introspectors.values() if i.settings.opaque_tokens]
        if len(opaque) > 1:
            raise ValueError("at most one issuer may take opaque tokens")
        self._opaque = opaque[0] if opaque else None

    def is_ready(self, now: float) -> bool:
        return all(self._sources[iss].is_ready(now) for iss in self._issuers)

    async def verify(self, token: str, now: float) -> Principal:
        if len(token) > self._max_token_bytes:
            raise TokenError(Reason.TOKEN_TOO_LARGE, f"over {self._max_token_bytes} bytes")
        if not token.isascii():  # a JWS compact serialization is base64url and dots only
            raise TokenError(Reason.TOKEN_MALFORMED, "token has non-ASCII characters")
        opaque = self._opaque
        if opaque is not None and token.count(".") != 2:
            # Surely no JWS (which has exactly two dots): straight to introspection, without
            # counting a miss in the verified-token cache, which never holds opaque tokens.
            return await opaque.introspect(token, now)
        cache = self.cache
        digest = b""
        if cache is not None:
            digest = token_digest(token)
            cached = cache.lookup(digest, now)
            if cached is not None:
                cached.recheck(now)
                return cached.principal
        compact = read_jws(token)  # None: no JWS at all (an opaque token)
        if compact is None:
            if opaque is None:
                raise TokenError(
                    Reason.TOKEN_MALFORMED, "not a JWS, and no issuer takes opaque tokens"
                )
            return await opaque.introspect(token, now)
        issuer = self._select_issuer(compact.payload)
        alg = _check_header(compact.header, issuer)
        source = self._sources[issuer.issuer]
        key = await source.get_key(compact.header.get("kid"), alg, now)
        # Read at once (no await since get_key returned): the generation ``key`` belongs to.
        versioned = self._versioned.get(issuer.issuer)
        generation = None if versioned is None else versioned.key_generation(now)
        verify_signature(compact, key, alg)
        payload = compact.payload
        valid = validate_claims(payload, issuer, now)  # every claim read once, here
        principal = principal_from_valid_claims(payload, issuer.issuer, valid)
        if cache is not None and versioned is not None and generation is not None:
            cache.store(digest, _remembered(principal, valid, issuer, versioned, generation))
        return principal

    async def confirm(self, token: str, principal: Principal, now: float) -> None:
        """Have ``principal``'s issuer confirm by introspection that ``token`` is active now
        (within its ``high_risk_max_age``), for a ``high_risk`` rule; raises TokenError:
        ``introspection_required`` when the issuer cannot be asked about this token, or the
        introspection's own reasons."""
        introspector = self.introspectors.get(principal.issuer)
        if introspector is None:
            raise TokenError(
                Reason.INTROSPECTION_REQUIRED, "the token's issuer has no introspection"
            )
        if looks_like_jws(token):
            if not introspector.settings.high_risk_jwts:
                raise TokenError(
                    Reason.INTROSPECTION_REQUIRED, "the token's issuer does not introspect its JWTs"
                )
        elif introspector is not self._opaque:  # never so: opaque tokens come from that issuer
            raise TokenError(Reason.INTROSPECTION_REQUIRED, "an opaque token of another issuer")
        answer = await introspector.introspect(token, now, introspector.high_risk_max_age)
        if answer.subject != principal.subject:
            raise TokenError(
                Reason.TOKEN_CLAIMS_INVALID, "the issuer's answer names another subject"
            )

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


def _remembered(
    principal: Principal,
    valid: ValidClaims,
    issuer: Issuer,
    source: KeyGenerations,
    generation: int,
) -> CachedVerification:
    """What the cache keeps of a verified token: validate_claims has checked the numbers."""
    return CachedVerification(
        principal=principal,
        source=source,
        generation=generation,
        exp=valid.exp,
        iat=valid.iat,
        nbf=valid.nbf,
        leeway=issuer.leeway.total_seconds(),
    )


def _check_header(header: Mapping[str, Any], issuer: Issuer) -> str:
    """The token's algorithm, once the header is acceptable for ``issuer``."""
    alg = header.get("alg")
    if not isinstance(alg, str) or alg.lower() == "none" or alg not in issuer.algorithms:
        raise TokenError(Reason.TOKEN_ALGORITHM_NOT_ALLOWED, "alg is not allowed for the issuer")
    typ = header.get("typ", "jwt")  # absent: fine (RFC 7519 §5.1); null is not a type
    if not isinstance(typ, str) or typ.lower() not in ACCEPTED_TYPES:
        raise TokenError(Reason.TOKEN_TYPE_INVALID, "typ is not JWT or at+jwt")
    if "crit" in header:
        # No critical extension is understood here; RFC 7515 §4.1.11 says reject.
        raise TokenError(Reason.TOKEN_MALFORMED, "crit header is not supported")
    return alg


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
