"""Evidence conditions (``device:``, ``location:``, ``workload:``): pure checks of the gathered
``Evidence`` against a rule's requirements, with the clock passed in.

Each check says whether the requirement holds and, if not, why, and whether the evidence was
*unknown* (missing, stale, not determinable) rather than known and wrong:

- an allow rule does not apply either way; its miss reason explains the denial;
- a deny rule applies when its evidence is unknown (fail closed: a client must not escape a deny
  by withholding a device token or hiding its address), unless another of its conditions is
  known to be false. One exception: a request without a client certificate is *known* not to
  come from any workload, so ``workload:`` on a deny rule does not catch it (and a rule with
  ``workload:`` but no ``subject:`` is a service rule that callers without a workload identity
  never match; see app/policy/evaluate.py).

Order: device, then location, then workload; within each, the first condition known to fail
wins over unknown ones (a false condition decides an AND whatever the unknowns are).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from app.evidence.model import Device, Evidence, Location, Workload
from app.policy.model import (
    DeviceRequirement,
    EvidenceRequirement,
    LocationRequirement,
    WorkloadRequirement,
)
from app.reasons import Reason

_POLICY_VERSION = re.compile(r"\d{1,9}(?:\.\d{1,9}){0,5}")
_REPORTED_VERSION = re.compile(r"\s*[vV]?(\d{1,9}(?:\.\d{1,9}){0,7})")


def required_os_version(text: str) -> tuple[int, ...]:
    """A version written in a policy: 1 to 6 dot-separated numbers; ValueError otherwise."""
    if not isinstance(text, str) or _POLICY_VERSION.fullmatch(text) is None:
        raise ValueError(f"{text!r} is not a version such as 14.4 or 10.0.22631")
    return tuple(int(part) for part in text.split("."))


def reported_os_version(text: str) -> tuple[int, ...] | None:
    """The leading dotted number of a version a device reports (``14.4.1 (23E224)`` ->
    (14, 4, 1)), or None when it starts with none."""
    match = _REPORTED_VERSION.match(text)
    return None if match is None else tuple(int(part) for part in match.group(1).split("."))


def version_at_least(version: tuple[int, ...], minimum: tuple[int, ...]) -> bool:
    """Numeric, component-wise, missing components are 0: 10.0.22631 >= 10.0.9 and 14.4 == 14.4.0."""
    width = max(len(version), len(minimum))
    return version + (0,) * (width - len(version)) >= minimum + (0,) * (width - len(minimum))


@dataclass(frozen=True, slots=True)
class EvidenceMiss:
    reason: Reason
    unknown: bool  # the evidence was missing or not determinable, not known to be wrong


_FAIL: Final = {r: EvidenceMiss(r, False) for r in Reason}
_UNKNOWN: Final = {r: EvidenceMiss(r, True) for r in Reason}


def _first(misses: list[EvidenceMiss]) -> EvidenceMiss | None:
    for miss in misses:
        if not miss.unknown:
            return miss
    return misses[0] if misses else None


def _flag(wanted: bool | None, actual: bool | None) -> EvidenceMiss | None:
    if wanted is None:
        return None
    if actual is None:
        return _UNKNOWN[Reason.DEVICE_NONCOMPLIANT]
    return None if actual == wanted else _FAIL[Reason.DEVICE_NONCOMPLIANT]


def _os_miss(
    wanted: tuple[tuple[str, tuple[int, ...]], ...], device: Device
) -> EvidenceMiss | None:
    if device.os_name is None:
        return _UNKNOWN[Reason.DEVICE_NONCOMPLIANT]
    minimum = dict(wanted).get(device.os_name)
    if minimum is None:
        return _FAIL[Reason.DEVICE_NONCOMPLIANT]  # an operating system the rule does not accept
    version = None if device.os_version is None else reported_os_version(device.os_version)
    if version is None:
        return _UNKNOWN[Reason.DEVICE_NONCOMPLIANT]
    return None if version_at_least(version, minimum) else _FAIL[Reason.DEVICE_NONCOMPLIANT]


def device_miss(wanted: DeviceRequirement, evidence: Evidence, now: float) -> EvidenceMiss | None:
    device = evidence.device
    if device is not None and wanted.sources_any is not None:
        # Evidence from a source the rule does not accept is no evidence.
        device = device if device.source in wanted.sources_any else None
    if device is None:
        return _UNKNOWN[evidence.device_problem or Reason.DEVICE_MISSING]
    misses: list[EvidenceMiss] = []
    if wanted.max_posture_age is not None:
        age = device.age(now)
        if age is None or age > wanted.max_posture_age:
            misses.append(_UNKNOWN[Reason.DEVICE_STALE])
    for want, actual in (
        (wanted.managed, device.managed),
        (wanted.compliant, device.compliant),
        (wanted.disk_encrypted, device.disk_encrypted),
        (wanted.screen_lock, device.screen_lock),
    ):
        miss = _flag(want, actual)
        if miss is not None:
            misses.append(miss)
    if wanted.max_risk is not None:
        if device.risk_score is None:
            misses.append(_UNKNOWN[Reason.DEVICE_NONCOMPLIANT])
        elif device.risk_score > wanted.max_risk:
            misses.append(_FAIL[Reason.DEVICE_NONCOMPLIANT])
    if wanted.min_os_version is not None:
        miss = _os_miss(wanted.min_os_version, device)
        if miss is not None:
            misses.append(miss)
    return _first(misses)


def location_miss(wanted: LocationRequirement, location: Location) -> EvidenceMiss | None:
    misses: list[EvidenceMiss] = []
    if wanted.countries_any is not None or wanted.countries_none is not None:
        country = location.country
        if country is None:
            misses.append(_UNKNOWN[Reason.COUNTRY_UNKNOWN])
        elif (wanted.countries_any is not None and country not in wanted.countries_any) or (
            wanted.countries_none is not None and country in wanted.countries_none
        ):
            misses.append(_FAIL[Reason.LOCATION_DENIED])
    if wanted.networks_any is not None or wanted.networks_none is not None:
        if location.client_ip is None:
            misses.append(_UNKNOWN[Reason.CLIENT_IP_UNKNOWN])
        elif (
            wanted.networks_any is not None and wanted.networks_any.isdisjoint(location.networks)
        ) or (
            wanted.networks_none is not None
            and not wanted.networks_none.isdisjoint(location.networks)
        ):
            misses.append(_FAIL[Reason.NETWORK_DENIED])
    if wanted.claim_matches_ip:
        if location.ip_country is None or location.claim_country is None:
            misses.append(_UNKNOWN[Reason.COUNTRY_UNKNOWN])
        elif location.ip_country != location.claim_country:
            misses.append(_FAIL[Reason.LOCATION_MISMATCH])
    return _first(misses)


def workload_miss(wanted: WorkloadRequirement, workload: Workload | None) -> EvidenceMiss | None:
    if workload is None:
        return _FAIL[Reason.WORKLOAD_MISSING]  # known: no client certificate, no workload
    if (wanted.spiffe_ids_any is not None and workload.id not in wanted.spiffe_ids_any) or (
        wanted.trust_domains_any is not None
        and workload.trust_domain not in wanted.trust_domains_any
    ):
        return _FAIL[Reason.WORKLOAD_DENIED]
    return None


def evidence_miss(
    wanted: EvidenceRequirement, evidence: Evidence, now: float
) -> EvidenceMiss | None:
    """None when every evidence condition holds; else the first known failure, or else the
    first unknown, in the order device, location, workload."""
    misses: list[EvidenceMiss] = []
    if wanted.device is not None:
        miss = device_miss(wanted.device, evidence, now)
        if miss is not None:
            misses.append(miss)
    if wanted.location is not None:
        miss = location_miss(wanted.location, evidence.location)
        if miss is not None:
            misses.append(miss)
    if wanted.workload is not None:
        miss = workload_miss(wanted.workload, evidence.workload)
        if miss is not None:
            misses.append(miss)
    return _first(misses)
