"""The evidence values one check gathers: device, location and workload, each with its source.

They are frozen and built once per request by ``app.evidence.gather``; policies read them through
``device:``, ``location:`` and ``workload:`` conditions, CEL through ``variables`` below. A value
that is not known is ``None``: never a default that could satisfy a condition.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from app.reasons import Reason

DeviceSource = Literal["device_token", "token_claims", "client_certificate"]
DEVICE_SOURCES: Final[tuple[DeviceSource, ...]] = (
    "device_token",
    "token_claims",
    "client_certificate",
)
WorkloadSource = Literal["peer", "xfcc"]

_COUNTRY = re.compile(r"[A-Z]{2}")


@dataclass(frozen=True, slots=True)
class Device:
    """One device, normalized whatever source described it.

    ``id`` is the device identifier (the device token's subject, the identity token's device
    claim, or the device certificate's URI). Posture attributes are ``None`` when the source
    does not say. ``os_name`` is lower-case (``macos``, ``windows``, ``ios`` ...).
    ``assessed_at`` is when the posture was assessed (epoch seconds).
    """

    id: str
    source: DeviceSource
    managed: bool | None = None
    compliant: bool | None = None
    os_name: str | None = None
    os_version: str | None = None
    disk_encrypted: bool | None = None
    screen_lock: bool | None = None
    risk_score: float | None = None
    assessed_at: float | None = None

    def age(self, now: float) -> float | None:
        """Seconds since the posture was assessed (never negative), or None when unknown."""
        return None if self.assessed_at is None else max(0.0, now - self.assessed_at)


@dataclass(frozen=True, slots=True)
class Location:
    """Where the request comes from.

    ``client_ip`` is the address found behind the trusted proxies (None: unknown);
    ``networks`` the configured named networks it belongs to; ``ip_country`` its country in the
    GeoIP database; ``claim_country`` the country a signed token claims; ``country`` the one
    policies use: the IP's, or (only when the configuration allows) the claim's.
    """

    client_ip: str | None = None
    networks: frozenset[str] = frozenset()
    ip_country: str | None = None
    claim_country: str | None = None
    country: str | None = None


@dataclass(frozen=True, slots=True)
class Workload:
    """The calling workload's identity: a SPIFFE ID from its mTLS client certificate."""

    id: str
    trust_domain: str
    source: WorkloadSource


@dataclass(frozen=True, slots=True)
class Evidence:
    """Everything gathered for one request.

    ``device_problem`` says why a presented device token was not used (``device_invalid``,
    ``device_unbound``, ``device_stale``); a device from another source may still be present.
    """

    device: Device | None = None
    device_problem: Reason | None = None
    location: Location = Location()
    workload: Workload | None = None


NO_EVIDENCE: Final = Evidence()


def country_code(value: Any) -> str | None:
    """An ISO 3166-1 alpha-2 code (upper-cased), or None for anything else."""
    if not isinstance(value, str):
        return None
    code = value.strip().upper()
    return code if _COUNTRY.fullmatch(code) else None


# --- CEL variables -------------------------------------------------------------------------------


def _known(values: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def device_facts(device: Device) -> dict[str, Any]:
    """What is known about ``device`` and where it came from, as plain values (the CEL
    ``device`` variable and the signed assertion's evidence claim both start from it)."""
    return _known(
        {
            "id": device.id,
            "source": device.source,  # device_token | token_claims | client_certificate
            "managed": device.managed,
            "compliant": device.compliant,
            "os_name": device.os_name,
            "os_version": device.os_version,
            "disk_encrypted": device.disk_encrypted,
            "screen_lock": device.screen_lock,
            "risk_score": device.risk_score,
            "assessed_at": None if device.assessed_at is None else int(device.assessed_at),
        }
    )


def device_variables(evidence: Evidence, now: float) -> dict[str, Any]:
    """The ``device`` CEL variable: only known keys, so ``has(device.managed)`` tells."""
    device = evidence.device
    if device is None:
        return {}
    facts = device_facts(device)
    age = device.age(now)
    if age is not None:
        facts["age"] = int(age)
    return facts


def location_variables(evidence: Evidence) -> dict[str, Any]:
    location = evidence.location
    known = _known(
        {
            "client_ip": location.client_ip,
            "country": location.country,
            "ip_country": location.ip_country,
            "claim_country": location.claim_country,
        }
    )
    if location.client_ip is not None:
        known["networks"] = sorted(location.networks)
    return known


def workload_variables(evidence: Evidence) -> dict[str, Any]:
    workload = evidence.workload
    if workload is None:
        return {}
    return {"id": workload.id, "trust_domain": workload.trust_domain, "source": workload.source}


# --- from test cases -----------------------------------------------------------------------------


def _bool(raw: Mapping[str, Any], key: str) -> bool | None:
    value = raw.get(key)
    return value if isinstance(value, bool) else None


def _number(raw: Mapping[str, Any], key: str) -> float | None:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _text(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    return value if isinstance(value, str) and value else None


def _moment(raw: Mapping[str, Any], key: str) -> float | None:
    value = raw.get(key)
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.timestamp()
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        return moment.timestamp() if moment.tzinfo is not None else None
    return _number(raw, key)


def evidence_from_maps(
    device: Mapping[str, Any], location: Mapping[str, Any], workload: Mapping[str, Any]
) -> Evidence:
    """Typed evidence from the plain maps of a ``PolicyTest`` case (the CEL variables' shape).

    Keys of the wrong type count as unknown. ``device.source`` defaults to ``device_token``;
    ``device.problem`` names a device-token problem (e.g. ``device_unbound``);
    ``assessed_at`` is epoch seconds or an RFC 3339 date-time.
    """
    found_device = None
    device_id = _text(device, "id")
    if device_id is not None:
        source = device.get("source", "device_token")
        os_name = _text(device, "os_name")
        found_device = Device(
            id=device_id,
            source=source if source in DEVICE_SOURCES else "device_token",
            managed=_bool(device, "managed"),
            compliant=_bool(device, "compliant"),
            os_name=None if os_name is None else os_name.lower(),
            os_version=_text(device, "os_version"),
            disk_encrypted=_bool(device, "disk_encrypted"),
            screen_lock=_bool(device, "screen_lock"),
            risk_score=_number(device, "risk_score"),
            assessed_at=_moment(device, "assessed_at"),
        )
    problem = None
    if isinstance(device.get("problem"), str) and device["problem"] in Reason.__members__.values():
        problem = Reason(device["problem"])
    networks = location.get("networks", [])
    ip_country = country_code(location.get("ip_country", location.get("country")))
    claim_country = country_code(location.get("claim_country"))
    found_location = Location(
        client_ip=_text(location, "client_ip"),
        networks=frozenset(n for n in networks if isinstance(n, str))
        if isinstance(networks, list)
        else frozenset(),
        ip_country=ip_country,
        claim_country=claim_country,
        country=country_code(location.get("country")) or ip_country,
    )
    found_workload = None
    workload_id = _text(workload, "id")
    if workload_id is not None and workload_id.startswith("spiffe://"):
        trust_domain = workload_id[len("spiffe://") :].split("/", 1)[0]
        found_workload = Workload(workload_id, trust_domain, "peer")
    return Evidence(found_device, problem, found_location, found_workload)
