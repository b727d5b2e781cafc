"""device:, location: and workload: conditions: version comparison, each requirement's verdict,
and their place in evaluation (allow misses, deny rules failing closed, workload rules without
a token, service rules, load errors)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.evidence.model import Device, Evidence, Location, Workload
from app.identity.principal import Principal
from app.policy.compile import LoadOptions
from app.policy.evaluate import PolicyInput, evaluate, with_evidence
from app.policy.index import CompiledPolicies
from app.policy.loader import load_policy_dir
from app.policy.model import DeviceRequirement, LocationRequirement, WorkloadRequirement
from app.policy.posture import (
    EvidenceMiss,
    device_miss,
    location_miss,
    reported_os_version,
    required_os_version,
    version_at_least,
    workload_miss,
)
from app.policy.problem import PolicyLoadError
from app.reasons import Reason

NOW = 2_000_000_000.0
SPIFFE = "spiffe://prod.example/ns/payments/sa/api"


# --- versions ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "minimum", "ok"),
    [
        ("14.4", "14.4", True),
        ("14.4.0", "14.4", True),
        ("14.4", "14.4.0", True),
        ("14.4.1", "14.4", True),
        ("14.3.9", "14.4", False),
        ("14.10", "14.9", True),  # numbers, not strings: "14.10" < "14.9" as text
        ("10.0.22631", "10.0.9", True),
        ("10.0.19045", "10.0.22631", False),
        ("15", "14.4", True),
        ("9.9.9", "10", False),
        ("14.4.1 (23E224)", "14.4.1", True),
        ("v17.0", "17", True),
    ],
)
def test_versions_compare_as_versions(version: str, minimum: str, ok: bool) -> None:
    reported = reported_os_version(version)
    assert reported is not None
    assert version_at_least(reported, required_os_version(minimum)) is ok


@pytest.mark.parametrize("text", ["", "14.x", "14.", ".4", "14..4", "1.2.3.4.5.6.7", " 14", "-1"])
def test_invalid_policy_versions(text: str) -> None:
    with pytest.raises(ValueError, match="is not a version"):
        required_os_version(text)


@pytest.mark.parametrize("text", ["", "unknown", "Sonoma", "."])
def test_unreadable_reported_versions(text: str) -> None:
    assert reported_os_version(text) is None


# --- requirements --------------------------------------------------------------------------------

FULL = Device(
    "d1",
    "device_token",
    managed=True,
    compliant=True,
    os_name="macos",
    os_version="14.4.1",
    disk_encrypted=True,
    screen_lock=True,
    risk_score=20,
    assessed_at=NOW - 600,
)
STRICT = DeviceRequirement(
    managed=True,
    compliant=True,
    disk_encrypted=True,
    screen_lock=True,
    max_risk=30,
    max_posture_age=3600,
    min_os_version=(("macos", (14, 4)), ("windows", (10, 0, 22631))),
)


def fail(reason: Reason) -> EvidenceMiss:
    return EvidenceMiss(reason, False)


def unknown(reason: Reason) -> EvidenceMiss:
    return EvidenceMiss(reason, True)


def device(**changes: Any) -> Device:
    values = {name: getattr(FULL, name) for name in Device.__dataclass_fields__}
    values.update(changes)
    return Device(**values)


@pytest.mark.parametrize(
    ("evidence", "wanted", "expected"),
    [
        (Evidence(device=FULL), STRICT, None),
        (Evidence(), STRICT, unknown(Reason.DEVICE_MISSING)),
        (Evidence(device_problem=Reason.DEVICE_UNBOUND), STRICT, unknown(Reason.DEVICE_UNBOUND)),
        (Evidence(device=device(managed=False)), STRICT, fail(Reason.DEVICE_NONCOMPLIANT)),
        (Evidence(device=device(compliant=None)), STRICT, unknown(Reason.DEVICE_NONCOMPLIANT)),
        (Evidence(device=device(risk_score=31)), STRICT, fail(Reason.DEVICE_NONCOMPLIANT)),
        (Evidence(device=device(risk_score=30)), STRICT, None),
        (Evidence(device=device(risk_score=None)), STRICT, unknown(Reason.DEVICE_NONCOMPLIANT)),
        (Evidence(device=device(assessed_at=NOW - 3601)), STRICT, unknown(Reason.DEVICE_STALE)),
        (Evidence(device=device(assessed_at=None)), STRICT, unknown(Reason.DEVICE_STALE)),
        # A known failure beats an unknown: stale and unmanaged is unmanaged.
        (
            Evidence(device=device(assessed_at=None, managed=False)),
            STRICT,
            fail(Reason.DEVICE_NONCOMPLIANT),
        ),
        (Evidence(device=device(os_version="14.3")), STRICT, fail(Reason.DEVICE_NONCOMPLIANT)),
        (
            Evidence(device=device(os_name="windows", os_version="10.0.22631.3155")),
            STRICT,
            None,
        ),
        (Evidence(device=device(os_name="linux")), STRICT, fail(Reason.DEVICE_NONCOMPLIANT)),
        (Evidence(device=device(os_name=None)), STRICT, unknown(Reason.DEVICE_NONCOMPLIANT)),
        (Evidence(device=device(os_version="beta")), STRICT, unknown(Reason.DEVICE_NONCOMPLIANT)),
        # Sources: evidence from a source the rule does not accept is no evidence.
        (
            Evidence(device=device(source="token_claims")),
            DeviceRequirement(managed=True, sources_any=frozenset({"device_token"})),
            unknown(Reason.DEVICE_MISSING),
        ),
        (
            Evidence(device=device(source="token_claims"), device_problem=Reason.DEVICE_STALE),
            DeviceRequirement(sources_any=frozenset({"device_token"})),
            unknown(Reason.DEVICE_STALE),
        ),
        (
            Evidence(device=device(source="token_claims"), device_problem=Reason.DEVICE_UNBOUND),
            DeviceRequirement(managed=True),
            None,
        ),
        (Evidence(device=device(managed=False)), DeviceRequirement(managed=False), None),
    ],
)
def test_device_requirements(
    evidence: Evidence, wanted: DeviceRequirement, expected: EvidenceMiss | None
) -> None:
    assert device_miss(wanted, evidence, NOW) == expected


WHERE = Location(
    client_ip="203.0.113.9",
    networks=frozenset({"corp-vpn"}),
    ip_country="DE",
    claim_country="DE",
    country="DE",
)


def location(**changes: Any) -> Location:
    values = {name: getattr(WHERE, name) for name in Location.__dataclass_fields__}
    values.update(changes)
    return Location(**values)


@pytest.mark.parametrize(
    ("where", "wanted", "expected"),
    [
        (WHERE, LocationRequirement(countries_any=frozenset({"DE", "FR"})), None),
        (
            location(country="US"),
            LocationRequirement(countries_any=frozenset({"DE"})),
            fail(Reason.LOCATION_DENIED),
        ),
        (
            location(country=None),
            LocationRequirement(countries_any=frozenset({"DE"})),
            unknown(Reason.COUNTRY_UNKNOWN),
        ),
        (WHERE, LocationRequirement(countries_none=frozenset({"RU", "KP"})), None),
        (
            location(country="KP"),
            LocationRequirement(countries_none=frozenset({"KP"})),
            fail(Reason.LOCATION_DENIED),
        ),
        (
            location(country=None),
            LocationRequirement(countries_none=frozenset({"KP"})),
            unknown(Reason.COUNTRY_UNKNOWN),
        ),
        (WHERE, LocationRequirement(networks_any=frozenset({"corp-vpn"})), None),
        (
            location(networks=frozenset()),
            LocationRequirement(networks_any=frozenset({"corp-vpn"})),
            fail(Reason.NETWORK_DENIED),
        ),
        (WHERE, LocationRequirement(networks_none=frozenset({"tor-exits"})), None),
        (
            location(networks=frozenset({"tor-exits"})),
            LocationRequirement(networks_none=frozenset({"tor-exits"})),
            fail(Reason.NETWORK_DENIED),
        ),
        (
            location(client_ip=None, networks=frozenset()),
            LocationRequirement(networks_none=frozenset({"tor-exits"})),
            unknown(Reason.CLIENT_IP_UNKNOWN),
        ),
        (WHERE, LocationRequirement(claim_matches_ip=True), None),
        (
            location(claim_country="FR"),
            LocationRequirement(claim_matches_ip=True),
            fail(Reason.LOCATION_MISMATCH),
        ),
        (
            location(claim_country=None),
            LocationRequirement(claim_matches_ip=True),
            unknown(Reason.COUNTRY_UNKNOWN),
        ),
        # Several conditions: the known failure is reported.
        (
            location(country=None, networks=frozenset({"tor-exits"})),
            LocationRequirement(
                countries_any=frozenset({"DE"}), networks_none=frozenset({"tor-exits"})
            ),
            fail(Reason.NETWORK_DENIED),
        ),
    ],
)
def test_location_requirements(
    where: Location, wanted: LocationRequirement, expected: EvidenceMiss | None
) -> None:
    assert location_miss(wanted, where) == expected


@pytest.mark.parametrize(
    ("workload", "wanted", "expected"),
    [
        (
            Workload(SPIFFE, "prod.example", "peer"),
            WorkloadRequirement(spiffe_ids_any=frozenset({SPIFFE})),
            None,
        ),
        (
            Workload(SPIFFE + "x", "prod.example", "peer"),
            WorkloadRequirement(spiffe_ids_any=frozenset({SPIFFE})),
            fail(Reason.WORKLOAD_DENIED),
        ),
        (
            Workload(SPIFFE, "prod.example", "xfcc"),
            WorkloadRequirement(trust_domains_any=frozenset({"prod.example"})),
            None,
        ),
        (
            Workload("spiffe://dev.example/a", "dev.example", "peer"),
            WorkloadRequirement(trust_domains_any=frozenset({"prod.example"})),
            fail(Reason.WORKLOAD_DENIED),
        ),
        (
            None,
            WorkloadRequirement(spiffe_ids_any=frozenset({SPIFFE})),
            fail(Reason.WORKLOAD_MISSING),
        ),
    ],
)
def test_workload_requirements(
    workload: Workload | None, wanted: WorkloadRequirement, expected: EvidenceMiss | None
) -> None:
    assert workload_miss(wanted, workload) == expected


# --- in evaluation -------------------------------------------------------------------------------

POLICY = """
apiVersion: ztauthz/v1
kind: Policy
metadata: {name: evidence}
spec:
  rules:
    - id: reports-on-healthy-devices
      effect: allow
      match: {paths: [/reports/**]}
      subject: {groups_any: [finance]}
      device:
        managed: true
        compliant: true
        max_risk: 30
        max_posture_age: 1h
        min_os_version: {macos: "14.4", windows: "10.0.22631"}
      location: {countries_any: [DE, FR, NL], networks_none: [tor-exits]}
    - id: payments-api-calls-ledger
      effect: allow
      match: {paths: [/ledger/**]}
      workload: {spiffe_ids_any: ["spiffe://prod.example/ns/payments/sa/api"]}
    - id: admins-via-the-admin-workload
      effect: allow
      match: {paths: [/admin/**]}
      subject: {groups_any: [admins]}
      workload: {trust_domains_any: [prod.example]}
    - id: no-sanctioned-countries
      effect: deny
      match: {paths: [/reports/**, /ledger/**]}
      location: {countries_any: [KP]}
    - id: unmanaged-never-exports
      effect: deny
      match: {paths: [/reports/export]}
      device: {managed: false}
      when: request.method == "POST"
"""


@pytest.fixture
def policies(compile_policies: Callable[..., CompiledPolicies]) -> CompiledPolicies:
    return compile_policies(POLICY)


GOOD = Evidence(
    device=FULL,
    location=WHERE,
    workload=None,
)
PAYMENTS = Workload(SPIFFE, "prod.example", "peer")


def posture_verdict(
    policies: CompiledPolicies,
    path: str,
    evidence: Evidence,
    who: Principal | None,
    method: str = "GET",
) -> tuple[bool, Reason, str | None]:
    request = with_evidence(PolicyInput(method, "api.example.com", path), evidence, NOW)
    verdict = evaluate(policies, request, who, NOW)
    return verdict.allow, verdict.reason, verdict.rule_id


@pytest.mark.parametrize(
    ("path", "evidence", "who", "method", "expected"),
    [
        (
            "/reports/q3",
            GOOD,
            "finance",
            "GET",
            (True, Reason.ALLOWED, "reports-on-healthy-devices"),
        ),
        (
            "/reports/q3",
            Evidence(location=WHERE),
            "finance",
            "GET",
            (False, Reason.DEVICE_MISSING, "reports-on-healthy-devices"),
        ),
        (
            "/reports/q3",
            Evidence(location=WHERE, device_problem=Reason.DEVICE_UNBOUND),
            "finance",
            "GET",
            (False, Reason.DEVICE_UNBOUND, "reports-on-healthy-devices"),
        ),
        (
            "/reports/q3",
            Evidence(device=device(compliant=False), location=WHERE),
            "finance",
            "GET",
            (False, Reason.DEVICE_NONCOMPLIANT, "reports-on-healthy-devices"),
        ),
        (
            "/reports/q3",
            Evidence(device=device(assessed_at=NOW - 7200), location=WHERE),
            "finance",
            "GET",
            (False, Reason.DEVICE_STALE, "reports-on-healthy-devices"),
        ),
        (
            "/reports/q3",
            Evidence(device=FULL, location=location(country="US")),
            "finance",
            "GET",
            (False, Reason.LOCATION_DENIED, "reports-on-healthy-devices"),
        ),
        (
            "/reports/q3",
            Evidence(device=FULL, location=location(networks=frozenset({"tor-exits"}))),
            "finance",
            "GET",
            (False, Reason.NETWORK_DENIED, "reports-on-healthy-devices"),
        ),
        # The subject does not hold: the rule explains nothing.
        ("/reports/q3", GOOD, "sales", "GET", (False, Reason.NO_MATCHING_RULE, None)),
        # A deny rule whose evidence is unknown denies (fail closed) ...
        (
            "/reports/q3",
            Evidence(device=FULL, location=location(country=None)),
            "finance",
            "GET",
            (False, Reason.COUNTRY_UNKNOWN, "no-sanctioned-countries"),
        ),
        (
            "/reports/q3",
            Evidence(device=FULL, location=location(country="KP")),
            "finance",
            "GET",
            (False, Reason.DENIED_BY_RULE, "no-sanctioned-countries"),
        ),
        # ... unless another of its conditions is known to be false (when: POST).
        (
            "/reports/export",
            Evidence(location=WHERE),
            "finance",
            "GET",
            (False, Reason.DEVICE_MISSING, "reports-on-healthy-devices"),
        ),
        (
            "/reports/export",
            Evidence(location=WHERE),
            "finance",
            "POST",
            (False, Reason.DEVICE_MISSING, "unmanaged-never-exports"),
        ),
        (
            "/reports/export",
            Evidence(device=device(managed=False), location=WHERE),
            "finance",
            "POST",
            (False, Reason.DENIED_BY_RULE, "unmanaged-never-exports"),
        ),
        (
            "/reports/export",
            GOOD,
            "finance",
            "POST",
            (True, Reason.ALLOWED, "reports-on-healthy-devices"),
        ),
        # A workload rule allows the workload without a token, and with one.
        (
            "/ledger/entries",
            Evidence(workload=PAYMENTS, location=WHERE),
            None,
            "GET",
            (True, Reason.ALLOWED, "payments-api-calls-ledger"),
        ),
        (
            "/ledger/entries",
            Evidence(workload=PAYMENTS, location=WHERE),
            "finance",
            "GET",
            (True, Reason.ALLOWED, "payments-api-calls-ledger"),
        ),
        # Another workload is told why; without a workload or token the client must authenticate.
        (
            "/ledger/entries",
            Evidence(
                workload=Workload("spiffe://prod.example/ns/web/sa/ui", "prod.example", "peer"),
                location=WHERE,
            ),
            None,
            "GET",
            (False, Reason.WORKLOAD_DENIED, "payments-api-calls-ledger"),
        ),
        (
            "/ledger/entries",
            Evidence(location=WHERE),
            None,
            "GET",
            (False, Reason.TOKEN_MISSING, None),
        ),
        # A user without a workload: the service rule does not apply to them at all.
        (
            "/ledger/entries",
            Evidence(location=WHERE),
            "finance",
            "GET",
            (False, Reason.NO_MATCHING_RULE, None),
        ),
        # subject and workload together: both are needed.
        (
            "/admin/users",
            Evidence(workload=PAYMENTS),
            "admins",
            "GET",
            (True, Reason.ALLOWED, "admins-via-the-admin-workload"),
        ),
        (
            "/admin/users",
            Evidence(),
            "admins",
            "GET",
            (False, Reason.WORKLOAD_MISSING, "admins-via-the-admin-workload"),
        ),
        (
            "/admin/users",
            Evidence(workload=PAYMENTS),
            None,
            "GET",
            (False, Reason.TOKEN_MISSING, None),
        ),
    ],
)
def test_evidence_in_evaluation(
    policies: CompiledPolicies,
    principal: Callable[..., Principal],
    path: str,
    evidence: Evidence,
    who: str | None,
    method: str,
    expected: tuple[bool, Reason, str | None],
) -> None:
    subject = None if who is None else principal(subject=who, groups=[who])
    assert posture_verdict(policies, path, evidence, subject, method) == expected


def test_cel_sees_the_same_evidence(compile_policies: Callable[..., CompiledPolicies]) -> None:
    policies = compile_policies(
        """
        apiVersion: ztauthz/v1
        kind: Policy
        metadata: {name: cel}
        spec:
          rules:
            - id: cel-evidence
              effect: allow
              anonymous: true
              when: >
                device.source == "device_token" && device.age == 600 && device.os_version == "14.4.1"
                && location.country == "DE" && "corp-vpn" in location.networks
                && workload.trust_domain == "prod.example" && !has(device.unknown)
        """
    )
    evidence = Evidence(device=FULL, location=WHERE, workload=PAYMENTS)
    assert posture_verdict(policies, "/x", evidence, None)[0] is True
    assert posture_verdict(policies, "/x", Evidence(device=FULL, location=WHERE), None)[1] is (
        Reason.CONDITION_ERROR
    )


# --- loading -------------------------------------------------------------------------------------


def write(tmp_path: Path, rule: str) -> Path:
    (tmp_path / "p.yaml").write_text(
        "apiVersion: ztauthz/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  rules:\n" + rule,
        encoding="utf-8",
    )
    return tmp_path


@pytest.mark.parametrize(
    ("rule", "options", "message"),
    [
        (
            "    - id: r\n      effect: allow\n      location: {networks_any: [corp-vpm]}\n",
            LoadOptions(networks=frozenset({"corp-vpn", "tor-exits"})),
            "p.yaml:8: spec.rules[0].location.networks_any[0]: unknown network 'corp-vpm': "
            "evidence.networks in the configuration names corp-vpn, tor-exits",
        ),
        (
            "    - id: r\n      effect: deny\n      location:\n        networks_none: [x]\n",
            LoadOptions(networks=frozenset()),
            "p.yaml:9: spec.rules[0].location.networks_none[0]: unknown network 'x': "
            "evidence.networks in the configuration names none",
        ),
        (
            "    - id: r\n      effect: allow\n      device:\n        min_os_version: {macos: 14.4}\n",
            LoadOptions(),
            "p.yaml:9: spec.rules[0].device.min_os_version.macos: expected a string, got a number",
        ),
        (
            '    - id: r\n      effect: allow\n      device:\n        min_os_version: {macos: "14.x"}\n',
            LoadOptions(),
            "p.yaml:9: spec.rules[0].device.min_os_version.macos: '14.x' is invalid: expected a "
            'quoted version such as "14.4" or "10.0.22631"',
        ),
        (
            "    - id: r\n      effect: allow\n      device: {max_posture_age: soon}\n",
            LoadOptions(),
            "p.yaml:8: spec.rules[0].device.max_posture_age: 'soon' is invalid: expected a "
            "duration such as 30s, 10m or 1h",
        ),
        (
            "    - id: r\n      effect: allow\n      anonymous: true\n"
            "      workload: {trust_domains_any: [a.example]}\n",
            LoadOptions(),
            "p.yaml:8: spec.rules[0].anonymous: a workload rule identifies the caller by its "
            "client certificate, so it cannot be anonymous; remove anonymous or workload",
        ),
        (
            "    - id: r\n      effect: allow\n      location: {countries_any: [de]}\n",
            LoadOptions(),
            "p.yaml:8: spec.rules[0].location.countries_any[0]: 'de' is invalid: expected an "
            "upper-case ISO 3166-1 alpha-2 country code such as DE",
        ),
        (
            "    - id: r\n      effect: allow\n      workload: {spiffe_ids_any: [spiffe://A/b]}\n",
            LoadOptions(),
            "p.yaml:8: spec.rules[0].workload.spiffe_ids_any[0]: 'spiffe://A/b' is invalid: "
            "expected a SPIFFE ID such as spiffe://example.org/ns/billing/sa/api",
        ),
        (
            "    - id: r\n      effect: allow\n      device: {}\n",
            LoadOptions(),
            "p.yaml:8: spec.rules[0].device: must not be empty",
        ),
    ],
)
def test_load_errors_name_file_line_and_key(
    tmp_path: Path, rule: str, options: LoadOptions, message: str
) -> None:
    with pytest.raises(PolicyLoadError) as caught:
        load_policy_dir(write(tmp_path, rule), options)
    assert [str(p).removeprefix(f"{tmp_path}/") for p in caught.value.problems] == [message]


def test_networks_are_not_checked_without_a_configuration(tmp_path: Path) -> None:
    rule = "    - id: r\n      effect: allow\n      location: {networks_any: [anything]}\n"
    loaded = load_policy_dir(write(tmp_path, rule))
    (only,) = loaded.rules
    assert only.evidence is not None and only.evidence.location is not None
    assert only.evidence.location.networks_any == frozenset({"anything"})
    assert only.conditional
