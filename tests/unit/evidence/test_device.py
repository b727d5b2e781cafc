"""Device evidence: claims mapping, device attestation tokens (verified with the provider's own
JWKS from a real local HTTP server, bound to the identity token, fresh), device certificates."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from types import MappingProxyType
from typing import Any

import httpx
import pytest

from app.evidence.device import (
    DeviceTokens,
    certificate_device,
    device_from_claims,
    identity_device,
    is_bound,
    jwk_thumbprint,
)
from app.evidence.model import Device
from app.identity.jwks import JwksCache
from app.identity.principal import Principal
from app.identity.verify import TokenVerifier
from app.reasons import Reason
from app.settings import DeviceClaimNames, DeviceTokenSettings
from tests.unit.evidence.evidence_support import MDM_KEY, device_token
from tests.unit.identity.identity_support import (
    NOW,
    FakeClock,
    IdpServer,
    ec_key,
    jwks,
    make_issuer,
    public_jwk,
)

OTHER_KEY = ec_key("someone-else")
DEVICE_KEY = ec_key("device-hardware-key")
# RFC 7638 §3.1: the example RSA key and its thumbprint.
RFC7638_KEY = {
    "kty": "RSA",
    "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSo"
    "c_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FD"
    "W2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh"
    "6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}


def principal(**claims: Any) -> Principal:
    return Principal(
        issuer="https://idp.example.com",
        subject="alice",
        groups=frozenset(),
        scopes=frozenset(),
        audience=("api",),
        expires_at=int(NOW) + 300,
        issued_at=int(NOW),
        claims=MappingProxyType({"sub": "alice", **claims}),
    )


@pytest.fixture
def mdm() -> Iterator[IdpServer]:
    with IdpServer.running() as server:
        server.publish(jwks(public_jwk(MDM_KEY, "mdm-1")))
        yield server


@asynccontextmanager
async def device_tokens(mdm: IdpServer, **settings: Any) -> AsyncIterator[DeviceTokens]:
    provider = make_issuer(mdm.url, audiences=["api"], algorithms=["ES256"])
    config = DeviceTokenSettings.model_validate(
        {"provider": provider, "max_age": "10m", "country": "geo.country", **settings}
    )
    async with httpx.AsyncClient() as client:
        cache = JwksCache(provider, client, FakeClock())
        yield DeviceTokens(config, TokenVerifier([provider], {provider.issuer: cache}, 8192))
        await cache.aclose()


@pytest.fixture
async def tokens(mdm: IdpServer) -> AsyncIterator[DeviceTokens]:
    async with device_tokens(mdm) as made:
        yield made


async def test_a_bound_fresh_device_token_is_device_evidence(
    tokens: DeviceTokens, mdm: IdpServer
) -> None:
    found = await tokens.attest(device_token(mdm), principal(device_id="laptop-7"), NOW)
    assert found.problem is None
    assert found.device == Device(
        id="laptop-7",
        source="device_token",
        managed=True,
        compliant=True,
        os_name="macos",
        os_version="14.4.1",
        disk_encrypted=True,
        screen_lock=False,
        risk_score=12.0,
        assessed_at=NOW - 120,
    )
    assert found.country == "DE"


async def test_cnf_binds_the_device_key(tokens: DeviceTokens, mdm: IdpServer) -> None:
    jwk = public_jwk(DEVICE_KEY, None)
    thumbprint = jwk_thumbprint(jwk)
    token = device_token(mdm, cnf={"jwk": jwk})
    bound = await tokens.attest(token, principal(cnf={"jkt": thumbprint}), NOW)
    assert bound.device is not None and bound.device.id == "laptop-7"
    other = jwk_thumbprint(public_jwk(OTHER_KEY, None))
    unbound = await tokens.attest(token, principal(cnf={"jkt": other}), NOW)
    assert unbound == type(unbound)(problem=Reason.DEVICE_UNBOUND)


@pytest.mark.parametrize(
    ("identity_claims", "token_overrides", "problem"),
    [
        ({"device_id": "laptop-9"}, {}, Reason.DEVICE_UNBOUND),  # someone else's device
        ({}, {}, Reason.DEVICE_UNBOUND),  # the identity token names no device
        ({"device_id": ["laptop-7"]}, {}, Reason.DEVICE_UNBOUND),  # not a string
        (
            {"device_id": "laptop-7"},
            {"iat": int(NOW) - 700, "exp": int(NOW) + 60},
            Reason.DEVICE_STALE,
        ),
        ({"device_id": "laptop-7"}, {"exp": int(NOW) - 60}, Reason.DEVICE_INVALID),
        ({"device_id": "laptop-7"}, {"aud": "other"}, Reason.DEVICE_INVALID),
        ({"device_id": "laptop-7"}, {"iss": "https://idp.example.com"}, Reason.DEVICE_INVALID),
    ],
)
async def test_device_tokens_that_are_no_evidence(
    tokens: DeviceTokens,
    mdm: IdpServer,
    identity_claims: dict[str, Any],
    token_overrides: dict[str, Any],
    problem: Reason,
) -> None:
    found = await tokens.attest(
        device_token(mdm, **token_overrides), principal(**identity_claims), NOW
    )
    assert (found.device, found.problem) == (None, problem)


async def test_forged_and_unbound_without_identity(tokens: DeviceTokens, mdm: IdpServer) -> None:
    forged = device_token(mdm, key=OTHER_KEY)
    assert (await tokens.attest(forged, principal(device_id="laptop-7"), NOW)).problem is (
        Reason.DEVICE_INVALID
    )
    assert (await tokens.attest("not.a.jwt", principal(), NOW)).problem is Reason.DEVICE_INVALID
    assert (await tokens.attest(device_token(mdm), None, NOW)).problem is Reason.DEVICE_UNBOUND
    assert (await tokens.attest(None, principal(), NOW)).device is None


async def test_bearer_prefix_and_defaults(tokens: DeviceTokens, mdm: IdpServer) -> None:
    token = device_token(mdm, posture_time=None, risk_score="high", managed="yes")
    found = await tokens.attest(f"Bearer {token}", principal(device_id="laptop-7"), NOW)
    assert found.device is not None
    assert found.device.assessed_at is None  # no posture_time: a posture of unknown age
    assert found.device.age(NOW) is None
    assert found.device.risk_score is None and found.device.managed is None  # wrong types


async def test_the_token_iat_is_the_posture_time_only_when_configured(mdm: IdpServer) -> None:
    token = device_token(mdm, posture_time=None)
    async with device_tokens(mdm, posture_time_from_iat=True) as tokens:
        found = await tokens.attest(token, principal(device_id="laptop-7"), NOW)
        assert found.device is not None and found.device.assessed_at == NOW - 60
        # A posture time claim, when there is one, still wins over iat.
        given = device_token(mdm, posture_time=int(NOW) - 300)
        found = await tokens.attest(given, principal(device_id="laptop-7"), NOW)
        assert found.device is not None and found.device.assessed_at == NOW - 300


@pytest.mark.parametrize(
    "posture_time",
    [
        "yesterday",
        "2026-11-26T10:00:00",  # no offset: whose clock?
        "",
        True,
        [int(NOW) - 60],
        {"at": int(NOW) - 60},
        1e300,
        -(2**60),
        int(NOW) + 3600,  # assessed in the future
    ],
    ids=repr,
)
@pytest.mark.parametrize("from_iat", [False, True], ids=["default", "posture_time_from_iat"])
async def test_an_unreadable_posture_time_refuses_the_device_token(
    mdm: IdpServer, posture_time: Any, from_iat: bool
) -> None:
    """It used to fall back to the token's iat: a fresh posture nobody had assessed."""
    async with device_tokens(mdm, posture_time_from_iat=from_iat) as tokens:
        token = device_token(mdm, posture_time=posture_time)
        found = await tokens.attest(token, principal(device_id="laptop-7"), NOW)
    assert (found.device, found.problem) == (None, Reason.DEVICE_INVALID)


@pytest.mark.parametrize(
    ("posture_time", "expected"),
    [
        ("2023-11-14T21:13:20+00:00", NOW - 3600),
        ("2023-11-14T22:13:20+01:00", NOW - 3600),
        (int(NOW) - 90, NOW - 90),
        (NOW - 90.5, NOW - 90.5),
        (int(NOW) + 10, NOW + 10),  # within the provider's leeway
    ],
)
async def test_readable_posture_times(
    tokens: DeviceTokens, mdm: IdpServer, posture_time: Any, expected: float
) -> None:
    token = device_token(mdm, posture_time=posture_time)
    found = await tokens.attest(token, principal(device_id="laptop-7"), NOW)
    assert found.device is not None and found.device.assessed_at == expected


@pytest.mark.parametrize(
    ("claims", "names", "expected"),
    [
        (
            {"dev": {"id": "d1", "mdm": {"managed": True}, "os": "Windows", "ver": "10.0.22631"}},
            DeviceClaimNames(managed="dev.mdm.managed", os_name="dev.os", os_version="dev.ver"),
            Device("d1", "token_claims", managed=True, os_name="windows", os_version="10.0.22631"),
        ),
        (
            {"https://example.com/device": {"compliant": False}, "at": "2026-11-26T10:00:00+00:00"},
            DeviceClaimNames(compliant="https://example.com/device", assessed_at="at"),
            Device("d1", "token_claims", assessed_at=1795687200.0),
        ),
        (
            {"v": 14.4, "risk": float("nan"), "when": "yesterday", "m": 1},
            DeviceClaimNames(os_version="v", risk_score="risk", assessed_at="when", managed="m"),
            Device("d1", "token_claims", os_version="14.4"),
        ),
    ],
)
def test_device_from_claims(
    claims: dict[str, Any], names: DeviceClaimNames, expected: Device
) -> None:
    assert device_from_claims("d1", claims, names, "token_claims") == expected


def test_identity_device_needs_a_device_id() -> None:
    names = DeviceClaimNames(compliant="device.compliant")
    found = identity_device(principal(device={"id": "d2", "compliant": True}), names, "device.id")
    assert found == Device("d2", "token_claims", compliant=True)
    assert identity_device(principal(device={"compliant": True}), names, "device.id") is None
    assert identity_device(principal(device={"id": ""}), names, "device.id") is None


def test_certificate_device() -> None:
    uris = ["spiffe://example.org/a", "urn:ztauthz:device:laptop-3"]
    assert certificate_device(uris, "urn:ztauthz:device:", True) == Device(
        "laptop-3", "client_certificate", managed=True
    )
    assert certificate_device(uris, "urn:ztauthz:device:", False) == Device(
        "laptop-3", "client_certificate"
    )
    assert certificate_device(["urn:ztauthz:device:"], "urn:ztauthz:device:", True) is None


def test_jwk_thumbprint_follows_rfc7638() -> None:
    assert jwk_thumbprint(RFC7638_KEY) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    assert jwk_thumbprint({"kty": "oct", "k": "x"}) is None
    assert jwk_thumbprint({"kty": "EC", "crv": "P-256", "x": "a"}) is None


def test_binding_rules() -> None:
    assert is_bound({"device_id": "d"}, "d", {}, "device_id")
    assert is_bound({"ctx": {"dev": "d"}}, "d", {}, "ctx.dev")
    assert not is_bound({"device_id": "D"}, "d", {}, "device_id")
    assert not is_bound({"cnf": {"jkt": None}}, "d", {"cnf": {"jwk": RFC7638_KEY}}, "device_id")
    jkt = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    assert is_bound({"cnf": {"jkt": jkt}}, "d", {"cnf": {"jwk": RFC7638_KEY}}, "device_id")
    assert not is_bound({"cnf": {"jkt": jkt}}, "d", {"cnf": {"jkt": jkt}}, "device_id")
