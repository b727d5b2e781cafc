"""Token introspection (RFC 7662) for one issuer: from a token to a Principal, or a TokenError.

``Introspector.introspect(token, now, max_age)``:

1. the answer cache (app/identity/introspection_cache.py), by the token's SHA-256: an active
   answer gives its Principal, an inactive one ``token_inactive``;
2. else the introspection already in flight for the same digest, if any: concurrent checks of
   one token cost one request to the authorization server (shielded: one caller giving up
   does not cancel the others' answer);
3. else a new introspection, unless ``max_in_flight`` are already running: then the check is
   refused at once with ``introspection_unavailable`` rather than queued;
4. the endpoint: configured, or the discovery document's ``introspection_endpoint``
   (RFC 8414 §2, fetched in the background at start, retried at most every
   ``DISCOVERY_RETRY`` seconds while it fails);
5. the question (app/identity/introspection_client.py) and the answer's checks
   (app/identity/introspection_response.py).

Fail closed: no endpoint, no answer, an unusable answer -> ``introspection_unavailable``
(503: ztauthz cannot decide; a 401 would tell the client its token is bad and send it to the
authorization server for a new one, which is down). Nothing that failed is remembered.

Every outcome is reported to ``on_outcome`` (telemetry: a counter by outcome, the latency of
each question, an event when the endpoint starts or stops failing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import httpx

from app.identity.discovery import KeyFetchError, fetch_endpoint, safe_url
from app.identity.errors import TokenError
from app.identity.introspection_cache import Answer, IntrospectionCache, remembered_until
from app.identity.introspection_client import IntrospectionClient
from app.identity.introspection_response import IntrospectionError, answer_principal
from app.identity.principal import Principal
from app.identity.token_cache import token_digest
from app.reasons import Reason
from app.settings import Issuer

log = logging.getLogger("ztauthz.introspection")

DISCOVERY_RETRY = 5.0  # seconds between discovery attempts while the endpoint is unknown
DISCOVERY_MAX_BYTES = 512 * 1024
ENDPOINT_MEMBER = "introspection_endpoint"
# The closed set of outcomes (metric label values).
ACTIVE: Final = "active"  # asked; the token is active and passed every check
INACTIVE: Final = "inactive"  # asked; active: false
REFUSED: Final = "refused"  # asked; active, but its claims were refused (a token_* reason)
ERROR: Final = "error"  # no usable answer (endpoint unknown, unreachable, bad answer)
OVERLOADED: Final = "overloaded"  # max_in_flight questions were already waiting
CACHED: Final = "cached"  # answered from the cache
COALESCED: Final = "coalesced"  # joined the question already in flight for the same token
OUTCOMES: Final = (ACTIVE, INACTIVE, REFUSED, ERROR, OVERLOADED, CACHED, COALESCED)


@dataclass(frozen=True, slots=True)
class IntrospectionOutcome:
    """One introspection as telemetry sees it (no token, no subject)."""

    issuer: str
    outcome: str  # one of OUTCOMES
    seconds: float | None = None  # the question's duration, when one was asked
    error: str | None = None  # what failed, for operators
    # The endpoint went from answering to failing (outcome error) or back (any other outcome).
    changed: bool = False


OutcomeObserver = Callable[[IntrospectionOutcome], None]


class Introspector:
    """Introspects tokens of one issuer. ``start`` resolves the endpoint in the background."""

    def __init__(
        self,
        issuer: Issuer,
        client: IntrospectionClient,
        discovery_client: httpx.AsyncClient,
        clock: Callable[[], float],
        on_outcome: OutcomeObserver | None = None,
    ) -> None:
        settings = issuer.introspection
        if settings is None:
            raise ValueError(f"issuer {issuer.issuer} has no introspection settings")
        self.issuer = issuer
        self.settings = settings
        self._client = client
        self._discovery_client = discovery_client
        self._clock = clock
        self._on_outcome = on_outcome
        self._ttl = settings.cache_ttl.total_seconds()
        self.high_risk_max_age = settings.high_risk_max_age.total_seconds()
        self.cache = IntrospectionCache(settings.cache_size)
        self._inflight: dict[bytes, asyncio.Task[Principal]] = {}
        self._endpoint: str | None = settings.endpoint
        self._discovery: asyncio.Task[str | None] | None = None
        self._last_discovery: float | None = None
        self._failing = False
        self.asked = 0  # questions sent (tests, logs)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._endpoint is None:
            self._discover()

    async def aclose(self) -> None:
        tasks = [*self._inflight.values(), self._discovery]
        for task in tasks:
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, TokenError):
                    await task
        self._inflight.clear()
        await self._client.aclose()

    @property
    def endpoint(self) -> str | None:
        """The endpoint asked, once known."""
        return self._endpoint

    # -- introspection ---------------------------------------------------------------------

    async def introspect(self, token: str, now: float, max_age: float | None = None) -> Principal:
        """The Principal of an active ``token``, or TokenError (token_inactive, a token_*
        reason for refused claims, introspection_unavailable when no answer can be had)."""
        digest = token_digest(token)
        cached = self.cache.lookup(digest, now, max_age)
        if cached is not None:
            self._report(CACHED)
            if cached.principal is None:
                raise TokenError(Reason.TOKEN_INACTIVE, "the issuer said the token is not active")
            return cached.principal
        task = self._inflight.get(digest)
        if task is not None:
            self._report(COALESCED)
        else:
            if len(self._inflight) >= self.settings.max_in_flight:
                self._report(OVERLOADED)
                raise TokenError(
                    Reason.INTROSPECTION_UNAVAILABLE,
                    f"{self.settings.max_in_flight} introspections already in flight",
                )
            task = asyncio.create_task(self._ask(token, digest, now))
            self._inflight[digest] = task
            task.add_done_callback(lambda _: self._inflight.pop(digest, None))
        return await asyncio.shield(task)

    async def _ask(self, token: str, digest: bytes, now: float) -> Principal:
        started = time.perf_counter()
        try:
            endpoint = await self._known_endpoint()
            self.asked += 1
            document = await self._client.ask(endpoint, token)
            principal = answer_principal(document, token, self.issuer, now)
        except IntrospectionError as exc:
            self._failed(str(exc), time.perf_counter() - started)
            raise TokenError(Reason.INTROSPECTION_UNAVAILABLE, str(exc)) from None
        except TokenError as exc:
            seconds = time.perf_counter() - started
            recovered = self._answered()
            if exc.reason is Reason.TOKEN_INACTIVE:
                self.cache.store(digest, Answer(None, now, now + self._ttl))
                self._report(INACTIVE, seconds, changed=recovered)
            else:
                self._report(REFUSED, seconds, changed=recovered)
            raise
        recovered = self._answered()
        self._report(ACTIVE, time.perf_counter() - started, changed=recovered)
        until = remembered_until(principal, now, self._ttl)
        self.cache.store(digest, Answer(principal, now, until))
        return principal

    # -- the endpoint ----------------------------------------------------------------------

    async def _known_endpoint(self) -> str:
        if self._endpoint is not None:
            return self._endpoint
        task = self._discover()
        endpoint = None if task is None else await asyncio.shield(task)
        if endpoint is None:
            raise IntrospectionError(
                f"the introspection endpoint of {safe_url(self.issuer.issuer)} is not known "
                "(discovery failed)"
            )
        return endpoint

    def _discover(self) -> asyncio.Task[str | None] | None:
        """The discovery in flight, a new one, or None while retries are paused."""
        task = self._discovery
        if task is not None and not task.done():
            return task
        now = self._clock()
        if self._last_discovery is not None and now - self._last_discovery < DISCOVERY_RETRY:
            return None
        self._last_discovery = now
        self._discovery = asyncio.create_task(self._fetch_endpoint())
        return self._discovery

    async def _fetch_endpoint(self) -> str | None:
        timeout = self.settings.timeout.total_seconds()
        try:
            endpoint = await fetch_endpoint(
                self._discovery_client,
                self.issuer.issuer,
                ENDPOINT_MEMBER,
                timeout,
                DISCOVERY_MAX_BYTES,
            )
        except KeyFetchError as exc:
            log.warning("introspection endpoint discovery failed: %s", exc)
            return None
        self._endpoint = endpoint
        log.info(
            "introspection endpoint of %s: %s", safe_url(self.issuer.issuer), safe_url(endpoint)
        )
        return endpoint

    # -- telemetry -------------------------------------------------------------------------

    def _failed(self, error: str, seconds: float) -> None:
        changed = not self._failing
        self._failing = True
        if changed:
            log.warning("introspection failing: %s", error)
        self._report(ERROR, seconds, error, changed)

    def _answered(self) -> bool:
        """Note an answer; True when the endpoint had been failing until now."""
        if not self._failing:
            return False
        self._failing = False
        log.info("introspection at %s answers again", safe_url(self.issuer.issuer))
        return True

    def _report(
        self,
        outcome: str,
        seconds: float | None = None,
        error: str | None = None,
        changed: bool = False,
    ) -> None:
        if self._on_outcome is not None:
            self._emit(IntrospectionOutcome(self.issuer.issuer, outcome, seconds, error, changed))

    def _emit(self, outcome: IntrospectionOutcome) -> None:
        assert self._on_outcome is not None
        try:
            self._on_outcome(outcome)
        except Exception:
            log.exception("introspection observer failed")
