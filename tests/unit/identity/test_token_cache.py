"""The verified-token cache decides exactly as a fresh verification, and stays bounded.

Two verifiers share the same real JwksCaches (a real local IdP serving the keys): one with a
TokenCache, one without. Every (token, moment) pair must get the same answer from both: the
same Principal, or a TokenError with the same reason. The runs cross expiry and ``nbf``, go
back in time, rotate keys and revoke a ``kid``, and let the keys go stale.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from app.identity.errors import TokenError
from app.identity.jwks import JwksCache
from app.identity.principal import Principal
from app.identity.token_cache import TokenCache, token_digest
from app.identity.verify import TokenVerifier, build_key_sources
from app.reasons import Reason
from tests.unit.identity.identity_support import (
    NOW,
    FakeClock,
    IdpServer,
    claims,
    ec_key,
    jwks,
    make_issuer,
    mint,
    public_jwk,
    rsa_key,
)

MAX_TOKEN_BYTES = 4096
STALE = 3600.0
LEEWAY = 30.0


@dataclass
class Pair:
    idp: IdpServer
    issuer: str
    clock: FakeClock
    keys: JwksCache
    cached: TokenVerifier
    fresh: TokenVerifier
    cache: TokenCache


def private_key(kid: str) -> Any:
    return ec_key(kid) if kid.startswith("ec") else rsa_key(kid)


def publish(idp: IdpServer, *kids: str) -> None:
    idp.publish(jwks(*(public_jwk(private_key(kid), kid) for kid in kids)))


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    clock = FakeClock()
    with IdpServer.running() as idp:
        publish(idp, "rsa-1", "rsa-2", "ec-1")
        issuer = make_issuer(
            idp.url,
            algorithms=["RS256", "ES256"],
            leeway=LEEWAY,
            jwks={"max_staleness": STALE, "kid_miss_min_interval": 60.0},
        )
        async with httpx.AsyncClient(trust_env=False) as client:
            sources = build_key_sources([issuer], client, clock)
            keys = sources[idp.url]
            try:
                assert await keys.refresh(), keys.last_error
                cache = TokenCache(64)
                yield Pair(
                    idp=idp,
                    issuer=idp.url,
                    clock=clock,
                    keys=keys,
                    cached=TokenVerifier([issuer], sources, MAX_TOKEN_BYTES, cache),
                    fresh=TokenVerifier([issuer], sources, MAX_TOKEN_BYTES),
                    cache=cache,
                )
            finally:
                await keys.aclose()


Outcome = Principal | Reason


async def outcome(verifier: TokenVerifier, token: str, now: float) -> Outcome:
    try:
        return await verifier.verify(token, now)
    except TokenError as exc:
        return exc.reason


async def both(pair: Pair, token: str, now: float | None = None) -> Outcome:
    """The answer of the cached verifier, after checking the fresh one gives the same."""
    at = pair.clock.now if now is None else now
    cached = await outcome(pair.cached, token, at)
    fresh = await outcome(pair.fresh, token, at)
    assert cached == fresh, f"cached {cached!r} != fresh {fresh!r} at {at - NOW:+.0f}s"
    return cached


def token(pair: Pair, kid: str = "rsa-1", **changes: Any) -> str:
    alg = "ES256" if kid.startswith("ec") else "RS256"
    return mint(private_key(kid), alg, claims(pair.issuer, **changes), kid)


def varied_tokens(pair: Pair, rng: random.Random, count: int) -> list[str]:
    """Valid tokens with every time shape, and some that are refused for other reasons."""
    made = []
    for i in range(count):
        iat = int(NOW) + rng.choice([-600, -120, -5, 0, 20, 90])
        exp = iat + rng.choice([1, 40, 120, 300])
        changes: dict[str, Any] = {"iat": iat, "exp": exp, "sub": f"user-{i}"}
        if rng.random() < 0.3:
            changes["nbf"] = iat + rng.choice([-10, 10, 60])
        if rng.random() < 0.1:
            changes["aud"] = "someone-else"
        if rng.random() < 0.2:
            changes["groups"] = ["a", "b"][: rng.randint(0, 2)]
        made.append(token(pair, rng.choice(["rsa-1", "rsa-2", "ec-1"]), **changes))
    return made


async def test_cached_path_decides_as_the_fresh_one_across_time(pair: Pair) -> None:
    rng = random.Random(7)
    tokens = varied_tokens(pair, rng, 60)
    moments = sorted(NOW + rng.uniform(-700, 900) for _ in range(40))
    moments += [NOW + rng.uniform(-700, 900) for _ in range(20)]  # and back in time
    seen: set[Reason] = set()
    allowed = 0
    for now in moments:
        for one in rng.sample(tokens, 30):
            result = await both(pair, one, now)
            if isinstance(result, Reason):
                seen.add(result)
            else:
                allowed += 1
    # The walk really crossed expiry and the not-yet-valid edges, and really used the cache.
    assert {Reason.TOKEN_EXPIRED, Reason.TOKEN_NOT_YET_VALID} <= seen
    assert Reason.TOKEN_AUDIENCE_INVALID in seen
    assert allowed > 100
    assert pair.cache.hits > 100


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (299 + LEEWAY, None),  # the last moment inside exp + leeway
        (300 + LEEWAY, Reason.TOKEN_EXPIRED),  # exp + leeway is already too late
        (2000, Reason.TOKEN_EXPIRED),
        (-LEEWAY, None),  # iat - leeway: just valid
        (-LEEWAY - 1, Reason.TOKEN_NOT_YET_VALID),  # before iat (a clock stepped back)
    ],
)
async def test_time_claims_are_checked_again_on_every_hit(
    pair: Pair, offset: float, expected: Reason | None
) -> None:
    one = token(pair)  # iat NOW, exp NOW + 300
    assert isinstance(await both(pair, one, NOW), Principal)
    hits = pair.cache.hits
    result = await both(pair, one, NOW + offset)
    assert pair.cache.hits == hits + 1  # answered from the cache, and still right
    if expected is None:
        assert isinstance(result, Principal)
    else:
        assert result is expected


async def test_nbf_is_checked_again_on_every_hit(pair: Pair) -> None:
    one = token(pair, iat=int(NOW) - 100, exp=int(NOW) + 200, nbf=int(NOW) - 100)
    assert isinstance(await both(pair, one, NOW), Principal)
    assert await both(pair, one, NOW - 100 - LEEWAY - 1) is Reason.TOKEN_NOT_YET_VALID


async def test_an_expired_entry_is_dropped(pair: Pair) -> None:
    one = token(pair)
    await both(pair, one, NOW)
    assert token_digest(one) in pair.cache
    assert await both(pair, one, NOW + 400) is Reason.TOKEN_EXPIRED
    assert token_digest(one) not in pair.cache


async def test_a_revoked_kid_invalidates_its_cached_tokens(pair: Pair) -> None:
    revoked, kept = token(pair, "rsa-2"), token(pair, "rsa-1")
    for one in (revoked, kept):
        assert isinstance(await both(pair, one), Principal)
    generation = pair.keys.key_generation(pair.clock.now)
    publish(pair.idp, "rsa-1", "ec-1")  # rsa-2 is gone
    assert await pair.keys.refresh()
    assert pair.keys.key_generation(pair.clock.now) == (generation or 0) + 1
    assert await both(pair, revoked) is Reason.TOKEN_KEY_UNKNOWN
    assert token_digest(revoked) not in pair.cache
    # The other token is verified afresh under the new keys, then cached again.
    assert isinstance(await both(pair, kept), Principal)
    hits = pair.cache.hits
    assert isinstance(await both(pair, kept), Principal)
    assert pair.cache.hits == hits + 1


async def test_a_rotated_key_set_invalidates_every_entry(pair: Pair) -> None:
    tokens = [token(pair, kid, sub=f"u{i}") for i, kid in enumerate(["rsa-1", "ec-1"] * 3)]
    for one in tokens:
        await both(pair, one)
    publish(pair.idp, "rsa-1", "rsa-2", "ec-1", "rsa-new")
    assert await pair.keys.refresh()
    misses = pair.cache.misses
    for one in tokens:
        assert isinstance(await both(pair, one), Principal)
    assert pair.cache.misses == misses + len(tokens)  # none was taken from the old entries


async def test_refetching_the_same_keys_keeps_the_cache(pair: Pair) -> None:
    one = token(pair)
    await both(pair, one)
    generation = pair.keys.key_generation(pair.clock.now)
    assert await pair.keys.refresh()  # the same JWKS again
    assert pair.keys.key_generation(pair.clock.now) == generation
    hits = pair.cache.hits
    await both(pair, one)
    assert pair.cache.hits == hits + 1


async def test_stale_keys_refuse_cached_tokens_as_fresh_ones(pair: Pair) -> None:
    one = token(pair, iat=int(NOW + STALE) - 60, exp=int(NOW + STALE) + 240)
    assert isinstance(await both(pair, one, NOW + STALE - 30), Principal)  # now cached
    pair.idp.stop()
    later = NOW + STALE + 10  # keys older than max_staleness: no usable keys
    assert pair.keys.key_generation(later) is None
    assert await both(pair, one, later) is Reason.KEYS_UNAVAILABLE


async def test_a_cached_token_stays_valid_while_the_keys_are_fresh(pair: Pair) -> None:
    one = token(pair, iat=int(NOW) + 3000, exp=int(NOW) + 3300)
    assert isinstance(await both(pair, one, NOW + 3000), Principal)
    pair.idp.stop()  # the IdP goes away: last-known-good keys keep serving until stale
    assert isinstance(await both(pair, one, NOW + 3100), Principal)


async def test_failures_are_never_cached(pair: Pair) -> None:
    bad = token(pair, aud="someone-else")
    for _ in range(3):
        assert await both(pair, bad) is Reason.TOKEN_AUDIENCE_INVALID
    assert len(pair.cache) == 0
    assert pair.cache.hits == 0


async def test_the_cache_is_bounded_and_least_recently_used_goes_first(pair: Pair) -> None:
    capacity = pair.cache.max_entries
    tokens = [token(pair, "ec-1", sub=f"user-{i}") for i in range(capacity * 3)]
    favourite = tokens[0]
    for one in tokens:
        await both(pair, one)
        await both(pair, favourite)  # used all the time: never the least recently used
        assert len(pair.cache) <= capacity
    assert len(pair.cache) == capacity
    assert pair.cache.evictions == len(tokens) - capacity
    assert token_digest(favourite) in pair.cache
    assert token_digest(tokens[1]) not in pair.cache


async def test_entries_are_keyed_by_digest_never_by_the_token(pair: Pair) -> None:
    one = token(pair)
    await both(pair, one)
    digest = token_digest(one)
    assert digest in pair.cache and len(digest) == 32
    assert one.encode() not in pair.cache
    stats = pair.cache.stats()
    assert (stats.entries, stats.capacity) == (1, pair.cache.max_entries)


def test_a_cache_holds_at_least_one_entry() -> None:
    with pytest.raises(ValueError, match="at least one"):
        TokenCache(0)
