"""GeoIP lookups in a real MaxMind database written by ``mmdb-writer``, and its reload when the
file changes (in place or by atomic rename), off the check path."""

from __future__ import annotations

import asyncio
import ipaddress
import os
from pathlib import Path

import pytest

from app.evidence.geoip import GeoIp, GeoIpError
from tests.unit.evidence.evidence_support import write_mmdb


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


@pytest.mark.parametrize(
    ("address", "country"),
    [
        ("203.0.113.9", "DE"),
        ("198.51.100.200", "US"),
        ("2001:db8:1::5", "FR"),
        ("8.8.8.8", None),  # not in the database
        ("192.0.2.1", None),  # a record without a country
        ("192.0.3.1", None),  # a country that is no ISO code
    ],
)
def test_country_lookups(tmp_path: Path, address: str, country: str | None) -> None:
    path = write_mmdb(
        tmp_path / "c.mmdb",
        {"203.0.113.0/24": "DE", "198.51.100.0/24": "US", "2001:db8:1::/48": "FR"},
        extra=True,
    )
    geo = GeoIp(path, 60)
    assert geo.country(ip(address)) == country


def test_a_missing_or_corrupt_database_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(GeoIpError, match="cannot open"):
        GeoIp(tmp_path / "absent.mmdb", 60)
    corrupt = tmp_path / "corrupt.mmdb"
    corrupt.write_bytes(b"not a maxmind database" * 100)
    with pytest.raises(GeoIpError, match="cannot open"):
        GeoIp(corrupt, 60)


async def test_reload_when_the_file_changes(tmp_path: Path) -> None:
    path = write_mmdb(tmp_path / "c.mmdb", {"203.0.113.0/24": "DE"})
    geo = GeoIp(path, 60)
    assert await geo.reload_if_changed() is False  # unchanged: nothing reopened
    # An atomic replacement (write elsewhere, rename over), as database updaters do.
    write_mmdb(tmp_path / "next.mmdb", {"203.0.113.0/24": "NL"})
    os.replace(tmp_path / "next.mmdb", path)
    assert await geo.reload_if_changed() is True
    assert geo.country(ip("203.0.113.9")) == "NL"
    assert geo.reloads == 1
    await geo.aclose()


async def test_a_broken_update_keeps_the_last_good_database(tmp_path: Path) -> None:
    path = write_mmdb(tmp_path / "c.mmdb", {"203.0.113.0/24": "DE"})
    geo = GeoIp(path, 60)
    path.write_bytes(b"truncated")
    assert await geo.reload_if_changed() is False
    assert geo.country(ip("203.0.113.9")) == "DE"
    path.unlink()
    assert await geo.reload_if_changed() is False
    assert geo.country(ip("203.0.113.9")) == "DE"
    assert geo.failures == 2
    # A good file again is picked up.
    write_mmdb(path, {"203.0.113.0/24": "AT"})
    assert await geo.reload_if_changed() is True
    assert geo.country(ip("203.0.113.9")) == "AT"
    await geo.aclose()


async def test_the_watcher_reloads_in_the_background(tmp_path: Path) -> None:
    path = write_mmdb(tmp_path / "c.mmdb", {"203.0.113.0/24": "DE"})
    geo = GeoIp(path, 0.02)
    await geo.start()
    try:
        write_mmdb(tmp_path / "next.mmdb", {"203.0.113.0/24": "PL"})
        os.replace(tmp_path / "next.mmdb", path)
        for _ in range(250):
            if geo.country(ip("203.0.113.9")) == "PL":
                break
            await asyncio.sleep(0.02)
        assert geo.country(ip("203.0.113.9")) == "PL"
    finally:
        await geo.aclose()
    assert geo.country(ip("203.0.113.9")) is None  # closed: lookups answer nothing, never raise
