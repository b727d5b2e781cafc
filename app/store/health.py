"""Whether the shared store answers, as every feature that uses it and readiness see it.

The state changes on evidence: an operation that raised ``StoreUnavailable`` marks the store
down at once, a success (or a periodic ``ping``, every ``store.health_interval``) marks it up.
Each change is one event (``store_unavailable`` / ``store_recovered``); failures are counted by
operation (``ztauthz_store_failures_total``) and ``ztauthz_store_up`` shows the state.
Readiness turns false once the store has been down for ``store.unready_after``: a blip does not
take every replica out of service at once, an outage does (and /readyz always says which).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from app import tasks
from app.store import SharedStore, StoreUnavailable

log = logging.getLogger("ztauthz.store")


@dataclass(frozen=True, slots=True)
class StoreStatus:
    backend: str
    up: bool
    down_since: float | None  # epoch seconds of the first failure of the current outage
    last_error: str | None  # the operation and error class (never a key or a secret)


class StoreHealth:
    def __init__(
        self,
        store: SharedStore,
        clock: Callable[[], float],
        *,
        interval: float,
        unready_after: float,
        on_change: Callable[[bool, str | None], None] | None = None,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        """``on_change(up, error)`` on every transition; ``on_failure(operation)`` on every
        failed operation."""
        self._store = store
        self._clock = clock
        self._interval = interval
        self._unready_after = unready_after
        self._on_change = on_change
        self._on_failure = on_failure
        self._down_since: float | None = None
        self._last_error: str | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def up(self) -> bool:
        return self._down_since is None

    def status(self) -> StoreStatus:
        return StoreStatus(self._store.backend, self.up, self._down_since, self._last_error)

    def ready(self, now: float) -> bool:
        return self._down_since is None or now - self._down_since < self._unready_after

    def failed(self, operation: str, error: StoreUnavailable) -> None:
        self._last_error = str(error)[:200]
        if self._on_failure is not None:
            self._on_failure(operation)
        if self._down_since is None:
            self._down_since = self._clock()
            log.warning("shared store unavailable (%s): %s", operation, self._last_error)
            if self._on_change is not None:
                self._on_change(False, self._last_error)

    def succeeded(self) -> None:
        if self._down_since is not None:
            self._down_since = None
            log.info("shared store available again")
            if self._on_change is not None:
                self._on_change(True, None)

    async def check(self) -> None:
        try:
            await self._store.ping()
        except StoreUnavailable as exc:
            self.failed("ping", exc)
        else:
            self.succeeded()

    async def start(self) -> None:
        await self.check()
        self._task = asyncio.create_task(self._watch(), name="ztauthz-store-health")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.check()

    async def aclose(self) -> None:
        await tasks.stop(self._task)
        self._task = None
