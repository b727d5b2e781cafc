"""State shared across replicas, behind one interface: the DPoP replay cache and the
continuous-access-evaluation (revocation) state use it.

Two implementations: ``app/store/memory.py`` (the embedded default: one process, bounded,
expiring) and ``app/store/redis.py`` (several replicas sharing one Redis); ``app/store/open.py``
builds the configured one (``store`` in the configuration, app/settings/store.py). Decision
code never waits on the store on its hot path except where correctness needs a shared answer
(a proof's ``jti`` seen by any replica); revocation state is read from a local view that the
store keeps current (``changes``) and that a periodic ``records`` read heals.

Keys are plain strings under a namespace chosen by the caller (``dpop-jti``, ``revocation``);
implementations add their own prefix (e.g. ``ztauthz:``) so that several deployments can share
one Redis. ``add_once`` claims and ``put`` records live in the same table: ``records`` returns
both (a claim's value is ``b""``).

Building a local view without a gap::

    stream = await store.changes("revocation")   # subscribed when this returns
    view = await store.records("revocation")     # everything written before (and maybe after)
    async for change in stream:                  # everything written after the subscription
        view[change.key] = change.value

A change seen both in ``records`` and in the stream is applied twice: consumers make applying
a record idempotent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


class StoreUnavailable(Exception):
    """The store cannot answer now (connection refused, timeout, full, ...). Callers fail
    closed. The message names what failed, never a key's owner or a secret."""


@dataclass(frozen=True, slots=True)
class Change:
    """One record written by some replica (this one included), as ``changes`` delivers it."""

    namespace: str
    key: str
    value: bytes


class ChangeStream(Protocol):
    """The records ``put`` after the subscription, by any replica: an async iterator of
    ``Change``. ``aclose`` unsubscribes."""

    def __aiter__(self) -> AsyncIterator[Change]: ...

    async def __anext__(self) -> Change: ...

    async def aclose(self) -> None: ...


class SharedStore(Protocol):
    """What the features that need shared state ask of a store. Every method may raise
    ``StoreUnavailable``; none raises anything else for an unreachable backend."""

    @property
    def backend(self) -> str:
        """``memory`` or ``redis``: for readiness, events and metric labels."""
        ...

    async def add_once(self, namespace: str, key: str, ttl: float) -> bool:
        """Claim ``key`` for ``ttl`` seconds: True when nobody held it (now we do), False when
        it was already claimed and has not expired (a replay). Atomic across replicas."""
        ...

    async def put(self, namespace: str, key: str, value: bytes, ttl: float) -> None:
        """Write a record that expires after ``ttl`` seconds and announce it to every replica's
        ``changes`` stream (at most once per subscriber; subscribers must tolerate repeats
        through ``records``)."""
        ...

    async def records(self, namespace: str) -> dict[str, bytes]:
        """Every unexpired record of ``namespace`` (used to build and heal a local view)."""
        ...

    async def changes(self, namespace: str) -> ChangeStream:
        """Subscribe to the records ``put`` from now on, by any replica: the subscription is in
        place when this returns (so a ``records`` read after it leaves no gap). The stream
        ends, or raises ``StoreUnavailable``, when the connection is lost or the subscriber
        falls too far behind; the caller then subscribes again and re-reads ``records``."""
        ...

    async def ping(self) -> None:
        """Return when the store answers; raise ``StoreUnavailable`` otherwise."""
        ...

    async def aclose(self) -> None: ...


def check_name(namespace: str, key: str) -> None:
    """Namespaces and keys are non-empty printable ASCII without ':' in the namespace (the
    separator in Redis key names). Callers hash anything a client chose before using it as
    a key; this only catches programming errors early, in every implementation alike."""
    if not namespace or ":" in namespace or not namespace.isascii() or not namespace.isprintable():
        raise ValueError(f"invalid store namespace {namespace!r}")
    if not key or not key.isascii() or not key.isprintable() or len(key) > 512:
        raise ValueError("invalid store key (empty, too long or not printable ASCII)")


def check_ttl(ttl: float) -> None:
    if not 0.001 <= ttl <= 366 * 86400:  # also refuses NaN
        raise ValueError(f"ttl {ttl!r} is outside 1 ms .. 366 days")
