"""JWKS caches tell telemetry about every fetch: counters, key age, rotation and failure events."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from app.identity.jwks import JwksCache
from app.policy.index import compile_policies
from app.settings import Settings
from app.telemetry.hub import Telemetry
from app.telemetry.logging import JsonFormatter
from tests.unit.identity.identity_support import (
    FakeClock,
    IdpServer,
    jwks,
    make_issuer,
    public_jwk,
    rsa_key,
)


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
def events_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("ztauthz.events")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


def events_in(stream: io.StringIO) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [line for line in lines if "event" in line]


async def test_fetches_rotation_and_failures(
    idp: IdpServer, client: httpx.AsyncClient, events_log: io.StringIO
) -> None:
    clock = FakeClock()
    issuer = make_issuer(idp.url, jwks={"fetch_timeout": 2.0})
    telemetry = Telemetry.create(Settings(issuers=[issuer]))
    telemetry.watch(lambda: compile_policies("sha256:test", [], []), clock)
    cache = JwksCache(issuer, client, clock, on_refresh=telemetry.jwks_refreshed)
    registry = telemetry.metrics.registry

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert sample("ztauthz_jwks_key_age_seconds", issuer=idp.url) is None  # nothing fetched yet

    assert await cache.refresh()
    clock.advance(30)
    assert sample("ztauthz_jwks_key_age_seconds", issuer=idp.url) == 30
    assert await cache.refresh()  # same keys: no rotation
    assert sample("ztauthz_jwks_key_age_seconds", issuer=idp.url) == 0

    idp.publish(jwks(public_jwk(rsa_key("b"), "k2"), public_jwk(rsa_key("a"), "k1")))
    assert await cache.refresh()
    idp.set_json("/jwks", {"keys": "not a list"})
    clock.advance(7)
    assert not await cache.refresh()
    assert sample("ztauthz_jwks_key_age_seconds", issuer=idp.url) == 7  # last good keys' age

    assert sample("ztauthz_jwks_refresh_total", issuer=idp.url, outcome="success") == 3
    assert sample("ztauthz_jwks_refresh_total", issuer=idp.url, outcome="failure") == 1
    assert sample("ztauthz_events_total", event="keys_rotated") == 1
    assert sample("ztauthz_events_total", event="key_refresh_failed") == 1
    rotated, failed = events_in(events_log)
    assert rotated["event"] == "keys_rotated" and rotated["issuer"] == idp.url
    assert (rotated["added"], rotated["removed"]) == (["k2"], [])
    assert failed["event"] == "key_refresh_failed" and failed["level"] == "warning"
    assert failed["keys_kept"] == 2 and failed["consecutive_failures"] == 1
    assert "keys" in failed["error"]
