"""Continuous access evaluation in one runtime: the view, the store feed, the transmitters'
streams, the intake and the operator's kill switch, built from ``signals`` settings.

The Runtime (app/state.py) owns one ``Signals``: the check path reads ``view`` (always
present; empty and free when nothing is configured), the receiver (app/signals/receiver.py),
the poller (app/signals/poll.py) and the admin API (app/signals/admin.py) feed it.
``invalidate`` is the runtime's: it drops what caches could hold an allow for a record's
subject, session or device (the verified-token cache, the decision memo) when a record is
applied here, whether received here or heard from another replica.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

import httpx

from app.identity.jwks import RefreshObserver
from app.reasons import Reason
from app.settings import Issuer, Settings
from app.settings.signals import Transmitter
from app.signals.effects import Scope
from app.signals.events import EventType
from app.signals.intake import Intake, Stream
from app.signals.keys import transmitter_keys
from app.signals.poll import Poller
from app.signals.records import Effect, Record
from app.signals.sync import StoreFeed
from app.signals.view import RevocationView
from app.store import SharedStore
from app.telemetry.events import Event, Events
from app.telemetry.signals import SignalMetrics, SignalsView

log = logging.getLogger("ztauthz.signals")


class RevokeError(ValueError):
    """An operator revocation that names nothing (or something unknown)."""


@dataclass(frozen=True, slots=True)
class Revocation:
    """What the kill switch did: the records applied, and whether the store has them."""

    id: str
    records: tuple[Record, ...]
    shared: bool


def token_lifetime(issuers: Sequence[Issuer]) -> float:
    """How long after an event a token it could refuse may still be valid: the longest
    ``max_token_lifetime`` plus twice the leeway (``iat`` may lie ahead by one, ``exp`` be
    accepted late by the other)."""
    return (
        max((i.max_token_lifetime + 2 * i.leeway).total_seconds() for i in issuers)
        if issuers
        else 0.0
    )


def bound_issuers(transmitter: Transmitter, issuers: Sequence[Issuer]) -> tuple[str, ...]:
    known = {issuer.issuer for issuer in issuers}
    named = transmitter.issuers
    if named is None:
        named = [transmitter.issuer] if transmitter.issuer in known else []
    return tuple(named)


OPERATOR = "operator"  # the event type of the kill switch's records


def operator_record(
    effect: Effect,
    key: str,
    action: str,
    now: float,
    until: float,
    also: tuple[tuple[str, ...], ...] = (),
) -> Record:
    device = effect is Effect.DEVICE
    return Record(
        effect=effect,
        key=key,
        at=now,
        until=until,
        event=OPERATOR,
        origin="admin",
        id=action,
        written=now,
        also=also,
        reason=Reason.DEVICE_REVOKED if device else Reason.ACCESS_REVOKED,
        compliant=False if device else None,
    )


class Signals:
    def __init__(
        self,
        settings: Settings,
        store: SharedStore,
        client: httpx.AsyncClient,
        events: Events,
        metrics: SignalMetrics,
        clock: Callable[[], float] = time.time,
        on_refresh: RefreshObserver | None = None,
    ) -> None:
        config = settings.signals
        self.settings = config
        self._issuers = {issuer.issuer: issuer for issuer in settings.issuers}
        self._clock = clock
        self._events = events
        self._metrics = metrics
        self.invalidate: Callable[[Record], None] = lambda record: None
        self.view = RevocationView()
        self.feed = StoreFeed(
            store,
            self.view,
            clock,
            resync_interval=config.resync_interval.total_seconds(),
            grace=config.store_grace.total_seconds(),
            on_applied=self._applied,
            on_health=self._health,
        )
        streams: dict[str, Stream] = {}
        device_ttl = config.device_state_ttl.total_seconds()
        for transmitter in config.transmitters:
            bound = bound_issuers(transmitter, settings.issuers)
            scope = Scope(
                name=transmitter.name,
                issuers=bound,
                token_lifetime=token_lifetime([self._issuers[i] for i in bound]),
                device_ttl=device_ttl,
                events=None
                if transmitter.events is None
                else frozenset(EventType(e) for e in transmitter.events),
                stream_id=transmitter.stream_id,
            )
            keys = transmitter_keys(transmitter, client, clock, on_refresh)
            streams[transmitter.name] = Stream(transmitter, keys, scope)
        self.streams: Mapping[str, Stream] = streams
        self.intake = Intake(streams, self.feed, clock, self._applied, events, metrics)
        self.pollers = [
            Poller(t.name, t.poll, self.intake, client)
            for t in config.transmitters
            if t.poll is not None
        ]
        metrics.watch(lambda: SignalsView(self.feed.up, len(self.view), self.feed.pending))

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        for stream in self.streams.values():
            await stream.keys.start()
        await self.feed.start()
        for poller in self.pollers:
            await poller.start()

    async def aclose(self) -> None:
        for poller in self.pollers:
            await poller.aclose()
        await self.feed.aclose()
        for stream in self.streams.values():
            await stream.keys.aclose()

    def ready(self) -> bool:
        return self.feed.ready()

    def status(self) -> dict[str, object]:
        """Readiness detail (/readyz)."""
        feed = self.feed
        return {
            "ready": feed.ready(),
            "store": feed.store.backend,
            "store_up": feed.up,
            "store_error": feed.last_error,
            "records": len(self.view),
            "pending": feed.pending,
            "streams": {
                name: {
                    "keys_loaded": stream.keys.is_ready(self._clock()),
                    "verified_at": self.intake.verified_at.get(name),
                    "status": self.intake.stream_status.get(name, "enabled"),
                }
                for name, stream in self.streams.items()
            },
        }

    # -- applied records ---------------------------------------------------------------------

    def _applied(self, record: Record, heard: bool) -> None:
        if heard:
            self._metrics.propagation.observe(max(0.0, self._clock() - record.written))
        try:
            self.invalidate(record)
        except Exception:
            log.exception("signals: cache invalidation failed")

    def _health(self, up: bool, error: str | None) -> None:
        if up:
            self._events.emit(Event.SIGNALS_STORE_RECOVERED, store=self.feed.store.backend)
        else:
            self._events.emit(
                Event.SIGNALS_STORE_UNREACHABLE,
                store=self.feed.store.backend,
                error=error,
                grace_seconds=self.settings.store_grace.total_seconds(),
            )

    # -- the kill switch ---------------------------------------------------------------------

    async def revoke(
        self,
        *,
        subject: str | None = None,
        issuer: str | None = None,
        session: str | None = None,
        device: str | None = None,
        duration: timedelta | None = None,
        reason: str | None = None,
    ) -> Revocation:
        """The operator's revocation: tokens of ``subject`` (or of ``session``) issued until
        now are refused (401 ``access_revoked``) and/or requests with ``device``'s evidence
        are refused (403 ``device_revoked``) for ``duration`` (``device_state_ttl``)."""
        if subject is None and session is None and device is None:
            raise RevokeError("name a subject, a session or a device")
        if issuer is not None and issuer not in self._issuers:
            raise RevokeError("issuer is not a configured token issuer")
        now = self._clock()
        action = "op-" + secrets.token_hex(8)
        issuers = [issuer] if issuer is not None else list(self._issuers)
        lifetime = token_lifetime([self._issuers[i] for i in issuers])
        records: list[Record] = []
        if subject is not None or session is not None:
            prefix, value = ("s", session) if session is not None else ("u", subject)
            also = (tuple(f"u|{i}|{subject}" for i in issuers),) if session and subject else ()
            records += [
                operator_record(
                    Effect.REVOKE, f"{prefix}|{i}|{value}", action, now, now + lifetime, also
                )
                for i in issuers
            ]
        if device is not None:
            ttl = (duration or self.settings.device_state_ttl).total_seconds()
            records.append(operator_record(Effect.DEVICE, f"d|{device}", action, now, now + ttl))
        for record in records:
            if self.view.apply(record, now):
                self._applied(record, False)
        shared = await self.feed.publish(records)
        self._events.emit(
            Event.ACCESS_REVOKED,
            action=action,
            subject=subject,
            issuer=issuer,
            session=None if session is None else "given",
            device=device,
            reason=reason,
            shared=shared,
        )
        return Revocation(action, tuple(records), shared)
