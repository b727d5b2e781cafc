"""OIDC discovery and bounded fetching against a real local HTTP server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from app.identity.discovery import (
    DiscoveryError,
    KeyFetchError,
    discovery_url,
    fetch_json,
    fetch_jwks_uri,
    safe_url,
)
from tests.unit.identity.identity_support import IdpServer, Reply

WELL_KNOWN = "/.well-known/openid-configuration"


@pytest.fixture
def idp() -> Iterator[IdpServer]:
    with IdpServer.running() as server:
        yield server


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as http:
        yield http


async def test_returns_jwks_uri_of_matching_issuer(
    idp: IdpServer, client: httpx.AsyncClient
) -> None:
    idp.set_json(WELL_KNOWN, {"issuer": idp.url, "jwks_uri": f"{idp.url}/keys"})
    assert await fetch_jwks_uri(client, idp.url, 2.0, 4096) == f"{idp.url}/keys"
    assert idp.hits(WELL_KNOWN) == 1


async def test_issuer_with_path_and_trailing_slash(
    idp: IdpServer, client: httpx.AsyncClient
) -> None:
    issuer = f"{idp.url}/realms/main/"
    idp.set_json(
        "/realms/main" + WELL_KNOWN, {"issuer": issuer, "jwks_uri": "https://keys.example/jwks"}
    )
    assert await fetch_jwks_uri(client, issuer, 2.0, 4096) == "https://keys.example/jwks"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"issuer": "https://evil.example", "jwks_uri": "https://evil.example/k"}, "issuer"),
        ({"issuer": "{url}/", "jwks_uri": "{url}/k"}, "issuer"),  # trailing slash differs
        ({"jwks_uri": "{url}/k"}, "issuer"),
        ({"issuer": "{url}"}, "jwks_uri"),
        ({"issuer": "{url}", "jwks_uri": 5}, "jwks_uri"),
        ({"issuer": "{url}", "jwks_uri": "http://keys.example.com/jwks"}, "https"),
        ({"issuer": "{url}", "jwks_uri": "file:///etc/passwd"}, "https"),
        (["not", "an", "object"], "object"),
    ],
)
async def test_refuses_bad_discovery_documents(
    idp: IdpServer, client: httpx.AsyncClient, document: object, message: str
) -> None:
    if isinstance(document, dict):
        document = {
            k: v.format(url=idp.url) if isinstance(v, str) else v for k, v in document.items()
        }
    idp.set_json(WELL_KNOWN, document)
    with pytest.raises(DiscoveryError, match=message):
        await fetch_jwks_uri(client, idp.url, 2.0, 4096)


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (Reply(status=404, body=b"{}"), "HTTP 404"),
        (Reply(status=500, body=b"{}"), "HTTP 500"),
        (Reply(status=302, headers={"location": "/elsewhere"}), "HTTP 302"),
        (Reply(body=b"<html>"), "not valid JSON"),
        (Reply(body=b"[" * 2000 + b"]" * 2000), "not valid JSON"),  # nesting bomb
        (Reply(body=b"x" * 5000), "larger than 4096"),
        (Reply(body=b"x" * 5000, content_length=False), "larger than 4096"),
        (Reply(body=b"{}", delay=1.0), "within 0.3s"),
        (Reply(body=b'{"issuer": "x"}' * 2, drip=0.05), "within 0.3s"),  # trickling body
    ],
)
async def test_fetch_failures(
    idp: IdpServer, client: httpx.AsyncClient, reply: Reply, message: str
) -> None:
    idp.set_reply("/doc", reply)
    idp.set_json("/elsewhere", {"ok": True})
    with pytest.raises(KeyFetchError, match=message):
        await fetch_json(client, f"{idp.url}/doc", 0.3, 4096, "document")
    assert idp.hits("/elsewhere") == 0  # redirects are never followed


async def test_connection_refused_is_a_fetch_error(client: httpx.AsyncClient) -> None:
    server = IdpServer()
    url = server.url
    server.stop()  # never started: the port is closed
    with pytest.raises(KeyFetchError, match="ConnectError"):
        await fetch_json(client, f"{url}/doc", 1.0, 4096, "document")


async def test_messages_hold_no_credentials_or_query(
    idp: IdpServer, client: httpx.AsyncClient
) -> None:
    url = f"http://user:hunter2@127.0.0.1:{idp.port}/doc?access_token=s3cret"
    with pytest.raises(KeyFetchError) as caught:
        await fetch_json(client, url, 1.0, 4096, "document")
    text = str(caught.value)
    assert "hunter2" not in text and "s3cret" not in text and "user" not in text
    assert f"127.0.0.1:{idp.port}/doc" in text


def test_safe_url_and_discovery_url() -> None:
    assert safe_url("https://u:p@[::1]:8443/a/b?q=1#f") == "https://[::1]:8443/a/b"
    assert discovery_url("https://idp.example/") == (
        "https://idp.example/.well-known/openid-configuration"
    )
    assert discovery_url("https://idp.example/realms/x") == (
        "https://idp.example/realms/x/.well-known/openid-configuration"
    )
