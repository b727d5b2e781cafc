"""ztauthz's discovery and token verification against tokens of a certified OpenID provider.

The provider (npm ``oidc-provider``, see conftest.py) issues RFC 9068 JWT access tokens through
the client_credentials grant with RFC 8707 resource indicators: ``sub`` and ``client_id`` are
the client, ``aud`` is the resource indicator, ``scope`` the granted scopes, ``typ`` is
``at+jwt``. ztauthz must accept them exactly as it would any other issuer's tokens, and refuse
them for the same reasons.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import jwt
import pytest

from app.identity.discovery import DiscoveryError, fetch_jwks_uri
from app.identity.errors import TokenError
from app.identity.verify import TokenVerifier, build_key_sources
from app.reasons import Reason
from app.settings import Issuer
from tests.interop.oidc_provider_support import OidcProvider

pytestmark = pytest.mark.interop

SCOPES = "invoices:read invoices:write"
READY_TIMEOUT = 10.0


def issuer_settings(
    provider: OidcProvider,
    audiences: Sequence[str],
    algorithms: Sequence[str] = ("RS256", "ES256"),
    lifetime_cap: str = "15m",
) -> Issuer:
    return Issuer.model_validate(
        {
            "issuer": provider.issuer,
            "audiences": list(audiences),
            "algorithms": list(algorithms),
            "max_token_lifetime": lifetime_cap,
            "claims": {"groups": "groups", "scopes": "scope"},
        }
    )


@asynccontextmanager
async def running_verifier(issuer: Issuer) -> AsyncIterator[TokenVerifier]:
    """A verifier whose key source has loaded the provider's JWKS (by discovery)."""
    async with httpx.AsyncClient() as client:
        sources = build_key_sources([issuer], client, time.time)
        try:
            for source in sources.values():
                await source.start()
            deadline = time.monotonic() + READY_TIMEOUT
            while not all(source.is_ready(time.time()) for source in sources.values()):
                assert time.monotonic() < deadline, "the JWKS never loaded"
                await asyncio.sleep(0.02)
            yield TokenVerifier([issuer], sources, max_token_bytes=8192)
        finally:
            for source in sources.values():
                await source.aclose()


async def get_token(
    provider: OidcProvider, resource: str, scope: str = SCOPES, client_id: str | None = None
) -> str:
    """A fresh access token from the provider (the blocking request runs off the loop)."""
    client = client_id or provider.client_ids[0]
    return await asyncio.to_thread(provider.get_token, resource, scope, client)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def with_payload(token: str, **changes: Any) -> str:
    """The token with claims changed and the original signature kept."""
    header, payload, signature = token.split(".")
    claims = json.loads(_unb64(payload))
    claims.update(changes)
    return ".".join((header, _b64(json.dumps(claims).encode()), signature))


def with_flipped_signature(token: str) -> str:
    header, payload, signature = token.split(".")
    raw = bytearray(_unb64(signature))
    raw[0] ^= 0x01
    return ".".join((header, payload, _b64(bytes(raw))))


async def refused(verifier: TokenVerifier, token: str, now: float) -> Reason:
    with pytest.raises(TokenError) as caught:
        await verifier.verify(token, now)
    return caught.value.reason


async def test_discovery_document_is_accepted(oidc_provider: OidcProvider) -> None:
    async with httpx.AsyncClient() as client:
        raw = (await client.get(f"{oidc_provider.issuer}/.well-known/openid-configuration")).json()
        jwks_uri = await fetch_jwks_uri(
            client, oidc_provider.issuer, timeout=5.0, max_bytes=512 * 1024
        )
        assert jwks_uri == raw["jwks_uri"] == f"{oidc_provider.issuer}/jwks"
        # The issuer comparison is exact (OIDC Discovery §4.3): the same provider named with
        # a trailing slash is another issuer, and its document does not vouch for it.
        with pytest.raises(DiscoveryError, match="issuer"):
            await fetch_jwks_uri(
                client, oidc_provider.issuer + "/", timeout=5.0, max_bytes=512 * 1024
            )


@pytest.mark.parametrize(
    ("alg", "client", "scope"),
    [
        ("RS256", 0, SCOPES),
        ("ES256", 0, SCOPES),
        ("RS256", 1, "invoices:read"),
        ("ES256", 1, "invoices:read"),
    ],
)
async def test_provider_tokens_verify(
    oidc_provider: OidcProvider, alg: str, client: int, scope: str
) -> None:
    resource = oidc_provider.resources[alg]
    client_id = oidc_provider.client_ids[client]
    token = await get_token(oidc_provider, resource, scope, client_id)
    header = jwt.get_unverified_header(token)
    assert (header["alg"], header["typ"]) == (alg, "at+jwt")

    async with running_verifier(issuer_settings(oidc_provider, [resource])) as verifier:
        principal = await verifier.verify(token, time.time())

    assert principal.issuer == oidc_provider.issuer
    assert principal.subject == client_id
    assert principal.client_id == client_id
    assert principal.scopes == frozenset(scope.split())
    assert principal.groups == frozenset()
    assert principal.audience == (resource,)
    assert principal.expires_at - principal.issued_at == oidc_provider.token_ttl
    assert principal.token_id


async def test_token_for_another_resource_is_refused(oidc_provider: OidcProvider) -> None:
    token = await get_token(oidc_provider, oidc_provider.resources["RS256"])
    only_es256 = issuer_settings(oidc_provider, [oidc_provider.resources["ES256"]])
    async with running_verifier(only_es256) as verifier:
        assert await refused(verifier, token, time.time()) is Reason.TOKEN_AUDIENCE_INVALID


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
async def test_expired_and_altered_tokens_are_refused(
    oidc_provider: OidcProvider, alg: str
) -> None:
    resource = oidc_provider.resources[alg]
    token = await get_token(oidc_provider, resource, "invoices:read")
    exp = int(jwt.decode(token, options={"verify_signature": False})["exp"])
    settings = issuer_settings(oidc_provider, [resource])
    leeway = settings.leeway.total_seconds()
    async with running_verifier(settings) as verifier:
        now = time.time()
        assert (await verifier.verify(token, now)).scopes == {"invoices:read"}
        assert await refused(verifier, token, exp + leeway + 1) is Reason.TOKEN_EXPIRED
        escalated = with_payload(token, scope=SCOPES)
        assert await refused(verifier, escalated, now) is Reason.TOKEN_SIGNATURE_INVALID
        prolonged = with_payload(token, exp=exp + 3600)
        assert await refused(verifier, prolonged, now) is Reason.TOKEN_SIGNATURE_INVALID
        forged = with_flipped_signature(token)
        assert await refused(verifier, forged, now) is Reason.TOKEN_SIGNATURE_INVALID


async def test_algorithm_outside_the_allowlist_is_refused(oidc_provider: OidcProvider) -> None:
    resource = oidc_provider.resources["ES256"]
    token = await get_token(oidc_provider, resource)
    rs256_only = issuer_settings(oidc_provider, [resource], algorithms=["RS256"])
    async with running_verifier(rs256_only) as verifier:
        assert await refused(verifier, token, time.time()) is Reason.TOKEN_ALGORITHM_NOT_ALLOWED


async def test_lifetime_above_the_cap_is_refused(oidc_provider: OidcProvider) -> None:
    # The provider issues 300 s tokens; an issuer capped at 4 minutes refuses them.
    resource = oidc_provider.resources["RS256"]
    token = await get_token(oidc_provider, resource)
    capped = issuer_settings(oidc_provider, [resource], lifetime_cap="4m")
    async with running_verifier(capped) as verifier:
        assert await refused(verifier, token, time.time()) is Reason.TOKEN_LIFETIME_EXCEEDED
