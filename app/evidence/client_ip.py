"""The client's IP address: the right-most address that is not a trusted proxy.

The starting point is the peer address **Envoy asserts**: over gRPC the CheckRequest's
``attributes.source.address``; over HTTP the ``x-ztauthz-client-address`` header, which the
shipped Envoy bootstraps set from ``%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%`` (overwriting any
client-sent value; Envoy forwards no client header of that name either, it is not in
``allowed_headers``). Nothing a client writes is a starting point.

From there, ``X-Forwarded-For`` is read right to left, one entry per trusted proxy:

1. With Envoy's ``use_remote_address: true`` (as shipped) Envoy has appended its own entry to
   ``X-Forwarded-For``; that entry is dropped (the asserted peer stands for it).
2. The first ``trusted_hops`` addresses (the peer first) are proxies by configuration: each is
   replaced by the entry to its left.
3. Then, as long as the address is inside a ``trusted_proxies`` CIDR, it is replaced the same way.

The address reached is the client's. Left of it, entries are the client's own claims and are
never read. The result is *unknown* (``None``) rather than guessed when Envoy asserted no peer, when
a trusted proxy has no entry left of it, or when the entry to read is not an IP address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from app.http_facts import FORWARDED_FOR
from app.request import RequestContext

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Set by the shipped Envoy bootstraps on every HTTP authorization request (see app/telemetry).
CLIENT_ADDRESS_HEADER: Final = "x-ztauthz-client-address"
# Entries beyond this many (from the right) are never looked at: bounds the work per request.
MAX_ENTRIES: Final = 32


@dataclass(frozen=True, slots=True)
class ClientIpRules:
    """What is trusted: Envoy's own X-Forwarded-For entry, a hop count, proxy networks."""

    envoy_appends: bool = True  # Envoy runs with use_remote_address: true
    trusted_hops: int = 0
    trusted_proxies: tuple[IPNetwork, ...] = ()

    def is_trusted_proxy(self, address: IPAddress) -> bool:
        return any(address in network for network in self.trusted_proxies)


@lru_cache(maxsize=4096)  # the same peers and entries repeat; parsing is the costly part
def parse_address(text: str) -> IPAddress | None:
    """An IP address as proxies write it: ``203.0.113.9``, ``2001:db8::1``, ``[2001:db8::1]``,
    with or without ``:port``. IPv4-mapped IPv6 addresses become IPv4. None when unparsable."""
    value = text.strip()
    if value.startswith("["):
        end = value.find("]")
        if end == -1 or (value[end + 1 :] and not value[end + 1 :].startswith(":")):
            return None
        value = value[1:end]
    elif value.count(":") == 1:
        value = value.split(":", 1)[0]  # IPv4 with a port
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def asserted_peer(ctx: RequestContext) -> str | None:
    """The downstream peer address Envoy asserts for this transport, unparsed."""
    if ctx.transport == "grpc":
        return ctx.source_address
    return ctx.headers.get(CLIENT_ADDRESS_HEADER)


def forwarded_entries(header: str | None) -> list[str]:
    """The last ``MAX_ENTRIES`` entries of X-Forwarded-For, left to right."""
    if not header:
        return []
    parts = header.rsplit(",", MAX_ENTRIES)
    return [part.strip() for part in parts[-MAX_ENTRIES:]]


def resolve_client_ip(
    peer: str | None, forwarded_for: str | None, rules: ClientIpRules
) -> IPAddress | None:
    """The client's address, or None when it cannot be known (see the module docstring)."""
    if peer is None:
        return None
    address = parse_address(peer)
    if address is None:
        return None
    entries: Sequence[str] = forwarded_entries(forwarded_for)
    if rules.envoy_appends and entries:
        entries = entries[:-1]
    position = len(entries)
    hops = rules.trusted_hops
    while hops > 0 or rules.is_trusted_proxy(address):
        if position == 0:
            return None  # a trusted proxy with nobody in front of it: unknown, not guessed
        position -= 1
        found = parse_address(entries[position])
        if found is None:
            return None
        address = found
        hops = max(0, hops - 1)
    return address


def client_ip(ctx: RequestContext, rules: ClientIpRules) -> IPAddress | None:
    return resolve_client_ip(asserted_peer(ctx), ctx.headers.get(FORWARDED_FOR), rules)
