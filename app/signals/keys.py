"""A transmitter's signing keys: its JWKS, found through its SSF configuration metadata.

SSF 1.0 §7.2: the metadata lives at the issuer with ``/.well-known/ssf-configuration``
inserted between the host and the path (any trailing ``/`` of the issuer removed first), its
``issuer`` must be identical to the configured one (SSF §7.2.3, else the document is not
used) and its ``jwks_uri`` names the keys (SSF §4.1.4). A pinned ``jwks_uri`` skips the
metadata. The keys are then held by the same ``JwksCache`` as token issuers' keys
(app/identity/jwks.py): refreshed in the background, last-known-good kept, one fetch at a
time, kid misses rate-limited.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from app.identity.discovery import DiscoveryError, fetch_json, safe_url
from app.identity.jwks import JwksCache, JwksLocator, RefreshObserver
from app.settings import check_url
from app.settings.signals import Transmitter

WELL_KNOWN = "/.well-known/ssf-configuration"


def configuration_url(issuer: str) -> str:
    """Where ``issuer``'s transmitter configuration metadata is (SSF §7.2.1)."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, WELL_KNOWN + path, "", ""))


def read_configuration(document: Any, issuer: str, where: str) -> str:
    """The ``jwks_uri`` of a transmitter configuration document, once it is checked."""
    if not isinstance(document, dict):
        raise DiscoveryError(f"{where}: not a JSON object")
    if document.get("issuer") != issuer:
        raise DiscoveryError(f"{where}: its 'issuer' does not equal the configured issuer")
    jwks_uri = document.get("jwks_uri")
    if not isinstance(jwks_uri, str) or not jwks_uri:
        raise DiscoveryError(f"{where}: 'jwks_uri' is missing (the transmitter signs nothing)")
    try:
        return check_url(jwks_uri, "jwks_uri")
    except ValueError as exc:
        raise DiscoveryError(f"{where}: {exc}") from None


def configuration_locator(issuer: str) -> JwksLocator:
    """Finds the JWKS URL in ``issuer``'s SSF configuration metadata."""
    url = configuration_url(issuer)

    async def locate(client: httpx.AsyncClient, timeout: float, max_bytes: int) -> str:  # noqa: ASYNC109
        document = await fetch_json(client, url, timeout, max_bytes, "SSF configuration")
        return read_configuration(document, issuer, f"SSF configuration {safe_url(url)}")

    return locate


def transmitter_keys(
    transmitter: Transmitter,
    client: httpx.AsyncClient,
    clock: Callable[[], float],
    on_refresh: RefreshObserver | None = None,
) -> JwksCache:
    return JwksCache(
        transmitter,
        client,
        clock,
        on_refresh=on_refresh,
        locate=None if transmitter.jwks_uri else configuration_locator(transmitter.issuer),
    )
