"""Keeping every replica's revocation view current through the shared store.

A record applied here is written to the store (``put``: the record and its announcement), and
every replica, this one included, hears it on the store's ``changes`` stream and applies it
to its own view; applying is idempotent, so hearing one's own record again changes nothing.
The stream is subscribed *before* the full ``records`` read, so nothing written in between is
missed (app/store/__init__.py); the full read is repeated every ``resync_interval`` to heal a
change lost on the way (a subscription that fell behind, a reconnect).

When the store is unreachable:

- the view is kept: every revocation already known stays enforced (a Redis outage must not
  undo a kill switch); records keep expiring on their own ``until``;
- records applied meanwhile (pushed events, the kill switch) are kept in a pending list and
  written once the store answers again, so other replicas learn them late rather than never;
- after ``grace`` without the store, ``ready`` turns false: /readyz answers 503, so an
  orchestrator moves traffic to replicas that still hear about new revocations, while this one
  keeps deciding with what it knows (refusing every request would turn a Redis outage into an
  outage of every upstream);
- the first failure emits ``signals_store_unreachable``, the first success after it
  ``signals_store_recovered``; ``ztauthz_signals_store_up`` shows the state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from app import tasks
from app.signals.records import NAMESPACE, Record, RecordError, decode, encode
from app.signals.view import RevocationView
from app.store import SharedStore, StoreUnavailable

log = logging.getLogger("ztauthz.signals")

_RETRY_MIN = 0.2  # seconds before re-subscribing after a failure, doubled up to _RETRY_MAX
_RETRY_MAX = 5.0
_MAX_PENDING = 100_000

Applied = Callable[[Record, bool], None]  # (record, heard from the store) after a new apply
Health = Callable[[bool, str | None], None]  # (store up, error) on every change of state


class StoreFeed:
    """Feeds ``view`` from ``store`` and writes this replica's records to it."""

    def __init__(
        self,
        store: SharedStore,
        view: RevocationView,
        clock: Callable[[], float] = time.time,
        *,
        resync_interval: float = 30.0,
        grace: float = 30.0,
        on_applied: Applied | None = None,
        on_health: Health | None = None,
        on_rejected: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.view = view
        self._clock = clock
        self._resync = resync_interval
        self._grace = grace
        self._on_applied = on_applied
        self._on_health = on_health
        self._on_rejected = on_rejected
        self._pending: dict[str, Record] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.up: bool | None = None  # None until the first answer
        self.down_since: float | None = None  # monotonic
        self.synced_at: float | None = None  # wall clock of the last full read
        self.last_error: str | None = None
        self.synced = asyncio.Event()  # set after the first full read

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._follow(), name="signals store changes"),
                asyncio.create_task(self._heal(), name="signals store resync"),
            ]

    async def aclose(self) -> None:
        for task in self._tasks:
            await tasks.stop(task)
        self._tasks = []

    def ready(self) -> bool:
        """False once the store has been unreachable for longer than ``grace``."""
        since = self.down_since
        return since is None or time.monotonic() - since <= self._grace

    @property
    def pending(self) -> int:
        return len(self._pending)

    # -- writing -----------------------------------------------------------------------------

    async def publish(self, records: list[Record]) -> bool:
        """Write ``records`` (already applied to this view); True when the store has them all.
        What could not be written stays pending and is written when the store answers again."""
        for record in records:
            if len(self._pending) < _MAX_PENDING:
                self._pending[record.store_key] = record
            else:
                log.error("signals: %d records wait for the store; dropping one", _MAX_PENDING)
        return await self._flush()

    async def _flush(self) -> bool:
        now = self._clock()
        for store_key, record in list(self._pending.items()):
            ttl = record.until - now
            if ttl > 0.001:
                try:
                    await self.store.put(NAMESPACE, store_key, encode(record), ttl)
                except StoreUnavailable as exc:
                    self._down(str(exc))
                    return False
            self._pending.pop(store_key, None)
        return True

    # -- reading -----------------------------------------------------------------------------

    def apply_raw(self, raw: bytes, *, heard: bool) -> Record | None:
        """Decode and apply one stored record; the record when it was new to the view."""
        try:
            record = decode(raw)
        except RecordError as exc:
            log.warning("signals: ignoring an unreadable stored record: %s", exc)
            if self._on_rejected is not None:
                self._on_rejected("unreadable")
            return None
        if not self.view.apply(record, self._clock()):
            return None
        if self._on_applied is not None:
            self._on_applied(record, heard)
        return record

    async def sync_once(self) -> None:
        """One full read of the store into the view (raises StoreUnavailable)."""
        found = await self.store.records(NAMESPACE)
        for raw in found.values():
            self.apply_raw(raw, heard=True)
        self.view.sweep(self._clock())
        self.synced_at = self._clock()
        self.synced.set()

    async def _follow(self) -> None:
        delay = _RETRY_MIN
        while True:
            try:
                stream = await self.store.changes(NAMESPACE)
                try:
                    await self.sync_once()
                    self._up()
                    await self._flush()
                    delay = _RETRY_MIN
                    async for change in stream:
                        self.apply_raw(change.value, heard=True)
                finally:
                    with contextlib.suppress(StoreUnavailable):
                        await stream.aclose()
            except StoreUnavailable as exc:
                self._down(str(exc))
            except Exception:
                log.exception("signals: following the store failed; subscribing again")
            await asyncio.sleep(delay)
            delay = min(_RETRY_MAX, delay * 2)

    async def _heal(self) -> None:
        while True:
            await asyncio.sleep(self._resync)
            try:
                await self.sync_once()
                self._up()
                await self._flush()
            except StoreUnavailable as exc:
                self._down(str(exc))
            except Exception:
                log.exception("signals: re-reading the store failed")

    # -- health ------------------------------------------------------------------------------

    def _up(self) -> None:
        if self.up is not True:
            self.up = True
            self.down_since = None
            self.last_error = None
            if self._on_health is not None:
                self._on_health(True, None)

    def _down(self, error: str) -> None:
        self.last_error = error
        if self.up is not False:
            self.up = False
            self.down_since = time.monotonic()
            log.warning(
                "signals: the shared store is unreachable (%s); enforcing what is known", error
            )
            if self._on_health is not None:
                self._on_health(False, error)
