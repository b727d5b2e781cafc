"""Verified-token cache: a signature verified once is not verified again, nothing more.

What is remembered is the outcome of the *time-independent* part of verification (parsing,
issuer, header, key lookup, signature, audience, lifetime, claim types) together with the
Principal built from it. Everything that depends on the moment is checked again on every use,
with the same rules in the same order as the first time (``exp``, then ``iat``, then ``nbf``,
with the issuer's leeway), so a cached verification decides exactly as a fresh one would:

- keyed by SHA-256 of the token: the token itself is never kept (a digest cannot be turned
  back into a credential, and a dict of digests is no collection of bearer tokens);
- an entry records the key-set generation of its issuer's KeySource; when the keys change
  (rotation, a revoked ``kid``) or are unusable (too stale), the entry is not used and the
  token is verified again from scratch, which is what decides, not the cache;
- an entry is dropped once its token has expired (``exp`` plus leeway): it never outlives
  the token;
- bounded (least recently used first out), so a flood of distinct tokens costs a fixed
  amount of memory and evicts old entries instead of growing.

Failures are never cached: a refused token is refused by the full path every time.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from app.identity.claims import check_exp, check_iat, check_nbf
from app.identity.jwks import KeyGenerations
from app.identity.principal import Principal

DEFAULT_SIZE = 10_000


def token_digest(token: str) -> bytes:
    """The cache key of ``token``: its SHA-256 (ASCII has been checked before)."""
    return hashlib.sha256(token.encode("ascii")).digest()


@dataclass(frozen=True, slots=True)
class CachedVerification:
    principal: Principal
    source: KeyGenerations  # the issuer's keys, asked for their current generation
    generation: int  # the generation the signature was verified under
    exp: float
    iat: float
    nbf: float | None
    leeway: float

    def recheck(self, now: float) -> None:
        """The time rules of validate_claims again, in its order; raises TokenError."""
        leeway = self.leeway
        if self.exp + leeway <= now:
            check_exp(self.exp, now, leeway)  # raises, with validate_claims' own words
        if self.iat - leeway > now or (self.nbf is not None and self.nbf - leeway > now):
            check_iat(self.iat, now, leeway)
            check_nbf(self.nbf, now, leeway)


@dataclass(frozen=True, slots=True)
class CacheStats:
    """What the cache reports to metrics (read at scrape time)."""

    entries: int
    capacity: int
    hits: int
    misses: int
    evictions: int


class TokenCache:
    """A bounded LRU map from token digest to CachedVerification. Not thread-safe beyond what
    the GIL gives single dict operations: it is used from one event loop."""

    def __init__(self, max_entries: int = DEFAULT_SIZE) -> None:
        if max_entries < 1:
            raise ValueError("a token cache holds at least one entry")
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, CachedVerification] = OrderedDict()
        # Counters for metrics and tests (read at scrape time, never locked).
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, digest: object) -> bool:
        return digest in self._entries

    def lookup(self, digest: bytes, now: float) -> CachedVerification | None:
        """The entry for ``digest`` if it may be used at ``now``: its issuer's keys are the
        ones it was verified with, and the token has not expired past the leeway.

        An entry whose keys changed is dropped (the caller verifies afresh); an expired one
        is dropped and returned, so that ``recheck`` reports the expiry exactly as a fresh
        verification would. Time checks are the caller's (``recheck``).
        """
        entry = self._entries.get(digest)
        if entry is None:
            self.misses += 1
            return None
        if entry.source.key_generation(now) != entry.generation:
            del self._entries[digest]
            self.misses += 1
            return None
        if entry.exp + entry.leeway <= now:
            del self._entries[digest]  # never to be valid again; recheck says why
        else:
            self._entries.move_to_end(digest)
        self.hits += 1
        return entry

    def store(self, digest: bytes, entry: CachedVerification) -> None:
        entries = self._entries
        entries[digest] = entry
        entries.move_to_end(digest)
        if len(entries) > self.max_entries:
            entries.popitem(last=False)
            self.evictions += 1

    def clear(self) -> None:
        self._entries.clear()

    def discard(self, match: Callable[[Principal], bool]) -> int:
        """Forget every verification whose principal ``match``es (a security event revoked
        its subject or session: app/signals/); returns how many."""
        gone = [digest for digest, entry in self._entries.items() if match(entry.principal)]
        for digest in gone:
            del self._entries[digest]
        return len(gone)

    def stats(self) -> CacheStats:
        return CacheStats(
            len(self._entries), self.max_entries, self.hits, self.misses, self.evictions
        )
