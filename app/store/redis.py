"""The store several replicas share: one Redis, through the ``redis`` library's asyncio API.

Each operation is one Redis round trip (or one transaction), bounded by ``timeout``:

- ``add_once``  ``SET key "" NX PX ttl``: atomic across every replica (one wins, the rest see
                the claim).
- ``put``       ``MULTI; SET key value PX ttl; PUBLISH channel change; EXEC``: the record and
                its announcement together.
- ``records``   ``SCAN MATCH prefix+namespace:*`` and ``MGET`` per batch.
- ``changes``   ``SUBSCRIBE prefix+"changes:"+namespace`` on a connection of its own.

Keys are ``<key_prefix><namespace>:<key>``; a change is published as ``<len(key)>:<key><value>``
so that keys and values of any bytes stay apart. The client never retries on its own
(``Retry(NoBackoff(), 0)``): a command that fails or runs over ``timeout`` raises
``StoreUnavailable`` at once and the caller fails closed, instead of a check waiting through
retries. Any failure of the backend (refused, reset, timed out, authentication, out of memory,
read-only replica, pool exhausted) is a ``StoreUnavailable``; its message names the operation
and the error class, never a password.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from app.settings.store import RedisStoreSettings
from app.store import Change, StoreUnavailable, check_name, check_ttl

T = TypeVar("T")

_GLOB = re.compile(r"([*?\[\]\\])")
_SCAN_BATCH = 500
# A subscription idle this long sends PING: a connection that died silently (no reset, e.g. a
# peer gone from the network) is then noticed within one more timeout.
_IDLE_PING_SECONDS = 5.0


def _escape_glob(text: str) -> str:
    return _GLOB.sub(r"\\\1", text)


def encode_change(key: str, value: bytes) -> bytes:
    raw = key.encode("ascii")
    return str(len(raw)).encode("ascii") + b":" + raw + value


def decode_change(namespace: str, message: bytes) -> Change | None:
    """The change in a published message, or None when it is not one of ours."""
    length, sep, rest = message.partition(b":")
    if not sep or not length.isdigit() or int(length) > len(rest):
        return None
    size = int(length)
    try:
        key = rest[:size].decode("ascii")
    except UnicodeDecodeError:
        return None
    return Change(namespace, key, rest[size:])


@contextlib.contextmanager
def _unavailable(operation: str) -> Iterator[None]:
    try:
        yield
    except (RedisError, OSError, TimeoutError) as exc:
        raise StoreUnavailable(f"redis {operation}: {type(exc).__name__}: {exc}"[:300]) from exc


class _RedisStream:
    """One subscription: ``SUBSCRIBE`` done, messages read as they come."""

    def __init__(self, pubsub: PubSub, namespace: str, timeout: float) -> None:
        self._pubsub = pubsub
        self._namespace = namespace
        self._timeout = timeout
        self._closed = False

    def __aiter__(self) -> _RedisStream:
        return self

    async def __anext__(self) -> Change:
        while not self._closed:
            try:
                with _unavailable("subscription"):
                    message = await self._pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=_IDLE_PING_SECONDS
                    )
                    if message is None:
                        async with asyncio.timeout(self._timeout):
                            await self._pubsub.ping()
                        continue
            except StoreUnavailable:
                await self.aclose()
                raise
            if message.get("type") != "message":
                continue  # pong, or a subscribe confirmation
            data = message.get("data")
            if isinstance(data, bytes):
                change = decode_change(self._namespace, data)
                if change is not None:
                    return change
        raise StopAsyncIteration

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(self._timeout):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]


class RedisStore:
    def __init__(self, client: aioredis.Redis, key_prefix: str, timeout: float) -> None:
        self._client = client
        self._prefix = key_prefix
        self._timeout = timeout

    @classmethod
    def from_settings(cls, settings: RedisStoreSettings, password: str | None) -> RedisStore:
        """A store on ``settings.url``; nothing connects until the first operation."""
        timeout = settings.timeout.total_seconds()
        options: dict[str, object] = {
            "password": password,
            "socket_timeout": timeout,
            "socket_connect_timeout": settings.connect_timeout.total_seconds(),
            "retry": Retry(NoBackoff(), 0),
            "max_connections": settings.max_connections,
            # Wait this long for a free connection when all are busy, then give up.
            "timeout": timeout,
            "client_name": "ztauthz",
        }
        if settings.ca_file is not None:
            options["ssl_ca_certs"] = str(settings.ca_file)
        pool = aioredis.BlockingConnectionPool.from_url(settings.url, **options)
        return cls(aioredis.Redis(connection_pool=pool), settings.key_prefix, timeout)

    @property
    def backend(self) -> str:
        return "redis"

    def _key(self, namespace: str, key: str) -> str:
        return f"{self._prefix}{namespace}:{key}"

    def _channel(self, namespace: str) -> str:
        return f"{self._prefix}changes:{namespace}"

    async def _bounded(self, operation: str, call: Awaitable[T]) -> T:
        with _unavailable(operation):
            async with asyncio.timeout(self._timeout):
                return await call

    async def add_once(self, namespace: str, key: str, ttl: float) -> bool:
        check_name(namespace, key)
        check_ttl(ttl)
        claimed = await self._bounded(
            "add_once",
            self._client.set(self._key(namespace, key), b"", nx=True, px=_millis(ttl)),
        )
        return bool(claimed)

    async def put(self, namespace: str, key: str, value: bytes, ttl: float) -> None:
        check_name(namespace, key)
        check_ttl(ttl)

        async def transaction() -> None:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.set(self._key(namespace, key), value, px=_millis(ttl))
                pipe.publish(self._channel(namespace), encode_change(key, value))
                await pipe.execute()

        await self._bounded("put", transaction())

    async def records(self, namespace: str) -> dict[str, bytes]:
        check_name(namespace, "-")
        stem = self._key(namespace, "")
        found: dict[str, bytes] = {}
        async for batch in self._scan(stem):
            values = await self._bounded("records", self._client.mget(batch))
            for name, value in zip(batch, values, strict=True):
                if value is not None:  # None: expired between SCAN and MGET
                    found[name.decode("ascii")[len(stem) :]] = (
                        value if isinstance(value, bytes) else value.encode()
                    )
        return found

    async def _scan(self, stem: str) -> AsyncIterator[list[bytes]]:
        cursor = 0
        pattern = _escape_glob(stem) + "*"
        while True:
            cursor, names = await self._bounded(
                "records", self._client.scan(cursor, match=pattern, count=_SCAN_BATCH)
            )
            if names:  # bytes: the client does not decode responses
                yield [name if isinstance(name, bytes) else name.encode() for name in names]
            if cursor == 0:
                return

    async def changes(self, namespace: str) -> _RedisStream:
        check_name(namespace, "-")
        pubsub = self._client.pubsub()
        try:
            await self._bounded("subscribe", pubsub.subscribe(self._channel(namespace)))
        except StoreUnavailable:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            raise
        return _RedisStream(pubsub, namespace, self._timeout)

    async def ping(self) -> None:
        await self._bounded("ping", self._client.ping())

    async def aclose(self) -> None:
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await self._client.aclose()
            await self._client.connection_pool.disconnect()


def _millis(ttl: float) -> int:
    return max(1, round(ttl * 1000))
