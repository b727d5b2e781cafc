"""Signing keys of one issuer: an async JWKS cache with last-known-good keys.

Compared with PyJWT's ``PyJWKClient`` (synchronous, drops its keys when a fetch fails, refetches
on every unknown ``kid``), ``JwksCache``:

- fetches in the background (every ``refresh_interval``, exponential backoff on failure) and
  never on the request path except for a rate-limited ``kid`` miss;
- runs exactly one fetch at a time: concurrent callers await the same in-flight fetch;
- keeps the last good key set when a fetch fails, until ``max_staleness`` after the last
  success, and only then reports ``keys_unavailable``;
- refetches for an unknown ``kid`` only when the last fetch attempt is older than
  ``kid_miss_min_interval``, so a flood of random ``kid`` values costs a bounded number of
  fetches;
- indexes keys by (``kid``, algorithm), accepting only asymmetric signing keys whose type and
  curve suit the algorithm (RFC 7518 §3, RFC 8037 §3.1) and whose ``alg``, if given, matches.

``now`` given to ``is_ready``/``get_key`` and the ``clock`` given to the cache must share one
epoch (seconds); tests pass the same fake clock to both.

One piece (about 440 lines): the fetch loop, the kid-miss limiter and the key index share one
lock-free state machine (the generation of keys in force and the fetch in flight); spreading it
over modules would put one invariant in several places.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import httpx
import jwt

from app import tasks
from app.identity.discovery import KeyFetchError, fetch_json, fetch_jwks_uri, safe_url
from app.identity.errors import TokenError
from app.reasons import Reason
from app.settings import Jwks

logger = logging.getLogger("ztauthz.identity")


class KeySource(Protocol):
    """Where a verifier gets the public key for a token."""

    async def start(self) -> None:
        """Begin loading keys in the background; never raises."""

    async def aclose(self) -> None:
        """Stop background work."""

    def is_ready(self, now: float) -> bool:
        """Whether usable keys are loaded (and not older than the allowed staleness)."""

    async def get_key(self, kid: str | None, alg: str, now: float) -> jwt.PyJWK:
        """The key for ``kid`` and ``alg``.

        Raises TokenError(TOKEN_KEY_UNKNOWN) when no key matches and TokenError(KEYS_UNAVAILABLE)
        when there are no usable keys at all.
        """


class KeyOrigin(Protocol):
    """Whose keys a JwksCache holds: a token issuer (app/settings/issuers.py ``Issuer``) or a
    security event transmitter (app/settings/signals.py ``Transmitter``)."""

    @property
    def issuer(self) -> str: ...
    @property
    def jwks_uri(self) -> str | None: ...
    @property
    def algorithms(self) -> Sequence[str]: ...
    @property
    def jwks(self) -> Jwks: ...


# Finds the JWKS URL when none is pinned: (client, timeout, max bytes) -> URL.
JwksLocator = Callable[[httpx.AsyncClient, float, int], Awaitable[str]]


@runtime_checkable
class KeyGenerations(Protocol):
    """A KeySource that tells when its keys change (JwksCache does): what lets a verifier
    remember verifications safely. Sources without it are asked for the key every time."""

    def key_generation(self, now: float) -> int | None:
        """The current key set's generation, or None when there are no usable keys at ``now``."""


# The key type (and curves) each algorithm needs: RFC 7518 §3.3-3.5, RFC 8037 §3.1.
KEY_TYPES: dict[str, tuple[str, frozenset[str] | None]] = {
    **{alg: ("RSA", None) for alg in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")},
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
}
# JWK members that only private (or symmetric) keys have (RFC 7518 §6.2.2, §6.3.2, §6.4).
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_MIN_DELAY = 0.01  # seconds between background fetches, whatever the configuration says


@dataclass(frozen=True, slots=True)
class KeySet:
    """One successfully fetched JWKS, indexed for lookup. Replaced whole, never mutated."""

    by_kid: Mapping[tuple[str, str], jwt.PyJWK]  # (kid, alg) -> key bound to alg
    by_alg: Mapping[str, tuple[jwt.PyJWK, ...]]  # alg -> every usable key, with or without kid
    kids: frozenset[str]
    size: int  # how many JWKS members are usable
    # SHA-256 over the usable members in document order: equal fingerprints, equal key sets
    # (a refresh that fetched the same keys is no key change; see JwksCache.key_generation).
    fingerprint: str = ""

    def find(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        if kid is None:
            # Without a kid the choice must be unambiguous: exactly one key for this alg.
            candidates = self.by_alg.get(alg, ())
            return candidates[0] if len(candidates) == 1 else None
        return self.by_kid.get((kid, alg))

    def refetch_may_help(self, kid: str | None, alg: str) -> bool:
        """False when the miss is about keys we have (wrong type, ambiguous), not a new key."""
        if kid is None:
            return not self.by_alg.get(alg)
        return kid not in self.kids


def _skip_reason(jwk: Any) -> str | None:
    """Why a JWKS member is never usable for verification, or None."""
    if not isinstance(jwk, dict):
        return "not a JSON object"
    kty = jwk.get("kty")
    if kty == "oct":
        return "symmetric key"
    if kty not in ("RSA", "EC", "OKP"):
        return "unsupported key type"
    if jwk.get("use", "sig") != "sig":
        return "use is not sig"
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return "key_ops lacks verify"
    if PRIVATE_MEMBERS & jwk.keys():
        return "contains private key material"
    if not isinstance(jwk.get("kid", ""), str) or not isinstance(jwk.get("alg", ""), str):
        return "kid or alg is not a string"
    return None


def key_suits(jwk: dict[str, Any], alg: str) -> bool:
    if alg not in KEY_TYPES:
        return False  # an algorithm we have no key-type rule for is never served
    kty, curves = KEY_TYPES[alg]
    if jwk.get("kty") != kty:
        return False
    if curves is not None and jwk.get("crv") not in curves:
        return False
    return bool(jwk.get("alg", alg) == alg)


def bind_key(jwk: dict[str, Any], alg: str) -> jwt.PyJWK | None:
    """A PyJWK that verifies with ``alg`` only, or None if the key is invalid or too weak."""
    try:
        key = jwt.PyJWK(jwk, algorithm=alg)
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        return None
    if key.Algorithm.check_key_length(key.key) is not None:
        return None  # e.g. RSA below 2048 bits
    return key


def parse_jwks(document: Any, algorithms: Sequence[str]) -> KeySet:
    """Index the usable keys of a JWKS document for the allowed ``algorithms``.

    Raises KeyFetchError when the document is not a JWKS or holds no usable key: such a
    response is treated as a failed fetch, so it cannot wipe the last-known-good keys.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise KeyFetchError("JWKS is not a JSON object with a 'keys' list")
    by_kid: dict[tuple[str, str], jwt.PyJWK] = {}
    by_alg: dict[str, list[jwt.PyJWK]] = {}
    members: list[Any] = []
    skipped = used = 0
    for jwk in document["keys"]:
        reason = _skip_reason(jwk)
        bound = [] if reason else [(a, bind_key(jwk, a)) for a in algorithms if key_suits(jwk, a)]
        usable = [(alg, key) for alg, key in bound if key is not None]
        if not usable:
            skipped += 1
            logger.debug("ignoring JWKS key kid=%r: %s", _kid_of(jwk), reason or "no usable alg")
            continue
        used += 1
        members.append(jwk)
        kid = jwk.get("kid")
        for alg, key in usable:
            if kid is not None:
                if (kid, alg) in by_kid:
                    logger.warning("JWKS lists kid=%r twice for %s; using the first", kid, alg)
                    continue
                by_kid[(kid, alg)] = key
            by_alg.setdefault(alg, []).append(key)
    if not by_alg:
        raise KeyFetchError(f"JWKS holds no usable signing key ({skipped} ignored)")
    return KeySet(
        by_kid=by_kid,
        by_alg={alg: tuple(keys) for alg, keys in by_alg.items()},
        kids=frozenset(kid for kid, _ in by_kid),
        size=used,
        fingerprint=_fingerprint(members, algorithms),
    )


def _fingerprint(members: Sequence[Any], algorithms: Sequence[str]) -> str:
    canonical = json.dumps([list(algorithms), *members], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class RefreshOutcome:
    """One finished JWKS fetch, as told to the cache's ``on_refresh`` observer (telemetry)."""

    issuer: str
    ok: bool
    at: float  # the cache's clock
    kids: frozenset[str]  # key ids in use after the fetch (the old ones when it failed)
    previous_kids: frozenset[str] | None  # before the fetch; None when no keys were loaded
    error: str | None = None  # what failed, for operators (never key material)
    consecutive_failures: int = 0


RefreshObserver = Callable[[RefreshOutcome], None]


def _kid_of(jwk: Any) -> Any:
    return jwk.get("kid") if isinstance(jwk, dict) else None


def backoff_delay(failures: int, base: float, cap: float) -> float:
    """Seconds to wait after ``failures`` consecutive failures: base, 2*base, 4*base ... cap."""
    if failures <= 0:
        return cap
    return min(cap, base * float(2 ** min(failures - 1, 32)))


class JwksCache:
    """The ``KeySource`` of one issuer: discovery, then its JWKS, cached and refreshed.

    ``locate`` finds the JWKS URL when the origin pins none: OIDC discovery of the issuer by
    default, the SSF transmitter configuration for a transmitter (app/signals/keys.py).
    """

    def __init__(
        self,
        issuer: KeyOrigin,
        client: httpx.AsyncClient,
        clock: Callable[[], float],
        *,
        retry_base: float = 1.0,
        on_refresh: RefreshObserver | None = None,
        locate: JwksLocator | None = None,
    ) -> None:
        self.issuer = issuer
        self._locate = locate
        self._on_refresh = on_refresh
        self._client = client
        self._clock = clock
        self._retry_base = retry_base
        config = issuer.jwks
        self._refresh_interval = config.refresh_interval.total_seconds()
        self._max_staleness = config.max_staleness.total_seconds()
        self._kid_miss_interval = config.kid_miss_min_interval.total_seconds()
        self._timeout = config.fetch_timeout.total_seconds()
        self._max_bytes = config.max_bytes
        # An explicit jwks_uri pins the key URL; otherwise discovery finds it (and is redone
        # after a failed fetch, in case the provider moved its keys).
        self._pinned_uri = issuer.jwks_uri
        self._jwks_uri = issuer.jwks_uri
        self._keys: KeySet | None = None
        self._generation = 0  # + 1 whenever the usable key set changes
        self._inflight: asyncio.Task[bool] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._jitter = random.Random()  # noqa: S311 - spreads refreshes; not security relevant
        # Counters, for tests, metrics and logs.
        self.fetch_count = 0
        self.failure_count = 0
        self.consecutive_failures = 0
        self.last_attempt_at: float | None = None
        self.last_success_at: float | None = None
        self.last_error: str | None = None

    # -- KeySource -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._runner is None:
            self._runner = asyncio.create_task(
                self._run(), name=f"jwks refresh {safe_url(self.issuer.issuer)}"
            )

    async def aclose(self) -> None:
        for task in (self._runner, self._inflight):
            await tasks.stop(task)
        self._runner = None
        self._inflight = None

    def is_ready(self, now: float) -> bool:
        return self._fresh_keys(now) is not None

    def key_generation(self, now: float) -> int | None:
        """Which key set ``get_key`` would use at ``now``, or None when it has none (the keys
        are missing or too stale). The number changes whenever a fetch brings different
        keys (a rotation, a revoked ``kid``), never for a refresh that fetched the same ones,
        so a verification remembered under one generation holds while it is current."""
        return None if self._fresh_keys(now) is None else self._generation

    async def get_key(self, kid: str | None, alg: str, now: float) -> jwt.PyJWK:
        keys = self._fresh_keys(now)
        if keys is None:
            if self._may_fetch(now):
                await self.refresh()
            keys = self._fresh_keys(now)
            if keys is None:
                raise TokenError(Reason.KEYS_UNAVAILABLE, "no usable keys for the issuer")
        key = keys.find(kid, alg)
        if key is not None:
            return key
        if keys.refetch_may_help(kid, alg) and self._may_fetch(now):
            await self.refresh()
            refreshed = self._fresh_keys(now)
            key = (keys if refreshed is None else refreshed).find(kid, alg)
            if key is not None:
                return key
        raise TokenError(Reason.TOKEN_KEY_UNKNOWN, f"no {alg} key matches the token's kid")

    # -- fetching --------------------------------------------------------------------------

    async def refresh(self) -> bool:
        """Fetch the keys now, or join the fetch already in flight. True when it succeeded."""
        task = self._inflight
        if task is None or task.done():
            self.fetch_count += 1
            self.last_attempt_at = self._clock()
            task = asyncio.create_task(self._fetch())
            self._inflight = task
        # shield: a caller that gives up (e.g. a cancelled request) does not cancel the fetch
        # the other callers are waiting for.
        return await asyncio.shield(task)

    def _may_fetch(self, now: float) -> bool:
        if self._inflight is not None and not self._inflight.done():
            return True  # joining costs nothing
        last = self.last_attempt_at
        return last is None or now - last >= self._kid_miss_interval

    def _fresh_keys(self, now: float) -> KeySet | None:
        if self._keys is None or self.last_success_at is None:
            return None
        if now - self.last_success_at > self._max_staleness:
            return None
        return self._keys

    async def _fetch(self) -> bool:
        try:
            uri = self._jwks_uri or await (
                self._locate(self._client, self._timeout, self._max_bytes)
                if self._locate is not None
                else fetch_jwks_uri(
                    self._client, self.issuer.issuer, self._timeout, self._max_bytes
                )
            )
            document = await fetch_json(self._client, uri, self._timeout, self._max_bytes, "JWKS")
            keys = parse_jwks(document, self.issuer.algorithms)
        except KeyFetchError as exc:
            self._failed(str(exc))
            return False
        except Exception:
            logger.exception("JWKS fetch for %s failed unexpectedly", self._name)
            self._failed("unexpected error")
            return False
        finally:
            self._inflight = None
        self._jwks_uri = uri
        previous = self._keys
        if previous is None or previous.fingerprint != keys.fingerprint:
            self._generation += 1
        self._keys = keys
        self.last_success_at = self._clock()
        self.last_error = None
        self.consecutive_failures = 0
        self._notify(True, previous, self.last_success_at)
        logger.info("loaded %d signing key(s) for %s from %s", keys.size, self._name, safe_url(uri))
        return True

    def _failed(self, message: str) -> None:
        self.failure_count += 1
        self.consecutive_failures += 1
        self.last_error = message
        self._jwks_uri = self._pinned_uri
        kept = "no keys yet"
        if self._keys is not None:
            kept = f"keeping {self._keys.size} last-known-good key(s)"
        logger.warning("JWKS fetch for %s failed: %s; %s", self._name, message, kept)
        self._notify(False, self._keys, self._clock(), message)

    def _notify(
        self, ok: bool, previous: KeySet | None, at: float, error: str | None = None
    ) -> None:
        if self._on_refresh is None:
            return
        current = self._keys
        outcome = RefreshOutcome(
            issuer=self.issuer.issuer,
            ok=ok,
            at=at,
            kids=current.kids if current is not None else frozenset(),
            previous_kids=previous.kids if previous is not None else None,
            error=error,
            consecutive_failures=self.consecutive_failures,
        )
        try:
            self._on_refresh(outcome)
        except Exception:
            logger.exception("JWKS refresh observer failed for %s", self._name)

    async def _run(self) -> None:
        while True:
            ok = await self.refresh()
            if ok:
                delay = self._refresh_interval
            else:
                delay = backoff_delay(
                    self.consecutive_failures, self._retry_base, self._refresh_interval
                )
            # The floor only stops a zero interval from spinning; configure real intervals.
            await asyncio.sleep(max(_MIN_DELAY, delay * self._jitter.uniform(0.8, 1.0)))

    @property
    def _name(self) -> str:
        return f"issuer {safe_url(self.issuer.issuer)}"
