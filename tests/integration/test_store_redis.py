"""The Redis store against a real redis-server: replicas share claims and changes, every
failure (killed, hung, wrong password, full) is a StoreUnavailable within the timeout, and
the store recovers when Redis is back."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator

import pytest

from app.settings import ConfigError
from app.settings.store import StoreSettings
from app.store import Change, StoreUnavailable
from app.store.open import open_store
from app.store.redis import RedisStore, decode_change, encode_change
from tests.integration.redis_support import RedisServer

pytestmark = pytest.mark.integration

# Far above the 250 ms command timeout: only a hang (no timeout at all) would reach it.
HANG = 10.0


@pytest.fixture
async def replicas(redis_server: RedisServer) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    settings = StoreSettings(backend="redis", redis=redis_server.settings())
    first, second = open_store(settings), open_store(settings)
    assert isinstance(first, RedisStore) and isinstance(second, RedisStore)
    try:
        yield first, second
    finally:
        await first.aclose()
        await second.aclose()


async def test_a_claim_by_one_replica_is_seen_by_another(
    replicas: tuple[RedisStore, RedisStore],
) -> None:
    first, second = replicas
    assert await first.add_once("dpop-jti", "proof-1", ttl=30) is True
    assert await second.add_once("dpop-jti", "proof-1", ttl=30) is False


async def test_a_put_by_one_replica_reaches_the_others_stream(
    replicas: tuple[RedisStore, RedisStore],
) -> None:
    first, second = replicas
    stream = await second.changes("revocation")
    try:
        await first.put("revocation", "sid:1", b"t", ttl=30)
        async with asyncio.timeout(HANG):
            assert await anext(stream) == Change("revocation", "sid:1", b"t")
        assert await second.records("revocation") == {"sid:1": b"t"}
    finally:
        await stream.aclose()


async def test_key_prefixes_keep_deployments_apart(redis_server: RedisServer) -> None:
    blue = open_store(
        StoreSettings(backend="redis", redis=redis_server.settings(key_prefix="blue:"))
    )
    green = open_store(
        StoreSettings(backend="redis", redis=redis_server.settings(key_prefix="green:"))
    )
    try:
        assert await blue.add_once("dpop-jti", "same", ttl=30) is True
        assert await green.add_once("dpop-jti", "same", ttl=30) is True
        await blue.put("revocation", "k", b"blue", ttl=30)
        assert await green.records("revocation") == {}
    finally:
        await blue.aclose()
        await green.aclose()


async def test_redis_killed_mid_test_is_store_unavailable_then_recovers(
    redis_server: RedisServer, replicas: tuple[RedisStore, RedisStore]
) -> None:
    store, _ = replicas
    assert await store.add_once("dpop-jti", "before", ttl=30) is True
    stream = await store.changes("revocation")
    redis_server.kill()
    async with asyncio.timeout(HANG):
        with pytest.raises(StoreUnavailable, match="redis add_once"):
            await store.add_once("dpop-jti", "during", ttl=30)
        with pytest.raises(StoreUnavailable):
            await store.put("revocation", "k", b"v", ttl=30)
        with pytest.raises(StoreUnavailable):
            await store.records("revocation")
        with pytest.raises(StoreUnavailable):
            await store.ping()
        with pytest.raises(StoreUnavailable):
            await store.changes("revocation")
        # The open subscription ends with the connection (the caller re-subscribes).
        with pytest.raises((StoreUnavailable, StopAsyncIteration)):
            await anext(stream)
    redis_server.restart()
    async with asyncio.timeout(HANG):
        await store.ping()
        # A fresh, empty server: the claim made before the crash is gone with it.
        assert await store.add_once("dpop-jti", "before", ttl=30) is True


async def test_a_hung_redis_times_out_instead_of_holding_checks(
    redis_server: RedisServer, replicas: tuple[RedisStore, RedisStore]
) -> None:
    store, _ = replicas
    await store.ping()  # connected
    pid = redis_server.process.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        async with asyncio.timeout(HANG):
            with pytest.raises(StoreUnavailable):
                await store.add_once("dpop-jti", "while-hung", ttl=30)
            with pytest.raises(StoreUnavailable):
                await store.ping()
    finally:
        os.kill(pid, signal.SIGCONT)
    async with asyncio.timeout(HANG):
        await store.ping()
        assert await store.add_once("dpop-jti", "after", ttl=30) is True


async def test_a_wrong_or_missing_password_is_store_unavailable(
    redis_server: RedisServer,
) -> None:
    wrong = open_store(
        StoreSettings(
            backend="redis",
            redis=redis_server.settings(password_file=None, password_env="REDIS_PASSWORD"),
        ),
        environ={"REDIS_PASSWORD": "not-the-password"},
    )
    none = open_store(
        StoreSettings(backend="redis", redis=redis_server.settings(password_file=None))
    )
    try:
        async with asyncio.timeout(HANG):
            for store in (wrong, none):
                with pytest.raises(StoreUnavailable) as info:
                    await store.add_once("dpop-jti", "k", ttl=30)
                assert "not-the-password" not in str(info.value)
    finally:
        await wrong.aclose()
        await none.aclose()


async def test_the_password_comes_from_the_environment_when_named(
    redis_server: RedisServer,
) -> None:
    password = redis_server.password_file.read_text(encoding="utf-8").strip()
    store = open_store(
        StoreSettings(
            backend="redis",
            redis=redis_server.settings(password_file=None, password_env="REDIS_PASSWORD"),
        ),
        environ={"REDIS_PASSWORD": password},
    )
    try:
        await store.ping()
    finally:
        await store.aclose()


def test_an_unreadable_password_file_stops_the_start(redis_server: RedisServer) -> None:
    missing = redis_server.password_file.with_name("absent")
    with pytest.raises(ConfigError, match=r"store\.redis\.password_file: cannot read"):
        open_store(
            StoreSettings(backend="redis", redis=redis_server.settings(password_file=missing))
        )
    with pytest.raises(ConfigError, match="REDIS_PW is empty or unset"):
        open_store(
            StoreSettings(
                backend="redis",
                redis=redis_server.settings(password_file=None, password_env="REDIS_PW"),
            ),
            environ={},
        )


@pytest.mark.parametrize(
    ("key", "value"), [("k", b""), ("a:b:c", b"1:2"), ("12", b"\x00\xff"), ("x" * 100, b"v")]
)
def test_a_change_message_round_trips(key: str, value: bytes) -> None:
    assert decode_change("ns", encode_change(key, value)) == Change("ns", key, value)


@pytest.mark.parametrize("message", [b"", b"k", b"5:abc", b"x:abc", b"2:\xff\xfe"])
def test_a_foreign_message_on_the_channel_is_ignored(message: bytes) -> None:
    assert decode_change("ns", message) is None
