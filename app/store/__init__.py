"""State shared across replicas, behind one interface: the DPoP replay cache and the
continuous-access-evaluation (revocation) state use it.

Two implementations: ``app/store/memory.py`` (the embedded default: one process, bounded,
expiring) and ``app/store/redis.py`` (several replicas sharing one Redis). Decision code never
waits on the store on its hot path except where correctness needs a shared answer (a proof's
``jti`` seen by any replica); revocation state is read from a local view that the store keeps
current (``changes``) and that a periodic ``records`` read heals.

Keys are plain strings under a namespace chosen by the caller (``dpop-jti``, ``revocation``);
implementations add their own prefix (e.g. ``ztauthz:``) so that several deployments can share
one Redis.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


class StoreUnavailable(Exception):
    """The store cannot answer now (connection refused, timeout, ...). Callers fail closed."""


@dataclass(frozen=True, slots=True)
class Change:
    """One record written by some replica (this one included), as ``changes`` delivers it."""

    namespace: str
    key: str
    value: bytes


class SharedStore(Protocol):
    """What the features that need shared state ask of a store. Every method may raise
    ``StoreUnavailable``; none raises anything else for an unreachable backend."""

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

    def changes(self, namespace: str) -> AsyncIterator[Change]:
        """Records ``put`` from now on, by any replica. The iterator ends (or raises
        ``StoreUnavailable``) when the connection is lost; the caller then re-reads
        ``records`` and subscribes again."""
        ...

    async def ping(self) -> None:
        """Return when the store answers; raise ``StoreUnavailable`` otherwise."""
        ...

    async def aclose(self) -> None: ...
