"""Receiving one SET, whichever way it came (pushed, RFC 8935, or polled, RFC 8936).

``accept`` runs the steps in this order and changes nothing until every check passed:

1. verification and claims (app/signals/set_token.py): ``invalid_request``, ``invalid_key``,
   ``invalid_issuer``, ``invalid_audience``;
2. what the transmitter may say (app/signals/effects.py): ``access_denied``; a verification
   event with a ``state`` is ``invalid_state`` (ztauthz never asks for verification, and a
   transmitter-initiated verification event carries no state, SSF §8.1.4.2);
3. the ``jti`` claimed once in the shared store (RFC 8417 §2.2 makes it unique per SET; the
   claim lasts as long as the SET's effects could): a SET seen before is refused as
   ``invalid_request`` and changes nothing (a transmitter retrying a SET whose 202 it lost
   gets that answer; the first delivery was applied);
4. the records applied to this replica's view (the next check on this replica sees them:
   answered 202 only after this), then written to the store for the other replicas.

When the store cannot be reached at step 3 the records are applied here all the same (they
only restrict), kept pending for the store, and the SET is answered 503: the transmitter
delivers it again, and that delivery is claimed and shared normally. If the store fails only
at step 4, the SET is answered 202 (its ``jti`` is claimed, a retry would be refused) and the
records wait in the pending list (app/signals/sync.py).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from opentelemetry import trace

from app.identity.jwks import JwksCache
from app.settings.signals import Transmitter
from app.signals.effects import Scope, records_for
from app.signals.errors import DuplicateSet, SetError, SetErrorCode, SetUnavailable
from app.signals.events import EventType
from app.signals.records import Record
from app.signals.set_token import VerifiedSet, verify_set
from app.signals.sync import StoreFeed
from app.store import StoreUnavailable
from app.telemetry.events import Event, Events
from app.telemetry.signals import SignalMetrics

log = logging.getLogger("ztauthz.signals")
JTI_NAMESPACE = "ssf-jti"
_tracer = trace.get_tracer("ztauthz.signals")


@dataclass(frozen=True, slots=True)
class Stream:
    """One configured transmitter, its keys and what it may speak about."""

    transmitter: Transmitter
    keys: JwksCache
    scope: Scope


@dataclass(frozen=True, slots=True)
class Accepted:
    jti: str
    types: tuple[str, ...]
    applied: int  # records new to this view
    shared: bool  # written to the store (False: pending)


class Intake:
    def __init__(
        self,
        streams: Mapping[str, Stream],
        feed: StoreFeed,
        clock: Callable[[], float],
        applied: Callable[[Record, bool], None],
        events: Events,
        metrics: SignalMetrics,
    ) -> None:
        self.streams = streams
        self._feed = feed
        self._clock = clock
        self._applied = applied
        self._events = events
        self._metrics = metrics
        self.verified_at: dict[str, float] = {}  # stream -> last verification event
        self.stream_status: dict[str, str] = {}  # stream -> status from stream-updated

    async def accept(self, name: str, raw: bytes, delivery: str) -> Accepted:
        """Accept one SET of stream ``name``; raise SetError (refused, nothing changed) or
        SetUnavailable (answer 503: deliver again)."""
        stream = self.streams[name]
        with _tracer.start_as_current_span(
            "ztauthz.signals.receive",
            attributes={"ztauthz.transmitter": name, "ztauthz.delivery": delivery},
        ) as span:
            try:
                accepted = await self._accept(stream, raw)
            except SetError as exc:
                span.set_attribute("ztauthz.set_error", exc.code.value)
                self._metrics.rejected.labels(name, exc.code.value).inc()
                self._events.emit(
                    Event.SIGNAL_REJECTED,
                    transmitter=name,
                    delivery=delivery,
                    error=exc.code.value,
                    description=exc.description,
                )
                raise
            except SetUnavailable as exc:
                span.set_attribute("ztauthz.set_error", "unavailable")
                self._metrics.rejected.labels(name, "unavailable").inc()
                log.warning("signals: SET from %s not decided now: %s", name, exc)
                raise
            span.set_attribute("ztauthz.event_types", list(accepted.types))
            return accepted

    async def _accept(self, stream: Stream, raw: bytes) -> Accepted:
        name = stream.scope.name
        now = self._clock()
        try:
            verified = await verify_set(raw, stream.transmitter, stream.keys, now)
        except SetError:
            self._metrics.received.labels(name, "unreadable").inc()
            raise
        types = tuple(event.type.value for event in verified.events)
        for kind in types:
            self._metrics.received.labels(name, kind).inc()
        records = records_for(verified, stream.scope, now)
        for event in verified.events:
            if event.type is EventType.VERIFICATION and event.state is not None:
                raise SetError(
                    SetErrorCode.INVALID_STATE, "ztauthz asked for no verification with a state"
                )
        try:
            fresh = await self._feed.store.add_once(
                JTI_NAMESPACE, _jti_key(name, verified.jti), _claim_ttl(stream.scope)
            )
        except StoreUnavailable as exc:
            self._apply(records, verified, name)
            await self._feed.publish(records)
            raise SetUnavailable(f"the shared store is unreachable ({exc})") from None
        if not fresh:
            raise DuplicateSet()
        applied = self._apply(records, verified, name)
        self._notes(verified, name)
        shared = await self._feed.publish(records)
        return Accepted(verified.jti, types, applied, shared)

    def _apply(self, records: list[Record], verified: VerifiedSet, name: str) -> int:
        now = self._clock()
        applied = 0
        for record in records:
            if self._feed.view.apply(record, now):
                applied += 1
                self._applied(record, False)
        for event in verified.events:
            self._metrics.applied.labels(name, event.type.value).inc()
            if event.type not in (
                EventType.VERIFICATION,
                EventType.STREAM_UPDATED,
                EventType.OTHER,
            ):
                self._events.emit(
                    Event.SIGNAL_APPLIED,
                    transmitter=name,
                    type=event.type.value,
                    jti=verified.jti,
                    records=len(records),
                    initiating_entity=event.initiating_entity,
                )
        return applied

    def _notes(self, verified: VerifiedSet, name: str) -> None:
        for event in verified.events:
            if event.type is EventType.VERIFICATION:
                self.verified_at[name] = self._clock()
                self._events.emit(Event.STREAM_VERIFIED, transmitter=name, jti=verified.jti)
            elif event.type is EventType.STREAM_UPDATED and event.status is not None:
                self.stream_status[name] = event.status
                self._events.emit(Event.STREAM_UPDATED, transmitter=name, status=event.status)


def _jti_key(stream: str, jti: str) -> str:
    """The store key of a SET's jti: hashed (the jti is the transmitter's choice)."""
    return hashlib.sha256(f"{stream}\x1f{jti}".encode()).hexdigest()


def _claim_ttl(scope: Scope) -> float:
    return max(scope.token_lifetime, scope.device_ttl, 3600.0)
