"""The client IP algorithm: Envoy's asserted peer, then X-Forwarded-For right to left through
the trusted proxies only; unknown rather than guessed; nothing a client writes is believed."""

from __future__ import annotations

import ipaddress

import pytest

from app.evidence.client_ip import (
    CLIENT_ADDRESS_HEADER,
    MAX_ENTRIES,
    ClientIpRules,
    asserted_peer,
    client_ip,
    parse_address,
    resolve_client_ip,
)
from app.request import make_context

NOTHING = ClientIpRules()
LB = ClientIpRules(trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"),))
ONE_HOP = ClientIpRules(trusted_hops=1)
TWO_HOPS_AND_LB = ClientIpRules(
    trusted_hops=2, trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"),)
)
NO_APPEND = ClientIpRules(envoy_appends=False, trusted_hops=1)
V6_PROXIES = ClientIpRules(trusted_proxies=(ipaddress.ip_network("2001:db8:ffff::/48"),))


@pytest.mark.parametrize(
    ("peer", "xff", "rules", "expected"),
    [
        # Envoy is the edge: the peer is the client, whatever X-Forwarded-For claims.
        ("203.0.113.9", None, NOTHING, "203.0.113.9"),
        ("203.0.113.9", "203.0.113.9", NOTHING, "203.0.113.9"),
        ("203.0.113.9", "6.6.6.6, 203.0.113.9", NOTHING, "203.0.113.9"),  # spoof ignored
        # No asserted peer: unknown, never the left-most (or any) X-Forwarded-For entry.
        (None, "6.6.6.6, 203.0.113.9", NOTHING, None),
        ("", "6.6.6.6", NOTHING, None),
        ("not-an-ip", "6.6.6.6", NOTHING, None),
        # A load balancer (trusted CIDR) in front: the entry it appended is the client.
        ("10.0.0.5", "198.51.100.7, 10.0.0.5", LB, "198.51.100.7"),
        # ... and a client's own claims left of it are never read.
        ("10.0.0.5", "6.6.6.6, 198.51.100.7, 10.0.0.5", LB, "198.51.100.7"),
        # A chain of trusted proxies is peeled off, right to left.
        ("10.0.0.5", "198.51.100.7, 10.1.1.1, 10.2.2.2, 10.0.0.5", LB, "198.51.100.7"),
        # A client claiming to be a trusted proxy at the left end is still not believed past
        # the first untrusted address.
        ("10.0.0.5", "10.9.9.9, 198.51.100.7, 10.0.0.5", LB, "198.51.100.7"),
        # A trusted proxy with nobody in front of it: unknown rather than guessed.
        ("10.0.0.5", "10.0.0.5", LB, None),
        ("10.0.0.5", None, LB, None),
        ("10.0.0.5", "10.3.3.3, 10.0.0.5", LB, None),
        # An unparsable entry where the client should be: unknown.
        ("10.0.0.5", "garbage, 10.0.0.5", LB, None),
        ("10.0.0.5", ", 10.0.0.5", LB, None),
        # Trusted hops count proxies whatever their address.
        ("192.0.2.1", "198.51.100.7, 192.0.2.1", ONE_HOP, "198.51.100.7"),
        ("192.0.2.1", "6.6.6.6, 198.51.100.7, 192.0.2.1", ONE_HOP, "198.51.100.7"),
        ("192.0.2.1", "192.0.2.1", ONE_HOP, None),  # the hop has no entry in front
        # Hops first, then CIDRs.
        (
            "192.0.2.1",
            "198.51.100.7, 10.4.4.4, 192.0.2.2, 192.0.2.1",
            TWO_HOPS_AND_LB,
            "198.51.100.7",
        ),
        # Without Envoy's own entry (use_remote_address: false), nothing is dropped.
        ("192.0.2.1", "6.6.6.6, 198.51.100.7", NO_APPEND, "198.51.100.7"),
        # IPv6, brackets and ports, IPv4-mapped addresses.
        ("2001:db8:ffff::1", "2001:db8::7, 2001:db8:ffff::1", V6_PROXIES, "2001:db8::7"),
        ("2001:db8:ffff::1", "[2001:db8::7]:443, x", V6_PROXIES, "2001:db8::7"),
        ("10.0.0.5", "198.51.100.7:5555, 10.0.0.5", LB, "198.51.100.7"),
        ("::ffff:203.0.113.9", None, NOTHING, "203.0.113.9"),
        ("10.0.0.5", "::ffff:10.1.1.1, 10.0.0.5", LB, None),  # mapped proxy is still a proxy
    ],
)
def test_resolve_client_ip(
    peer: str | None, xff: str | None, rules: ClientIpRules, expected: str | None
) -> None:
    found = resolve_client_ip(peer, xff, rules)
    assert (None if found is None else str(found)) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("203.0.113.9", "203.0.113.9"),
        (" 203.0.113.9 ", "203.0.113.9"),
        ("203.0.113.9:80", "203.0.113.9"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:8443", "2001:db8::1"),
        ("[2001:db8::1", None),
        ("[2001:db8::1]x", None),
        ("unknown", None),
        ("", None),
        ("203.0.113.256", None),
    ],
)
def test_parse_address(text: str, expected: str | None) -> None:
    found = parse_address(text)
    assert (None if found is None else str(found)) == expected


def test_only_the_last_entries_are_read() -> None:
    # A client stuffing X-Forwarded-For costs bounded work, and what lies beyond the bound is
    # never reached: with every entry trusted the answer is unknown, not the left-most.
    entries = ["198.51.100.7"] + ["10.0.0.1"] * (MAX_ENTRIES + 10)
    assert resolve_client_ip("10.0.0.5", ", ".join(entries), LB) is None


def test_the_peer_comes_from_envoys_field_for_each_transport() -> None:
    forged = {CLIENT_ADDRESS_HEADER: "6.6.6.6"}
    grpc = make_context("GET", "h", "/", forged, "grpc", source_address="203.0.113.9")
    http = make_context("GET", "h", "/", {CLIENT_ADDRESS_HEADER: "198.51.100.7"}, "http")
    # gRPC has the peer as a CheckRequest field; a header of that name means nothing there.
    assert asserted_peer(grpc) == "203.0.113.9"
    assert asserted_peer(make_context("GET", "h", "/", forged, "grpc")) is None
    # HTTP ext_authz carries it in the header Envoy sets (overwriting any client value).
    assert asserted_peer(http) == "198.51.100.7"
    assert str(client_ip(http, NOTHING)) == "198.51.100.7"
    assert client_ip(make_context("GET", "h", "/", {"x-forwarded-for": "6.6.6.6"}), NOTHING) is None
