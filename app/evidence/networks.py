"""Named networks: CIDR sets (IPv4 and IPv6) from the configuration, e.g. ``corp-vpn``.

Each name's networks are merged into sorted, non-overlapping integer ranges per IP version, so
finding the names of an address costs one binary search per name, however many CIDRs a set has
(a list of Tor exit nodes can hold thousands).
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from app.evidence.client_ip import IPAddress, IPNetwork


@dataclass(frozen=True, slots=True)
class _Ranges:
    """Disjoint, sorted [start, end] ranges of one IP version."""

    starts: tuple[int, ...]
    ends: tuple[int, ...]

    def __contains__(self, value: int) -> bool:
        at = bisect.bisect_right(self.starts, value) - 1
        return at >= 0 and value <= self.ends[at]


def _merge(networks: Iterable[IPNetwork]) -> _Ranges:
    spans = sorted((int(n.network_address), int(n.broadcast_address)) for n in networks)
    starts: list[int] = []
    ends: list[int] = []
    for start, end in spans:
        if ends and start <= ends[-1] + 1:
            ends[-1] = max(ends[-1], end)
        else:
            starts.append(start)
            ends.append(end)
    return _Ranges(tuple(starts), tuple(ends))


@dataclass(frozen=True, slots=True)
class NamedNetworks:
    """name -> (IPv4 ranges, IPv6 ranges)."""

    ranges: Mapping[str, tuple[_Ranges, _Ranges]]

    @classmethod
    def build(cls, named: Mapping[str, Iterable[IPNetwork | str]]) -> NamedNetworks:
        """From name -> CIDRs (network objects or strings; host bits must be zero)."""
        built: dict[str, tuple[_Ranges, _Ranges]] = {}
        for name, cidrs in named.items():
            networks = [ipaddress.ip_network(c) if isinstance(c, str) else c for c in cidrs]
            built[name] = (
                _merge(n for n in networks if n.version == 4),
                _merge(n for n in networks if n.version == 6),
            )
        return cls(MappingProxyType(built))

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self.ranges)

    def names_of(self, address: IPAddress) -> frozenset[str]:
        """Every configured name whose networks contain ``address``."""
        value = int(address)
        slot = 0 if address.version == 4 else 1
        return frozenset(name for name, pair in self.ranges.items() if value in pair[slot])
