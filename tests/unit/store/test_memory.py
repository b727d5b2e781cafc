"""The embedded store: expiry by ttl against its clock, bounded memory that refuses rather
than forgets, in-process change subscribers (the shared contract is in
tests/integration/test_store_contract.py, run against Redis too)."""

from __future__ import annotations

import asyncio

import pytest

from app.store import Change, StoreUnavailable
from app.store.memory import MemoryStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_claim_holds_for_its_ttl_and_not_a_moment_longer() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    assert await store.add_once("dpop-jti", "a", ttl=60) is True
    clock.now += 59.9
    assert await store.add_once("dpop-jti", "a", ttl=60) is False
    clock.now += 0.1
    assert await store.add_once("dpop-jti", "a", ttl=60) is True


async def test_records_leave_out_what_has_expired() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    await store.put("revocation", "short", b"1", ttl=10)
    await store.put("revocation", "long", b"2", ttl=100)
    clock.now += 10
    assert await store.records("revocation") == {"long": b"2"}


async def test_a_full_store_refuses_new_records_instead_of_evicting_live_ones() -> None:
    clock = Clock()
    store = MemoryStore(max_entries=100, clock=clock)
    for n in range(100):
        assert await store.add_once("dpop-jti", f"k{n}", ttl=30)
    with pytest.raises(StoreUnavailable, match="max_entries"):
        await store.add_once("dpop-jti", "one-more", ttl=30)
    with pytest.raises(StoreUnavailable):
        await store.put("revocation", "r", b"x", ttl=30)
    # Every live claim is still held: none was evicted to make room.
    for n in range(100):
        assert await store.add_once("dpop-jti", f"k{n}", ttl=30) is False
    # Rewriting a held record needs no new room.
    await store.put("dpop-jti", "k0", b"v", ttl=30)
    clock.now += 30
    assert await store.add_once("dpop-jti", "one-more", ttl=30) is True
    assert len(store) == 1  # the expired ones were dropped on that write


async def test_rewrites_do_not_grow_the_expiry_heap_without_bound() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    for n in range(5000):
        await store.put("revocation", "same", str(n).encode(), ttl=1000)
    assert len(store) == 1
    assert len(store._expiry) <= 2 * len(store) + 1024 + 1


async def test_a_rewritten_record_keeps_its_new_expiry() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    await store.put("revocation", "r", b"old", ttl=10)
    await store.put("revocation", "r", b"new", ttl=100)
    clock.now += 50
    await store.put("revocation", "other", b"x", ttl=10)  # purges what is due
    assert await store.records("revocation") == {"r": b"new", "other": b"x"}


async def test_subscribers_get_each_put_of_their_namespace() -> None:
    store = MemoryStore()
    first = await store.changes("revocation")
    second = await store.changes("revocation")
    other = await store.changes("elsewhere")
    await store.put("revocation", "k", b"v", ttl=10)
    expected = Change("revocation", "k", b"v")
    assert await anext(first) == expected
    assert await anext(second) == expected
    assert other.queue.empty()
    await store.add_once("revocation", "claim", ttl=10)  # claims are not announced
    assert first.queue.empty()


async def test_a_subscriber_too_far_behind_has_its_stream_ended() -> None:
    store = MemoryStore(queue_size=3)
    stream = await store.changes("revocation")
    for n in range(4):
        await store.put("revocation", f"k{n}", b"", ttl=10)
    received = [change.key async for change in stream]
    assert received == ["k0", "k1", "k2"]  # then it ended: the consumer re-reads records()
    await store.put("revocation", "later", b"", ttl=10)
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


async def test_closing_the_store_ends_every_stream_and_refuses_operations() -> None:
    store = MemoryStore()
    stream = await store.changes("revocation")
    waiting = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)
    await store.aclose()
    with pytest.raises(StopAsyncIteration):
        await waiting
    with pytest.raises(StoreUnavailable):
        await store.ping()
    with pytest.raises(StoreUnavailable):
        await store.add_once("dpop-jti", "k", ttl=1)


async def test_a_closed_stream_is_unsubscribed() -> None:
    store = MemoryStore()
    stream = await store.changes("revocation")
    await stream.aclose()
    await store.put("revocation", "k", b"v", ttl=10)
    assert [c async for c in stream] == []
    assert store._streams["revocation"] == set()


@pytest.mark.parametrize(
    ("namespace", "key"),
    [("", "k"), ("a:b", "k"), ("ns", ""), ("ns", "line\nbreak"), ("ns", "é"), ("ns", "x" * 513)],
)
async def test_names_outside_the_contract_are_programming_errors(namespace: str, key: str) -> None:
    with pytest.raises(ValueError):
        await MemoryStore().add_once(namespace, key, ttl=1)


@pytest.mark.parametrize("ttl", [0.0, -1.0, float("nan"), float("inf"), 10.0**9])
async def test_ttls_outside_the_contract_are_programming_errors(ttl: float) -> None:
    with pytest.raises(ValueError):
        await MemoryStore().put("ns", "k", b"", ttl=ttl)
