"""JwksCache against a real local discovery + JWKS server that counts requests.

Time-dependent behaviour (rate limits, staleness) runs on a FakeClock shared by the cache and
the ``now`` passed in; only the background-refresh tests use real (short) sleeps.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from app.identity.discovery import KeyFetchError
from app.identity.errors import TokenError
from app.identity.jwks import JwksCache, KeySource, backoff_delay, parse_jwks
from app.reasons import Reason
from tests.unit.identity.identity_support import (
    FakeClock,
    IdpServer,
    Reply,
    ec_key,
    ed_key,
    eventually,
    jwks,
    make_issuer,
    private_jwk,
    public_jwk,
    rsa_key,
)

WELL_KNOWN = "/.well-known/openid-configuration"
KID_MISS = 30.0  # kid_miss_min_interval used below, seconds
STALE = 3600.0  # max_staleness used below, seconds


@pytest.fixture
def idp() -> Iterator[IdpServer]:
    with IdpServer.running() as server:
        server.publish(jwks(public_jwk(rsa_key("a"), "k1")))
        yield server


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as http:
        yield http


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def cache_for(
    idp: IdpServer, client: httpx.AsyncClient, clock: FakeClock, **overrides: Any
) -> JwksCache:
    retry_base = overrides.pop("retry_base", 1.0)
    config = {
        "kid_miss_min_interval": KID_MISS,
        "max_staleness": STALE,
        "fetch_timeout": 2.0,
        **overrides.pop("jwks", {}),
    }
    issuer = make_issuer(idp.url, jwks=config, **overrides)
    return JwksCache(issuer, client, clock, retry_base=retry_base)


@pytest.fixture
async def cache(
    idp: IdpServer, client: httpx.AsyncClient, clock: FakeClock
) -> AsyncIterator[JwksCache]:
    keys = cache_for(idp, client, clock)
    try:
        yield keys
    finally:
        await keys.aclose()


async def reason_of(source: KeySource, kid: str | None, alg: str, now: float) -> Reason:
    with pytest.raises(TokenError) as caught:
        await source.get_key(kid, alg, now)
    return caught.value.reason


def same_public_key(found: Any, private: Any) -> bool:
    return bool(found.key.public_numbers() == private.public_key().public_numbers())


# -- loading ---------------------------------------------------------------------------------


async def test_initial_load_through_discovery(
    idp: IdpServer, cache: JwksCache, clock: FakeClock
) -> None:
    assert not cache.is_ready(clock.now)
    assert await cache.refresh()
    assert cache.is_ready(clock.now)
    key = await cache.get_key("k1", "RS256", clock.now)
    assert same_public_key(key, rsa_key("a"))
    assert key.algorithm_name == "RS256"
    assert (idp.hits(WELL_KNOWN), idp.hits("/jwks"), cache.fetch_count) == (1, 1, 1)
    assert cache.last_success_at == clock.now


async def test_start_loads_in_background_and_aclose_stops(
    idp: IdpServer, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    cache = cache_for(idp, client, clock, jwks={"refresh_interval": 0.05})
    await cache.start()
    try:
        await eventually(lambda: idp.hits("/jwks") >= 3)  # loaded, then refreshed periodically
        assert cache.is_ready(clock.now)
    finally:
        await cache.aclose()
    after = idp.hits("/jwks")
    await asyncio.sleep(0.2)
    assert idp.hits("/jwks") == after  # nothing runs after aclose
    # discovery is done once, not on every refresh
    assert idp.hits(WELL_KNOWN) == 1


async def test_periodic_refresh_picks_up_rotation(
    idp: IdpServer, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    cache = cache_for(idp, client, clock, jwks={"refresh_interval": 0.05})
    await cache.start()
    try:
        await eventually(lambda: cache.is_ready(clock.now))
        idp.publish(jwks(public_jwk(rsa_key("b"), "k2")))
        await eventually(lambda: idp.hits("/jwks") >= 3)
        fetches = cache.fetch_count
        # found without any on-demand fetch: the background refresh already has it
        assert same_public_key(await cache.get_key("k2", "RS256", clock.now), rsa_key("b"))
        assert await reason_of(cache, "k1", "RS256", clock.now) is Reason.TOKEN_KEY_UNKNOWN
        assert cache.fetch_count == fetches
    finally:
        await cache.aclose()


async def test_discovery_issuer_mismatch_is_refused(
    idp: IdpServer, cache: JwksCache, clock: FakeClock
) -> None:
    idp.publish(jwks(public_jwk(rsa_key("a"), "k1")), issuer="https://other-issuer.example")
    assert not await cache.refresh()
    assert cache.last_error is not None and "issuer" in cache.last_error
    assert idp.hits("/jwks") == 0  # the JWKS of an issuer that did not vouch is never read
    assert not cache.is_ready(clock.now)
    assert await reason_of(cache, "k1", "RS256", clock.now) is Reason.KEYS_UNAVAILABLE


async def test_explicit_jwks_uri_skips_discovery(
    idp: IdpServer, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    cache = cache_for(idp, client, clock, discovery=False, jwks_uri=f"{idp.url}/jwks")
    assert await cache.refresh()
    assert (idp.hits(WELL_KNOWN), idp.hits("/jwks")) == (0, 1)


async def test_failed_jwks_fetch_redoes_discovery(
    idp: IdpServer, cache: JwksCache, clock: FakeClock
) -> None:
    assert await cache.refresh()
    idp.set_reply("/jwks", Reply(status=404))
    assert not await cache.refresh()
    idp.set_json(WELL_KNOWN, {"issuer": idp.url, "jwks_uri": f"{idp.url}/moved"})
    idp.set_json("/moved", jwks(public_jwk(rsa_key("b"), "k2")))
    assert await cache.refresh()
    assert same_public_key(await cache.get_key("k2", "RS256", clock.now), rsa_key("b"))
    assert idp.hits(WELL_KNOWN) == 2


# -- kid misses: rotation, single flight, rate limit ------------------------------------------


async def test_rotation_picked_up_on_kid_miss_after_min_interval(
    idp: IdpServer, cache: JwksCache, clock: FakeClock
) -> None:
    assert await cache.refresh()
    idp.publish(jwks(public_jwk(rsa_key("a"), "k1"), public_jwk(rsa_key("b"), "k2")))
    # within kid_miss_min_interval of the last fetch: refused without fetching
    clock.advance(KID_MISS - 1)
    assert await reason_of(cache, "k2", "RS256", clock.now) is Reason.TOKEN_KEY_UNKNOWN
    assert idp.hits("/jwks") == 1
    # once the interval has passed, the miss refetches and finds the new key
    clock.advance(1)
    assert same_public_key(await cache.get_key("k2", "RS256", clock.now), rsa_key("b"))
    assert idp.hits("/jwks") == 2
    assert same_public_key(await cache.get_key("k1", "RS256", clock.now), rsa_key("a"))


async def test_concurrent_misses_share_one_fetch(
    idp: IdpServer, cache: JwksCache, clock: FakeClock
) -> None:
    assert await cache.refresh()
    idp.set_json(
        "/jwks",
        jwks(public_jwk(rsa_key("a"), "k1"), public_jwk(rsa_key("b"), "k2")),
        delay=0.2,
    )
    clock.advance(KID_MISS)
    keys = await asyncio.gather(*(cache.get_key("k2", "RS256", clock.now) for _ in range(50)))
    assert all(same_public_key(key, rsa_key("b")) for key in keys)
    assert idp.hits("/jwks") == 2  # the initial load + exactly one for 50 concurrent misses
    assert cache.fetch_count == 2


async def test_cold_start_concurrent_callers_share_one_fetch(
    idp: IdpServer, cache: JwksCache, clock: FakeClock
) -> None:
    idp.set_json("/jwks", jwks(public_jwk(rsa_key("a"), "k1")), delay=0.1)
    results = await asyncio.gather(
        cache.refresh(),
        cache.refresh(),
        *(cache.get_key("k1", "RS256", clock.now) for _ in range(20)),
    )
    assert results[:2] == [True, True]
    assert (idp.hits(WELL_KNOWN), idp.hits("/jwks"), cache.fetch_count) == (1, 1, 1)


async def test_cancelled_caller_does_not_cancel_the_shared_fetch(
    idp: IdpServer, cache: JwksCache, clock: FakeClock
) -> None:
    idp.set_json("/jwks", jwks(public_jwk(rsa_key("a"), "k1")), delay=0.2)
    impatient = asyncio.create_task(cache.get_key("k1", "RS256", clock.now))
    patient = asyncio.create_task(cache.get_key("k1", "RS256", clock.now))
    await asyncio.sleep(0.05)
    impatient.cancel()
    assert same_public_key(await patient, rsa_key("a"))
    assert cache.fetch_count == 1


async def test_random_kid_flood_causes_bounded_fetches(
    idp: IdpServer, cache: JwksCache, clock: FakeClock
) -> None:
    assert await cache.refresh()
    start = idp.hits("/jwks")
    # 500 random kids, one every 0.1 s of (fake) time: 50 s of flooding
    for _ in range(500):
        clock.advance(0.1)
        reason = await reason_of(cache, secrets.token_hex(8), "RS256", clock.now)
        assert reason is Reason.TOKEN_KEY_UNKNOWN
    sequential = idp.hits("/jwks") - start
    # at most one fetch per kid_miss_min_interval: 50 s / 30 s -> 1 (plus the load before)
    assert sequential <= 50 / KID_MISS + 1
    assert sequential == 1
    # 500 random kids at once, with the interval elapsed: they join a single fetch
    clock.advance(KID_MISS)
    before = idp.hits("/jwks")
    reasons = await asyncio.gather(
        *(reason_of(cache, secrets.token_hex(8), "RS256", clock.now) for _ in range(500))
    )
    assert set(reasons) == {Reason.TOKEN_KEY_UNKNOWN}
    assert idp.hits("/jwks") - before == 1
    print(f"500 random kids over 50s -> {sequential} fetch(es); 500 concurrent -> 1")


async def test_known_kid_with_wrong_algorithm_does_not_refetch(
    idp: IdpServer, cache: JwksCache, clock: FakeClock
) -> None:
    assert await cache.refresh()
    clock.advance(KID_MISS * 2)
    assert await reason_of(cache, "k1", "ES256", clock.now) is Reason.TOKEN_KEY_UNKNOWN
    assert idp.hits("/jwks") == 1


# -- last-known-good and staleness -------------------------------------------------------------


async def test_idp_down_keeps_last_known_good_keys(
    idp: IdpServer, cache: JwksCache, clock: FakeClock
) -> None:
    assert await cache.refresh()
    idp.stop()
    clock.advance(KID_MISS)
    assert not await cache.refresh()
    assert cache.failure_count == 1
    assert cache.is_ready(clock.now)
    assert same_public_key(await cache.get_key("k1", "RS256", clock.now), rsa_key("a"))
    # an unknown kid is still just unknown (the miss refetch fails, the keys stay)
    clock.advance(KID_MISS)
    assert await reason_of(cache, "k9", "RS256", clock.now) is Reason.TOKEN_KEY_UNKNOWN
    assert cache.failure_count == 2
    # usable until max_staleness after the last success, then keys_unavailable
    clock.now = cache.last_success_at + STALE  # type: ignore[operator]
    assert cache.is_ready(clock.now)
    assert await cache.get_key("k1", "RS256", clock.now)
    clock.advance(1)
    assert not cache.is_ready(clock.now)
    assert await reason_of(cache, "k1", "RS256", clock.now) is Reason.KEYS_UNAVAILABLE


async def test_bad_responses_do_not_replace_good_keys(
    idp: IdpServer, cache: JwksCache, clock: FakeClock
) -> None:
    assert await cache.refresh()
    for reply in (
        Reply(status=500, body=b"{}"),
        Reply(body=b"not json"),
        Reply(body=b'{"keys": []}'),
        Reply(body=b'{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "k1"}]}'),
    ):
        idp.set_reply("/jwks", reply)
        assert not await cache.refresh()
        assert same_public_key(await cache.get_key("k1", "RS256", clock.now), rsa_key("a"))


async def test_stale_keys_refetch_is_rate_limited(
    idp: IdpServer, cache: JwksCache, clock: FakeClock
) -> None:
    assert await cache.refresh()
    idp.set_reply("/jwks", Reply(status=503))
    clock.advance(STALE + 1)
    before = idp.hits("/jwks")
    for _ in range(100):
        assert await reason_of(cache, "k1", "RS256", clock.now) is Reason.KEYS_UNAVAILABLE
    assert idp.hits("/jwks") - before == 1
    # the IdP recovers: the next allowed attempt restores service
    idp.publish(jwks(public_jwk(rsa_key("a"), "k1")))
    clock.advance(KID_MISS)
    assert await cache.get_key("k1", "RS256", clock.now)
    assert cache.is_ready(clock.now)


# -- response limits -------------------------------------------------------------------------


def big_jwks() -> dict[str, Any]:
    return jwks(*(public_jwk(rsa_key("a"), f"k{i}") for i in range(3)))  # ~1.3 KB


@pytest.mark.parametrize("content_length", [True, False])
async def test_oversized_jwks_refused(
    idp: IdpServer, client: httpx.AsyncClient, clock: FakeClock, content_length: bool
) -> None:
    idp.set_json("/jwks", big_jwks(), content_length=content_length)
    cache = cache_for(idp, client, clock, jwks={"max_bytes": 1024})
    assert not await cache.refresh()
    assert cache.last_error is not None and "larger than 1024" in cache.last_error
    assert await reason_of(cache, "k1", "RS256", clock.now) is Reason.KEYS_UNAVAILABLE
    # the same document fits a larger limit
    assert await cache_for(idp, client, clock, jwks={"max_bytes": 4096}).refresh()


@pytest.mark.parametrize(
    "reply",
    [
        Reply(status=302, headers={"location": "/jwks-real"}),
        Reply(status=404),
        Reply(body=b"{}", delay=1.0),
    ],
    ids=["redirect", "not-found", "timeout"],
)
async def test_failed_fetches(
    idp: IdpServer, client: httpx.AsyncClient, clock: FakeClock, reply: Reply
) -> None:
    idp.set_json("/jwks-real", jwks(public_jwk(rsa_key("a"), "k1")))
    idp.set_reply("/jwks", reply)
    cache = cache_for(idp, client, clock, jwks={"fetch_timeout": 0.3})
    assert not await cache.refresh()
    assert idp.hits("/jwks-real") == 0
    assert not cache.is_ready(clock.now)


# -- which keys are usable -------------------------------------------------------------------


async def test_oct_keys_are_ignored(idp: IdpServer, cache: JwksCache, clock: FakeClock) -> None:
    oct_key = {"kty": "oct", "kid": "shared", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ", "alg": "HS256"}
    idp.publish(jwks(oct_key, public_jwk(rsa_key("a"), "k1")))
    assert await cache.refresh()
    for alg in ("RS256", "ES256", "HS256"):
        assert await reason_of(cache, "shared", alg, clock.now) is Reason.TOKEN_KEY_UNKNOWN
    assert await cache.get_key("k1", "RS256", clock.now)


ALGS = ["RS256", "PS256", "ES256", "ES384", "EdDSA"]
RSA = public_jwk(rsa_key("a"), "rsa")
P256 = public_jwk(ec_key("e"), "p256")


@pytest.mark.parametrize(
    ("jwk", "usable_for"),
    [
        (RSA, {"RS256", "PS256"}),
        ({**RSA, "alg": "RS256"}, {"RS256"}),
        ({**RSA, "alg": "PS256"}, {"PS256"}),
        ({**RSA, "alg": "RS384"}, set()),  # alg not allowed for this issuer
        ({**RSA, "use": "sig"}, {"RS256", "PS256"}),
        ({**RSA, "use": "enc"}, set()),
        ({**RSA, "key_ops": ["verify"]}, {"RS256", "PS256"}),
        ({**RSA, "key_ops": ["encrypt"]}, set()),
        ({**RSA, "kid": 7}, set()),
        (private_jwk(rsa_key("a"), "rsa"), set()),  # private material never used
        (public_jwk(rsa_key("weak", 1024), "rsa"), set()),  # below 2048 bits
        ({**RSA, "n": "AQAB"}, set()),  # garbage modulus
        (P256, {"ES256"}),
        ({**P256, "alg": "ES384"}, set()),
        (public_jwk(ec_key("e384", "P-384"), "p384"), {"ES384"}),
        ({**P256, "crv": "P-384"}, set()),  # claims a curve its points are not on
        (public_jwk(ed_key("ed"), "ed"), {"EdDSA"}),
        ({"kty": "oct", "kid": "o", "k": "c2VjcmV0"}, set()),
        ({"kty": "XYZ", "kid": "x"}, set()),
        ("not a key", set()),
    ],
)
def test_key_filtering(jwk: Any, usable_for: set[str]) -> None:
    anchor = public_jwk(rsa_key("anchor"), "anchor", alg="RS256")  # keeps the set non-empty
    keys = parse_jwks(jwks(anchor, jwk), ALGS)
    kid = jwk.get("kid") if isinstance(jwk, dict) else None
    found = {alg for alg in ALGS if isinstance(kid, str) and keys.find(kid, alg) is not None}
    assert found == usable_for
    for alg in found:
        bound = keys.find(kid, alg)
        assert bound is not None and bound.algorithm_name == alg


@pytest.mark.parametrize(
    ("document", "algorithms"),
    [
        ({}, ALGS),
        ({"keys": {}}, ALGS),
        ([], ALGS),
        ({"keys": []}, ALGS),
        ({"keys": [RSA]}, ["ES256"]),
    ],
)
def test_parse_jwks_refuses_documents_without_usable_keys(
    document: Any, algorithms: list[str]
) -> None:
    with pytest.raises(KeyFetchError):
        parse_jwks(document, algorithms)


async def test_token_without_kid_needs_exactly_one_candidate(
    idp: IdpServer, cache: JwksCache, clock: FakeClock
) -> None:
    idp.publish(jwks(public_jwk(rsa_key("a"), None), public_jwk(ec_key("e"), None)))
    assert await cache.refresh()
    assert same_public_key(await cache.get_key(None, "RS256", clock.now), rsa_key("a"))
    assert same_public_key(await cache.get_key(None, "ES256", clock.now), ec_key("e"))
    idp.publish(jwks(public_jwk(rsa_key("a"), "k1"), public_jwk(rsa_key("b"), "k2")))
    assert await cache.refresh()
    clock.advance(KID_MISS)
    assert await reason_of(cache, None, "RS256", clock.now) is Reason.TOKEN_KEY_UNKNOWN
    assert idp.hits("/jwks") == 2  # ambiguity is not fixed by refetching


async def test_duplicate_kid_keeps_first(
    idp: IdpServer, cache: JwksCache, clock: FakeClock
) -> None:
    idp.publish(jwks(public_jwk(rsa_key("a"), "k1"), public_jwk(rsa_key("b"), "k1")))
    assert await cache.refresh()
    assert same_public_key(await cache.get_key("k1", "RS256", clock.now), rsa_key("a"))


# -- background refresh with backoff -----------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "expected"),
    [(0, 300.0), (1, 1.0), (2, 2.0), (3, 4.0), (8, 128.0), (9, 256.0), (10, 300.0), (500, 300.0)],
)
def test_backoff_delay(failures: int, expected: float) -> None:
    assert backoff_delay(failures, 1.0, 300.0) == expected


async def test_background_retries_with_backoff_then_recovers(
    idp: IdpServer, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    idp.set_reply("/jwks", Reply(status=503))
    cache = cache_for(idp, client, clock, jwks={"refresh_interval": 600}, retry_base=0.05)
    await cache.start()
    try:
        await asyncio.sleep(0.7)
        attempts = idp.hits("/jwks")
        # delays 0.05, 0.1, 0.2, 0.4 (x0.8-1.0 jitter): about 4-5 attempts in 0.7 s, where a
        # fixed 50 ms retry would have made ~14 (the lower bound allows for a slow machine).
        assert 2 <= attempts <= 7, attempts
        assert not cache.is_ready(clock.now)
        idp.publish(jwks(public_jwk(rsa_key("a"), "k1")))
        await eventually(lambda: cache.is_ready(clock.now))
        assert cache.consecutive_failures == 0
    finally:
        await cache.aclose()


async def test_start_never_raises_and_aclose_is_idempotent(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    server = IdpServer()
    server.stop()  # nothing listens
    cache = JwksCache(make_issuer(server.url), client, clock, retry_base=0.01)
    await cache.start()
    await cache.start()
    await asyncio.sleep(0.1)
    assert cache.failure_count >= 1
    assert not cache.is_ready(clock.now)
    await cache.aclose()
    await cache.aclose()
