"""Request facts recorded in decision logs and spans, derived the same way for both."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Final

from app.request import RequestContext

# Set by the shipped Envoy bootstraps on every HTTP authorization request (overwriting any
# client-sent value): %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%.
CLIENT_ADDRESS_HEADER: Final = "x-ztauthz-client-address"


def path_only(path: str) -> str:
    """The path without its query string (which may carry credentials) or fragment."""
    cut = len(path)
    for mark in ("?", "#"):
        at = path.find(mark)
        if at != -1 and at < cut:
            cut = at
    return path[:cut]


def client_ip(ctx: RequestContext) -> str | None:
    """The downstream client's IP address as Envoy saw it, when known and well-formed.

    gRPC ext_authz carries it (``source_address``); over HTTP ext_authz the shipped bootstraps
    send it in ``x-ztauthz-client-address``. ``X-Forwarded-For`` is never used: its entries
    are the client's claims plus Envoy's internal placeholder. Recorded only, never used to
    decide.
    """
    candidate = ctx.source_address or ctx.headers.get(CLIENT_ADDRESS_HEADER)
    return _canonical_ip(candidate) if candidate else None


@lru_cache(maxsize=4096)  # client addresses repeat; parsing one is the costly part
def _canonical_ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def split_host(host: str) -> tuple[str, int | None]:
    """``host[:port]`` (IPv6 in brackets) -> (host, port or None); unparsable ports are dropped."""
    name, port = host, None
    if host.startswith("["):
        end = host.find("]")
        if end != -1:
            name, rest = host[1:end], host[end + 1 :]
            port = rest[1:] if rest.startswith(":") else None
    elif host.count(":") == 1:
        name, port = host.split(":", 1)
    number = int(port) if port is not None and port.isdigit() and len(port) <= 5 else None
    return name.lower(), number
