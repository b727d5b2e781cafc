"""Signing the assertion on every allow, cheaply, and keeping its keys current.

``AssertionSigner.attach`` runs on every allowed check (``Checker.check``). A signature costs
several times a cached decision (``make bench`` measures it: bench/README.md), so a signed
assertion is reused for the next allows with the same claims: the same principal (as verified:
issuer, subject, groups, scopes, client, authentication strength, token expiry), audience,
evidence, policy version, rule, policy, grants and signing key. It is reused only while more
than half of its lifetime is left, so an upstream never receives one about to expire, let alone
an expired one; an assertion never outlives the token it was made from.

What that costs, honestly: with reuse, ``jti`` and ``decision.id`` identify the *assertion*
(minted by one decision, then carried by the allows that reuse it), not each request; an
upstream that needs a per-request identifier reads ``x-auth-decision-id``, which is always this
request's own. ``cache_size: 0`` signs every allow, and then ``jti`` and ``decision.id`` are
per request. The cache is bounded: when full it starts again empty.

The keys are re-read when their files change (every ``reload_interval``: read in a worker
thread, put in force on the event loop, where ``attach`` runs, so the keys in force only ever
change in one thread); a bad change keeps the keys in force and is reported
(``assertion_keys_rejected``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Protocol

import jwt

from app import tasks
from app.assertion.audience import Audiences
from app.assertion.claims import assertion_claims
from app.assertion.keys import KeyFileError, KeyRing, SigningKey, load_keys
from app.decision import Decision, SignedAssertion
from app.fileprint import Fingerprint, fingerprint
from app.request import RequestContext
from app.settings import AssertionSettings, ConfigError
from app.telemetry.events import Event, FieldValue

log = logging.getLogger("ztauthz.assertion")

# Explicit typing (RFC 8725 §3.11): a verifier can tell this JWT from any other the same key
# might ever sign, and refuse an access token or ID token presented in its place.
ASSERTION_TYPE = "ztauthz-assertion+jwt"


class EventSink(Protocol):
    def __call__(self, event: Event, /, **fields: FieldValue) -> None: ...


@dataclass(frozen=True, slots=True)
class _Current:
    """The keys in force and the one signing, until ``until`` (then chosen again)."""

    ring: KeyRing
    signer: SigningKey
    until: float


@dataclass(frozen=True, slots=True)
class _Signed:
    assertion: SignedAssertion
    issued_at: int  # reuse from this moment (a clock set back never hands out a future iat) ...
    refresh_at: float  # ... until this one: half the lifetime


@dataclass(slots=True)
class Counts:
    """Assertions handed out: signed for the allow at hand, or reused (plain integers: the
    check path locks nothing; metrics read them at scrape time)."""

    signed: int = 0
    reused: int = 0


def _log_event(event: Event, /, **fields: FieldValue) -> None:
    """The sink without telemetry (tests, tools): one log line."""
    log.info(event.value.replace("_", " "), extra={"event": event.value, **fields})


class AssertionSigner:
    """The assertion for allowed decisions, its keys, and their JWKS."""

    def __init__(
        self,
        settings: AssertionSettings,
        ring: KeyRing,
        seen: Fingerprint = (),
        *,
        emit: EventSink = _log_event,
        clock: Callable[[], float] = time.time,
    ) -> None:
        assert settings.issuer is not None and settings.audience is not None
        self.settings = settings
        self.header = settings.header
        self._issuer = settings.issuer
        self._lifetime = int(settings.lifetime.total_seconds())
        self._delay = settings.signing_delay.total_seconds()
        self._audiences = Audiences(settings.audience, settings.routes)
        self._cache_size = settings.cache_size
        self._cache: dict[Hashable, _Signed] = {}
        self.counts = Counts()
        self._emit = emit
        self._clock = clock
        self._seen = seen
        self._current = self._choose(ring, clock())
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def load(
        cls,
        settings: AssertionSettings,
        *,
        emit: EventSink = _log_event,
        clock: Callable[[], float] = time.time,
    ) -> AssertionSigner:
        """Read the keys ``settings.keys`` names; ``ConfigError`` with one line naming the
        file when one cannot sign (``ztauthz serve`` then exits 2)."""
        assert settings.keys is not None
        seen = fingerprint(settings.keys)
        try:
            ring = KeyRing.of(load_keys(settings.keys))
        except KeyFileError as exc:
            raise ConfigError([f"assertion.keys: {exc}"]) from None
        return cls(settings, ring, seen, emit=emit, clock=clock)

    # --- the hot path --------------------------------------------------------------------------

    def attach(self, decision: Decision, ctx: RequestContext, now: float) -> Decision:
        """``decision`` (an allow) carrying its signed assertion."""
        current = self._current
        if now >= current.until:
            current = self._current = self._choose(current.ring, now)
        audience = self._audiences.for_request(ctx.host, ctx.path)
        key = self._cache_key(decision, audience, current.signer.kid)
        signed = self._cache.get(key)
        if signed is not None and signed.issued_at <= now < signed.refresh_at:
            self.counts.reused += 1
        else:
            self.counts.signed += 1
            signed = self._sign(decision, audience, current.signer, now)
            if self._cache_size:
                if len(self._cache) >= self._cache_size:
                    self._cache = {}
                self._cache[key] = signed
        return decision.with_assertion(signed.assertion)

    @staticmethod
    def _cache_key(decision: Decision, audience: str, kid: str) -> Hashable:
        """Everything the claims depend on but ``iat``, ``exp``, ``jti`` and ``decision.id``."""
        principal = decision.principal
        identity = (
            None
            if principal is None
            else (
                principal.issuer,
                principal.subject,
                principal.groups,
                principal.scopes,
                principal.client_id,
                principal.acr,
                principal.amr,
                principal.auth_time,
                principal.expires_at,
            )
        )
        return (
            audience,
            kid,
            identity,
            decision.evidence,
            decision.policy_version,
            decision.rule_id,
            decision.policy,
            decision.grants,
        )

    def _sign(self, decision: Decision, audience: str, key: SigningKey, now: float) -> _Signed:
        issued_at = int(now)
        expires_at = issued_at + self._lifetime
        principal = decision.principal
        if principal is not None:
            # Never valid longer than the token it was made from (at least one second).
            expires_at = min(expires_at, max(principal.expires_at, issued_at + 1))
        claims = assertion_claims(
            decision,
            issuer=self._issuer,
            audience=audience,
            issued_at=issued_at,
            expires_at=expires_at,
            jti=secrets.token_hex(16),
        )
        token = jwt.encode(
            claims,
            key.private_key,
            algorithm=key.algorithm,
            headers={"kid": key.kid, "typ": ASSERTION_TYPE},
        )
        return _Signed(
            SignedAssertion(self.header, token),
            issued_at,
            issued_at + (expires_at - issued_at) / 2,
        )

    # --- keys ------------------------------------------------------------------------------------

    def _choose(self, ring: KeyRing, now: float) -> _Current:
        signer, until = ring.signer(now, self._delay)
        previous = getattr(self, "_current", None)
        if previous is not None and previous.signer.kid != signer.kid:
            self._emit(Event.ASSERTION_SIGNING_KEY_CHANGED, kid=signer.kid)
        return _Current(ring, signer, until)

    def jwks(self) -> tuple[bytes, str]:
        """The JWKS document (every key, RFC 7517 §5) and its ETag."""
        ring = self._current.ring
        return ring.jwks, ring.etag

    def read_keys(self) -> tuple[Fingerprint, KeyRing | KeyFileError] | None:
        """The key files read again if they changed since last read (None if not): file I/O
        only, safe in another thread. ``apply`` puts the result in force."""
        assert self.settings.keys is not None
        seen = fingerprint(self.settings.keys)
        if seen == self._seen:
            return None
        try:
            return seen, KeyRing.of(load_keys(self.settings.keys))
        except KeyFileError as exc:
            return seen, exc

    def apply(self, seen: Fingerprint, found: KeyRing | KeyFileError, now: float) -> bool:
        """Put keys ``read_keys`` found in force; True when they are. Runs on the event loop,
        like ``attach``: the keys in force change in one thread only. A change that does not
        load keeps the keys in force (reported once per change)."""
        self._seen = seen
        if isinstance(found, KeyFileError):
            self._emit(Event.ASSERTION_KEYS_REJECTED, problem=str(found))
            return False
        self._current = self._choose(found, now)
        self._cache = {}  # a fresh start; the signing key is part of every key anyway
        self._emit(
            Event.ASSERTION_KEYS_RELOADED, kids=found.kids(), signing_kid=self._current.signer.kid
        )
        return True

    def reload(self, now: float | None = None) -> bool:
        """``read_keys`` then ``apply``, in this thread (tests, tools)."""
        read = self.read_keys()
        return read is not None and self.apply(*read, self._clock() if now is None else now)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._watch(), name="assertion-keys")

    async def _watch(self) -> None:
        interval = self.settings.reload_interval.total_seconds()
        while True:
            await asyncio.sleep(interval)
            try:
                read = await asyncio.to_thread(self.read_keys)
                if read is not None:
                    self.apply(*read, self._clock())
            except Exception:  # never let the watcher die: the keys in force keep signing
                log.exception("assertion keys: reload failed")

    async def aclose(self) -> None:
        await tasks.stop(self._task)
        self._task = None
