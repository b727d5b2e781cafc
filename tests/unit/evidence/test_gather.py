"""The evidence step end to end (without Envoy): which sources are believed for which
transport, and how devices from several sources are merged."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx
import pytest

from app.dev.pki import make_ca
from app.evidence.gather import EvidenceGatherer, build_gatherer
from app.evidence.model import Device, Evidence, Location, Workload
from app.identity.principal import Principal
from app.reasons import Reason
from app.request import RequestContext, make_context
from app.settings import ConfigError, Settings
from tests.unit.evidence.evidence_support import MDM_KEY, device_token, write_mmdb
from tests.unit.identity.identity_support import NOW, FakeClock, IdpServer, jwks, public_jwk

IDP = "https://idp.example.com"
SPIFFE = "spiffe://example.org/ns/billing/sa/worker"


def settings(evidence: Mapping[str, Any]) -> Settings:
    return Settings.model_validate(
        {"issuers": [{"issuer": IDP, "audiences": ["api"]}], "evidence": dict(evidence)}
    )


def principal(**claims: Any) -> Principal:
    return Principal(
        issuer=IDP,
        subject="alice",
        groups=frozenset(),
        scopes=frozenset(),
        audience=("api",),
        expires_at=int(NOW) + 300,
        issued_at=int(NOW),
        claims=MappingProxyType({"sub": "alice", **claims}),
    )


def http(headers: Mapping[str, str]) -> RequestContext:
    return make_context("GET", "api.example.com", "/", headers, "http")


@pytest.fixture
def mdm() -> Iterator[IdpServer]:
    with IdpServer.running() as server:
        server.publish(jwks(public_jwk(MDM_KEY, "mdm-1")))
        yield server


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c


async def gatherer(config: Settings, client: httpx.AsyncClient) -> EvidenceGatherer:
    found = build_gatherer(config, client, FakeClock())
    assert found is not None
    return found


async def test_nothing_configured_gathers_nothing(client: httpx.AsyncClient) -> None:
    assert build_gatherer(settings({}), client, FakeClock()) is None
    assert (
        build_gatherer(settings({"location": {"country_from_claims": True}}), client, FakeClock())
        is None
    )


async def test_location_from_trusted_sources_only(
    tmp_path: Path, client: httpx.AsyncClient
) -> None:
    mmdb = write_mmdb(tmp_path / "c.mmdb", {"203.0.113.0/24": "DE", "198.51.100.0/24": "US"})
    config = settings(
        {
            "client_ip": {"trusted_proxies": ["10.0.0.0/8"]},
            "networks": {"corp-vpn": ["203.0.113.0/28"], "tor-exits": ["198.51.100.0/24"]},
            "geoip": {"path": str(mmdb)},
            "token_claims": [{"issuer": IDP, "country": "loc.country"}],
        }
    )
    found = await gatherer(config, client)
    headers = {
        "x-ztauthz-client-address": "10.0.0.5",
        "x-forwarded-for": "198.51.100.1, 203.0.113.9, 10.0.0.5, 192.0.2.2",
        "x-country": "US",  # a client-set header: never read
    }
    evidence = await found.gather(http(headers), principal(loc={"country": "fr"}), NOW)
    assert evidence.location == Location(
        client_ip="203.0.113.9",
        networks=frozenset({"corp-vpn"}),
        ip_country="DE",
        claim_country="FR",
        country="DE",
    )
    # Without Envoy's asserted peer nothing is known about the address.
    unknown = await found.gather(http({"x-forwarded-for": "203.0.113.9"}), None, NOW)
    assert unknown.location == Location()
    await found.aclose()


async def test_claimed_country_only_when_allowed(client: httpx.AsyncClient) -> None:
    base = {"client_ip": {}, "token_claims": [{"issuer": IDP, "country": "country"}]}
    ctx = http({"x-ztauthz-client-address": "192.0.2.9"})
    who = principal(country="NL")
    strict = await (await gatherer(settings(base), client)).gather(ctx, who, NOW)
    assert (strict.location.claim_country, strict.location.country) == ("NL", None)
    allowed = {**base, "location": {"country_from_claims": True}}
    lenient = await (await gatherer(settings(allowed), client)).gather(ctx, who, NOW)
    assert lenient.location.country == "NL"


@pytest.mark.parametrize(
    ("forward", "transport", "headers", "peer", "expected"),
    [
        # HTTP: XFCC only when Envoy replaces it (SANITIZE_SET) and exactly one element.
        (
            "SANITIZE_SET",
            "http",
            {"x-forwarded-client-cert": f"Hash=ab;URI={SPIFFE}"},
            None,
            SPIFFE,
        ),
        ("SANITIZE", "http", {"x-forwarded-client-cert": f"Hash=ab;URI={SPIFFE}"}, None, None),
        (
            "SANITIZE_SET",
            "http",
            {"x-forwarded-client-cert": f"URI={SPIFFE},URI=spiffe://example.org/x"},
            None,
            None,
        ),
        ("SANITIZE_SET", "http", {"x-forwarded-client-cert": 'URI="unterminated'}, None, None),
        ("SANITIZE_SET", "http", {}, None, None),
        # gRPC: Envoy's own CheckRequest fields; a header means nothing there.
        ("SANITIZE", "grpc", {}, SPIFFE, SPIFFE),
        ("SANITIZE_SET", "grpc", {"x-forwarded-client-cert": f"URI={SPIFFE}"}, None, None),
        ("SANITIZE", "grpc", {}, "CN=not a spiffe id", None),
    ],
)
async def test_workload_sources(
    client: httpx.AsyncClient,
    forward: str,
    transport: str,
    headers: dict[str, str],
    peer: str | None,
    expected: str | None,
) -> None:
    config = settings({"client_certificate": {"envoy_forward_client_cert_details": forward}})
    ctx = make_context("GET", "h", "/", headers, transport, peer_principal=peer)
    evidence = await (await gatherer(config, client)).gather(ctx, None, NOW)
    assert (evidence.workload.id if evidence.workload else None) == expected


async def test_grpc_peer_certificate_gives_workload_and_device(
    tmp_path: Path, client: httpx.AsyncClient
) -> None:
    cert = make_ca(tmp_path).issue("w", uris=[SPIFFE, "urn:dev:laptop-1"]).pem()
    config = settings(
        {
            "client_certificate": {
                "device_uri_prefix": "urn:dev:",
                "devices_are_managed": True,
            }
        }
    )
    ctx = make_context("GET", "h", "/", {}, "grpc", peer_certificate=cert, peer_principal=SPIFFE)
    evidence = await (await gatherer(config, client)).gather(ctx, None, NOW)
    assert evidence == Evidence(
        device=Device("laptop-1", "client_certificate", managed=True),
        workload=Workload(SPIFFE, "example.org", "peer"),
    )


async def test_device_sources_in_order(mdm: IdpServer, client: httpx.AsyncClient) -> None:
    config = settings(
        {
            "token_claims": [
                {"issuer": IDP, "device": {"id": "device_id", "compliant": "device_ok"}}
            ],
            "device_token": {
                "provider": {"issuer": mdm.url, "audiences": ["api"], "algorithms": ["ES256"]}
            },
            "client_certificate": {
                "envoy_forward_client_cert_details": "SANITIZE_SET",
                "device_uri_prefix": "urn:dev:",
            },
        }
    )
    found = await gatherer(config, client)
    xfcc = {"x-forwarded-client-cert": "URI=urn:dev:cert-device"}
    token = device_token(mdm)
    # 1. a bound device token wins
    both = await found.gather(
        http({**xfcc, "x-device-token": token}), principal(device_id="laptop-7"), NOW
    )
    assert both.device is not None and both.device.source == "device_token"
    assert both.device_problem is None
    # 2. an unbound one is no evidence: the identity token's own device claims are next
    unbound = await found.gather(
        http({**xfcc, "x-device-token": token}),
        principal(device_id="laptop-9", device_ok=True),
        NOW,
    )
    assert unbound.device == Device("laptop-9", "token_claims", compliant=True)
    assert unbound.device_problem is Reason.DEVICE_UNBOUND
    # 3. then the certificate
    cert_only = await found.gather(http(xfcc), None, NOW)
    assert cert_only.device == Device("cert-device", "client_certificate")
    await found.aclose()


async def test_an_unreadable_geoip_database_is_a_configuration_error(
    tmp_path: Path, client: httpx.AsyncClient
) -> None:
    config = settings({"client_ip": {}, "geoip": {"path": str(tmp_path / "absent.mmdb")}})
    with pytest.raises(ConfigError, match=r"evidence\.geoip\.path: cannot open"):
        build_gatherer(config, client, FakeClock())
