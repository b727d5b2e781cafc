"""Named networks: IPv4 and IPv6 CIDR sets, looked up by binary search."""

from __future__ import annotations

import ipaddress
import random

import pytest

from app.evidence.networks import NamedNetworks

NETWORKS = NamedNetworks.build(
    {
        "corp-vpn": ["10.8.0.0/16", "fd00:8::/32"],
        "office-berlin": ["198.51.100.0/25", "2001:db8:be::/48"],
        "tor-exits": ["185.220.101.1/32", "185.220.101.2/31", "185.220.100.0/24", "10.8.7.0/24"],
        "everything-v6": ["::/0"],
    }
)


@pytest.mark.parametrize(
    ("address", "names"),
    [
        ("10.8.0.0", {"corp-vpn"}),
        ("10.8.255.255", {"corp-vpn"}),
        ("10.9.0.0", set()),
        ("10.7.255.255", set()),
        ("10.8.7.9", {"corp-vpn", "tor-exits"}),
        ("198.51.100.127", {"office-berlin"}),
        ("198.51.100.128", set()),
        ("185.220.101.3", {"tor-exits"}),
        ("185.220.101.4", set()),
        ("185.220.100.77", {"tor-exits"}),
        ("fd00:8::1", {"corp-vpn", "everything-v6"}),
        ("fd00:9::1", {"everything-v6"}),
        ("2001:db8:be:ffff::1", {"office-berlin", "everything-v6"}),
        ("0.0.0.1", set()),
        ("255.255.255.255", set()),
    ],
)
def test_names_of(address: str, names: set[str]) -> None:
    assert NETWORKS.names_of(ipaddress.ip_address(address)) == names


def test_lookup_agrees_with_ipaddress_membership() -> None:
    rng = random.Random(7)
    cidrs = [
        ipaddress.ip_network(
            f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.0.0/{rng.randint(12, 24)}", strict=False
        )
        for _ in range(300)
    ]
    built = NamedNetworks.build({"big": cidrs})
    for _ in range(2000):
        address = ipaddress.IPv4Address(rng.getrandbits(32))
        expected = any(address in network for network in cidrs)
        assert ("big" in built.names_of(address)) is expected, address


def test_host_bits_are_refused() -> None:
    with pytest.raises(ValueError, match="host bits"):
        NamedNetworks.build({"bad": ["10.0.0.1/8"]})
