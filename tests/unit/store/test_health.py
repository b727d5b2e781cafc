"""Store health: down on the first failure (one event), up on the next success (one event),
every failure counted, readiness only after ``unready_after``; the periodic ping does both."""

from __future__ import annotations

import asyncio

from app.store import StoreUnavailable
from app.store.health import StoreHealth
from app.store.memory import MemoryStore


class Flaky(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def ping(self) -> None:
        if self.down:
            raise StoreUnavailable("redis ping: ConnectionError: refused")


async def test_transitions_are_events_and_failures_are_counted() -> None:
    now = [100.0]
    changes: list[tuple[bool, str | None]] = []
    failures: list[str] = []
    store = Flaky()
    health = StoreHealth(
        store,
        lambda: now[0],
        interval=0.01,
        unready_after=30.0,
        on_change=lambda up, error: changes.append((up, error)),
        on_failure=failures.append,
    )
    await health.check()
    assert health.status().up and changes == [] and failures == []
    store.down = True
    await health.check()
    await health.check()
    assert not health.status().up
    assert changes == [(False, "redis ping: ConnectionError: refused")]
    assert failures == ["ping", "ping"]
    assert health.status().down_since == 100.0 and health.ready(129.9)
    now[0] = 130.0
    assert not health.ready(now[0])
    store.down = False
    await health.check()
    assert health.status().up and health.ready(now[0]) and changes[-1] == (True, None)
    assert health.status().last_error is not None  # the last error stays for /readyz


async def test_the_watch_pings_until_closed() -> None:
    store = Flaky()
    health = StoreHealth(store, lambda: 0.0, interval=0.01, unready_after=30.0)
    await health.start()
    store.down = True
    for _ in range(200):
        if not health.status().up:
            break
        await asyncio.sleep(0.01)
    assert not health.status().up
    await health.aclose()
    assert health.status().backend == "memory"
