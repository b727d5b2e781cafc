"""Introspection answers remembered for a short, bounded time (RFC 7662 §4).

RFC 7662 §4 lets a protected resource cache answers, trading freshness (a revoked token stays
usable until the entry goes) for load on the authorization server. Here:

- keyed by the token's SHA-256 (app/identity/token_cache.py ``token_digest``), never the
  token: a dict of digests is no collection of bearer tokens;
- an ``active: true`` answer is used until ``cache_ttl`` after it was received and never
  past the token's ``exp``, whichever comes first; that is the revocation bound;
- an ``active: false`` answer is remembered the same way, as a *refusal* (an inactive token
  does not become active again: revoked and expired are final), so a client retrying a revoked
  token does not cost one introspection per request;
- errors (no answer, an unusable answer, an active token refused by our checks) are never
  remembered: the next request asks again;
- a caller may ask for an answer younger than ``max_age`` (``high_risk`` rules; 0 means a
  fresh question every time): an older entry is then ignored, not dropped;
- bounded, least recently used first out: a flood of distinct tokens costs fixed memory.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from app.identity.principal import Principal
from app.identity.token_cache import CacheStats


@dataclass(frozen=True, slots=True)
class Answer:
    """One remembered answer: the Principal of an active token, or None for inactive."""

    principal: Principal | None
    received_at: float
    until: float  # used while now < until


def remembered_until(principal: Principal | None, received_at: float, ttl: float) -> float:
    """``received_at + ttl``, and for an active token never past its ``exp``."""
    until = received_at + ttl
    if principal is not None:
        until = min(until, float(principal.expires_at))
    return until


class IntrospectionCache:
    """Bounded LRU map from token digest to Answer. Used from one event loop."""

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("an introspection cache holds at least one entry")
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, Answer] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, digest: bytes, now: float, max_age: float | None = None) -> Answer | None:
        """The answer for ``digest`` usable at ``now`` (and younger than ``max_age``)."""
        entry = self._entries.get(digest)
        if entry is None:
            self.misses += 1
            return None
        if now >= entry.until or now < entry.received_at:
            # Expired, or the clock went back past the answer: ask again.
            del self._entries[digest]
            self.misses += 1
            return None
        if max_age is not None and now - entry.received_at >= max_age:
            self.misses += 1
            return None
        self._entries.move_to_end(digest)
        self.hits += 1
        return entry

    def store(self, digest: bytes, answer: Answer) -> None:
        if answer.until <= answer.received_at:
            return  # nothing to remember (ttl 0, or a token at its exp)
        entries = self._entries
        entries[digest] = answer
        entries.move_to_end(digest)
        if len(entries) > self.max_entries:
            entries.popitem(last=False)
            self.evictions += 1

    def clear(self) -> None:
        self._entries.clear()

    def discard(self, refused: Callable[[Principal], bool]) -> int:
        """Forget every active answer whose Principal ``refused`` picks (a revoked subject or
        session, app/signals); returns how many. Inactive answers stay: they only refuse."""
        doomed = [
            digest
            for digest, answer in self._entries.items()
            if answer.principal is not None and refused(answer.principal)
        ]
        for digest in doomed:
            del self._entries[digest]
        return len(doomed)

    def stats(self) -> CacheStats:
        return CacheStats(
            len(self._entries), self.max_entries, self.hits, self.misses, self.evictions
        )
