"""The embedded store: one process, bounded memory, records dropped when their ttl is up.

Right for a single replica (and for tests). Expiry is lazy: every write first drops what has
expired (a heap ordered by expiry makes that proportional to what is dropped), and reads skip
expired records. When ``max_entries`` live records are held, a new one is refused with
``StoreUnavailable`` instead of evicting a live one: evicting a replay-cache entry would let
that proof be replayed, evicting a revocation would let a revoked token in again. The caller
fails closed and the operator sees the event; raise ``store.memory.max_entries`` or move to
Redis.

``changes`` subscribers get an in-process queue each, bounded: a subscriber that falls more
than ``queue_size`` changes behind has its stream ended (it re-reads ``records``) rather than
growing the queue without limit.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable

from app.store import Change, StoreUnavailable, check_name, check_ttl

_ENDED = object()  # queued to a subscriber whose stream is over


class _Stream:
    """One subscriber's view of ``put``s in one namespace."""

    def __init__(self, store: MemoryStore, namespace: str, queue_size: int) -> None:
        self._store = store
        self.namespace = namespace
        self.queue: asyncio.Queue[Change | object] = asyncio.Queue(queue_size + 1)
        self._limit = queue_size
        self.closed = False

    def offer(self, change: Change) -> None:
        if self.closed:
            return
        if self.queue.qsize() >= self._limit:
            self.end()  # too far behind: the consumer re-reads records()
            return
        self.queue.put_nowait(change)

    def end(self) -> None:
        if not self.closed:
            self.closed = True
            self._store.unsubscribe(self)
            self.queue.put_nowait(_ENDED)

    def __aiter__(self) -> _Stream:
        return self

    async def __anext__(self) -> Change:
        item = await self.queue.get()
        if item is _ENDED:
            self.queue.put_nowait(_ENDED)  # every later __anext__ ends too
            raise StopAsyncIteration
        assert isinstance(item, Change)
        return item

    async def aclose(self) -> None:
        self.end()


class MemoryStore:
    def __init__(
        self,
        max_entries: int = 200_000,
        clock: Callable[[], float] = time.monotonic,
        queue_size: int = 10_000,
    ) -> None:
        self._max = max_entries
        self._clock = clock
        self._queue_size = queue_size
        # (namespace, key) -> (expires_at, value); the heap orders the same entries by expiry
        # (an entry rewritten later leaves a stale heap item, skipped when it comes up).
        self._records: dict[tuple[str, str], tuple[float, bytes]] = {}
        self._expiry: list[tuple[float, str, str]] = []
        self._streams: dict[str, set[_Stream]] = {}
        self._closed = False

    @property
    def backend(self) -> str:
        return "memory"

    def __len__(self) -> int:
        """Records held, expired ones not yet dropped included."""
        return len(self._records)

    def _purge(self, now: float) -> None:
        heap = self._expiry
        while heap and heap[0][0] <= now:
            expires, namespace, key = heapq.heappop(heap)
            held = self._records.get((namespace, key))
            if held is not None and held[0] == expires:
                del self._records[(namespace, key)]
        if len(heap) > 2 * len(self._records) + 1024:
            # Rewrites left many stale items behind: rebuild from the live records.
            self._expiry = [(exp, ns, k) for (ns, k), (exp, _) in self._records.items()]
            heapq.heapify(self._expiry)

    def _live(self, namespace: str, key: str, now: float) -> bool:
        held = self._records.get((namespace, key))
        return held is not None and held[0] > now

    def _write(self, namespace: str, key: str, value: bytes, ttl: float, now: float) -> None:
        if (namespace, key) not in self._records and len(self._records) >= self._max:
            raise StoreUnavailable(
                f"memory store full ({self._max} live records; see store.memory.max_entries)"
            )
        expires = now + ttl
        self._records[(namespace, key)] = (expires, value)
        heapq.heappush(self._expiry, (expires, namespace, key))

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("the store is closed")

    async def add_once(self, namespace: str, key: str, ttl: float) -> bool:
        check_name(namespace, key)
        check_ttl(ttl)
        self._check_open()
        now = self._clock()
        self._purge(now)
        if self._live(namespace, key, now):
            return False
        self._write(namespace, key, b"", ttl, now)
        return True

    async def put(self, namespace: str, key: str, value: bytes, ttl: float) -> None:
        check_name(namespace, key)
        check_ttl(ttl)
        self._check_open()
        now = self._clock()
        self._purge(now)
        self._write(namespace, key, bytes(value), ttl, now)
        change = Change(namespace, key, bytes(value))
        for stream in tuple(self._streams.get(namespace, ())):
            stream.offer(change)

    async def records(self, namespace: str) -> dict[str, bytes]:
        check_name(namespace, "-")
        self._check_open()
        now = self._clock()
        return {
            key: value
            for (ns, key), (expires, value) in self._records.items()
            if ns == namespace and expires > now
        }

    async def changes(self, namespace: str) -> _Stream:
        check_name(namespace, "-")
        self._check_open()
        stream = _Stream(self, namespace, self._queue_size)
        self._streams.setdefault(namespace, set()).add(stream)
        return stream

    def unsubscribe(self, stream: _Stream) -> None:
        streams = self._streams.get(stream.namespace)
        if streams is not None:
            streams.discard(stream)

    async def ping(self) -> None:
        self._check_open()

    async def aclose(self) -> None:
        self._closed = True
        for streams in list(self._streams.values()):
            for stream in list(streams):
                stream.end()
        self._streams.clear()
