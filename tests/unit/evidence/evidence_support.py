"""Shared test support for evidence tests: a MaxMind database written with ``mmdb-writer`` and
device attestation tokens signed with a test device provider's key."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmdb_writer import MMDBWriter
from netaddr import IPSet

from tests.unit.identity.identity_support import NOW, IdpServer, ec_key, mint

MDM_KEY = ec_key("mdm")


def write_mmdb(path: Path, countries: Mapping[str, str], *, extra: bool = False) -> Path:
    """A GeoLite2-Country-shaped database: CIDR -> country ISO code."""
    writer = MMDBWriter(ip_version=6, database_type="GeoLite2-Country", ipv4_compatible=True)
    for cidr, code in countries.items():
        record: dict[str, object] = {"country": {"iso_code": code, "names": {"en": code}}}
        writer.insert_network(IPSet([cidr]), record)
    if extra:  # records without a usable country
        writer.insert_network(IPSet(["192.0.2.0/24"]), {"continent": {"code": "EU"}})
        writer.insert_network(IPSet(["192.0.3.0/24"]), {"country": {"iso_code": "Germany"}})
    writer.to_db_file(str(path))
    return path


def device_token(mdm: IdpServer, key: Any = MDM_KEY, **overrides: Any) -> str:
    payload: dict[str, Any] = {
        "iss": mdm.url,
        "sub": "laptop-7",
        "aud": "api",
        "iat": int(NOW) - 60,
        "exp": int(NOW) + 240,
        "managed": True,
        "compliant": True,
        "os": {"name": "macOS", "version": "14.4.1"},
        "disk_encrypted": True,
        "screen_lock": False,
        "risk_score": 12,
        "posture_time": int(NOW) - 120,
        "geo": {"country": "de"},
    }
    payload.update(overrides)
    return mint(key, "ES256", {k: v for k, v in payload.items() if v is not None}, "mdm-1")
