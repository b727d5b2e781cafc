"""OIDC discovery (OpenID Connect Discovery 1.0 §4, RFC 8414 §3) and bounded JSON fetching.

Every fetch from an identity provider goes through ``fetch_json``: one total deadline, a byte
limit enforced while streaming (so neither a slow nor a huge response can pin us), no redirects
and only ``200`` accepted. Error messages name the URL without credentials or query.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from app.settings import check_url

WELL_KNOWN = "/.well-known/openid-configuration"


class KeyFetchError(Exception):
    """Fetching or parsing an identity provider document failed. Messages hold no secrets."""


class DiscoveryError(KeyFetchError):
    """The discovery document is unusable (wrong issuer, missing or unsafe jwks_uri)."""


def safe_url(url: str) -> str:
    """``url`` for logs and messages: scheme, host, port and path only."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def discovery_url(issuer: str) -> str:
    """The well-known URL: the issuer without its trailing slash, plus the well-known path."""
    return issuer.rstrip("/") + WELL_KNOWN


async def fetch_json(
    client: httpx.AsyncClient,
    url: str,
    timeout: float,  # noqa: ASYNC109 - enforced inside as one total deadline (asyncio.timeout)
    max_bytes: int,
    what: str,
) -> Any:
    """GET ``url`` and parse its JSON body; raise KeyFetchError on any failure."""
    where = f"{what} {safe_url(url)}"
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async with client.stream(
                "GET",
                url,
                headers={"accept": "application/json"},
                follow_redirects=False,
                timeout=timeout,
            ) as response:
                if response.status_code != 200:
                    raise KeyFetchError(f"{where}: HTTP {response.status_code}, expected 200")
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise KeyFetchError(f"{where}: response larger than {max_bytes} bytes")
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > max_bytes:
                        raise KeyFetchError(f"{where}: response larger than {max_bytes} bytes")
    except TimeoutError:
        raise KeyFetchError(f"{where}: no complete response within {timeout:g}s") from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise KeyFetchError(f"{where}: {type(exc).__name__}") from None
    try:
        return json.loads(bytes(body))
    except (ValueError, RecursionError):
        raise KeyFetchError(f"{where}: response is not valid JSON") from None


async def fetch_jwks_uri(
    client: httpx.AsyncClient,
    issuer: str,
    timeout: float,  # noqa: ASYNC109 - per fetch, enforced by fetch_json
    max_bytes: int,
) -> str:
    """The ``jwks_uri`` the issuer's discovery document names, checked before it is trusted."""
    return await fetch_endpoint(client, issuer, "jwks_uri", timeout, max_bytes)


async def fetch_endpoint(
    client: httpx.AsyncClient,
    issuer: str,
    member: str,
    timeout: float,  # noqa: ASYNC109 - per fetch, enforced by fetch_json
    max_bytes: int,
) -> str:
    """The URL the issuer's discovery document gives as ``member`` (``jwks_uri``, or
    ``introspection_endpoint`` of RFC 8414 §2), checked before it is trusted."""
    url = discovery_url(issuer)
    document = await fetch_json(client, url, timeout, max_bytes, "discovery document")
    where = f"discovery document {safe_url(url)}"
    if not isinstance(document, dict):
        raise DiscoveryError(f"{where}: not a JSON object")
    if document.get("issuer") != issuer:
        # OIDC Discovery §4.3: the issuer in the document must be identical to the one we
        # asked about, or a compromised/shared host could vouch for keys of another issuer.
        raise DiscoveryError(f"{where}: its 'issuer' does not equal the configured issuer")
    value = document.get(member)
    if not isinstance(value, str) or not value:
        raise DiscoveryError(f"{where}: '{member}' is missing or not a string")
    try:
        return check_url(value, member)
    except ValueError as exc:
        raise DiscoveryError(f"{where}: {exc}") from None
