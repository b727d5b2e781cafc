"""The SharedStore contract (app/store/__init__.py), one test body for both implementations:
the embedded memory store and a real redis-server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from app.settings.store import StoreSettings
from app.store import Change, SharedStore
from app.store.memory import MemoryStore
from app.store.open import open_store
from tests.integration.redis_support import RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[SharedStore]:
    if request.param == "memory":
        opened: SharedStore = MemoryStore()
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        opened = open_store(StoreSettings(backend="redis", redis=server.settings()))
    try:
        yield opened
    finally:
        await opened.aclose()


async def test_a_key_is_claimed_once_per_namespace(store: SharedStore) -> None:
    assert await store.add_once("dpop-jti", "a", ttl=30) is True
    assert await store.add_once("dpop-jti", "a", ttl=30) is False
    assert await store.add_once("dpop-jti", "b", ttl=30) is True
    assert await store.add_once("other", "a", ttl=30) is True


async def test_concurrent_claims_of_one_key_have_exactly_one_winner(store: SharedStore) -> None:
    results = await asyncio.gather(*(store.add_once("dpop-jti", "race", ttl=30) for _ in range(20)))
    assert results.count(True) == 1


async def test_a_claim_expires_with_its_ttl(store: SharedStore) -> None:
    assert await store.add_once("dpop-jti", "short", ttl=0.2) is True
    await asyncio.sleep(0.5)
    assert await store.add_once("dpop-jti", "short", ttl=0.2) is True


async def test_records_hold_every_unexpired_record_of_a_namespace(store: SharedStore) -> None:
    await store.put("revocation", "sub:alice", b"1700000000", ttl=30)
    await store.put("revocation", "sid:42", b"\x00\xffbinary", ttl=30)
    await store.put("revocation", "gone", b"x", ttl=0.2)
    await store.put("elsewhere", "sub:alice", b"other", ttl=30)
    await store.add_once("revocation", "claimed", ttl=30)
    await asyncio.sleep(0.5)
    assert await store.records("revocation") == {
        "sub:alice": b"1700000000",
        "sid:42": b"\x00\xffbinary",
        "claimed": b"",
    }
    assert await store.records("empty") == {}


async def test_glob_characters_in_a_namespace_match_only_themselves(store: SharedStore) -> None:
    await store.put("a*", "k", b"star", ttl=30)
    await store.put("ab", "k", b"plain", ttl=30)
    await store.put("a[b]?", "k", b"brackets", ttl=30)
    assert await store.records("a*") == {"k": b"star"}
    assert await store.records("a[b]?") == {"k": b"brackets"}


async def test_records_survive_many_keys(store: SharedStore) -> None:
    for n in range(1200):  # more than one SCAN batch
        await store.put("revocation", f"k{n}", str(n).encode(), ttl=30)
    found = await store.records("revocation")
    assert len(found) == 1200
    assert found["k1199"] == b"1199"


async def test_changes_deliver_each_put_after_the_subscription(store: SharedStore) -> None:
    await store.put("revocation", "before", b"0", ttl=30)
    first = await store.changes("revocation")
    second = await store.changes("revocation")
    other = await store.changes("elsewhere")
    # Put at once: the subscription is in place when changes() returns.
    await store.put("revocation", "k1", b"v1", ttl=30)
    await store.put("revocation", "k:2", b"v:2", ttl=30)
    try:
        async with asyncio.timeout(5):
            for stream in (first, second):
                assert await anext(stream) == Change("revocation", "k1", b"v1")
                assert await anext(stream) == Change("revocation", "k:2", b"v:2")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await anext(other)
    finally:
        for stream in (first, second, other):
            await stream.aclose()


async def test_a_closed_stream_ends(store: SharedStore) -> None:
    stream = await store.changes("revocation")
    await stream.aclose()
    await store.put("revocation", "k", b"v", ttl=30)
    async with asyncio.timeout(5):
        assert [change async for change in stream] == []


async def test_ping_answers(store: SharedStore) -> None:
    await store.ping()
    assert store.backend in ("memory", "redis")
