"""Property check: indexed evaluation equals a naive scan over every rule.

Random rule sets (written as YAML and loaded by the real loader), random grants and random
requests at random moments, from fixed seeds so a failure is reproducible. The reference below
matches each rule on its own, straight from the documented semantics, with no index: host,
method, path; then subject (with granted groups and scopes), time window, grant, evidence
(``device``, ``location``, ``workload``, with random evidence per request), ``when`` (CEL, through
the library directly with variables built here), ``auth``; deny beats allow, errors and unknown
evidence deny, and the nearest miss explains a deny. Dry-run policies must stay out of the
enforced index and be in the dry-run one.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import yaml

from app.decision import StepUp
from app.evidence.model import Device, Evidence, Location, Workload
from app.identity.principal import Principal
from app.policy.cel_engine import cel_compile
from app.policy.evaluate import PolicyInput, Verdict, evaluate, evaluate_index, with_evidence
from app.policy.index import CompiledPolicies, split_path
from app.policy.loader import load_policy_dir
from app.policy.model import Grant, Rule, Subject
from app.reasons import Reason

POLICY_HOSTS = ["a.example.com", "b.example.com", "*.example.com", "*.x.example.com"]
REQUEST_HOSTS = [
    "a.example.com",
    "b.example.com",
    "c.example.com",
    "example.com",
    "z.x.example.com",
    "q.r.x.example.com",
]
METHODS = ["GET", "POST", "PUT", "DELETE"]
REQUEST_METHODS = [*METHODS, "PATCH"]
SEGMENTS = ["a", "b", "c"]
REQUEST_SEGMENTS = [*SEGMENTS, "d"]
GROUPS = ["g1", "g2", "g3"]
SCOPES = ["s1", "s2"]
TENANTS = ["acme", "globex", "initech"]
SUBJECTS = ["sam", "kim"]
GRANT_NAMES = ["jit-a", "jit-b"]
DAY_START = 1_795_651_200.0  # 2026-11-26T00:00:00Z
CONDITIONS = [
    'request.method == "GET"',
    '"g1" in subject.groups',
    'subject.claims.org.tenant == "acme"',  # an error when the claim is missing
    "request.path.size() > 4",
    'subject == null || subject.id == "sam"',
    "time.now.getHours() >= 12",
]
MISS_PRIORITY = [
    Reason.CONDITION_ERROR,
    Reason.INSUFFICIENT_USER_AUTHENTICATION,
    Reason.GRANT_INACTIVE,
    Reason.GRANT_REQUIRED,
    Reason.OUTSIDE_TIME_WINDOW,
    Reason.DEVICE_UNBOUND,
    Reason.DEVICE_INVALID,
    Reason.DEVICE_STALE,
    Reason.DEVICE_NONCOMPLIANT,
    Reason.DEVICE_MISSING,
    Reason.CLIENT_IP_UNKNOWN,
    Reason.COUNTRY_UNKNOWN,
    Reason.LOCATION_MISMATCH,
    Reason.LOCATION_DENIED,
    Reason.NETWORK_DENIED,
    Reason.WORKLOAD_DENIED,
    Reason.WORKLOAD_MISSING,
    Reason.CONDITION_NOT_MET,
]
COUNTRIES = ["DE", "FR", "US", "KP"]
NETWORKS = ["corp-vpn", "tor-exits"]
WORKLOADS = [
    "spiffe://prod.example/ns/a/sa/api",
    "spiffe://prod.example/ns/b/sa/ui",
    "spiffe://dev.example/x",
]
OS_MINIMUM = {"macos": (14, 4), "windows": (10, 0, 22631)}


# --- the reference -----------------------------------------------------------------------------


def pattern_matches(pattern: tuple[str, ...], segments: tuple[str, ...]) -> bool:
    if not pattern:
        return not segments
    if pattern == ("**",):
        return True
    if not segments:
        return False
    head_ok = pattern[0] == "*" or pattern[0] == segments[0]
    return head_ok and pattern_matches(pattern[1:], segments[1:])


def host_matches(rule_host: str, host: str) -> bool:
    if rule_host.startswith("*."):
        label, dot, parent = host.partition(".")
        return bool(label) and bool(dot) and parent == rule_host[2:]
    return rule_host == host


def rule_matches(rule: Rule, request: PolicyInput) -> bool:
    return (
        (not rule.hosts or any(host_matches(h, request.host) for h in rule.hosts))
        and (rule.methods is None or request.method in rule.methods)
        and any(pattern_matches(split_path(p), split_path(request.path)) for p in rule.paths)
    )


def subject_ok(subject: Subject, who: Principal, groups: set[str], scopes: set[str]) -> bool:
    def claim_ok(name: str, values: tuple[Any, ...]) -> bool:
        value: Any = who.claims
        for part in name.split("."):
            if not isinstance(value, dict | MappingProxyType) or part not in value:
                return False
            value = value[part]
        items = value if isinstance(value, list) else [value]
        return any(isinstance(i, str) and i in values for i in items)

    return (
        (subject.issuers_any is None or who.issuer in subject.issuers_any)
        and (subject.subjects_any is None or who.subject in subject.subjects_any)
        and (subject.groups_any is None or bool(subject.groups_any & groups))
        and (subject.groups_all is None or subject.groups_all <= groups)
        and (subject.scopes_any is None or bool(subject.scopes_any & scopes))
        and (subject.scopes_all is None or subject.scopes_all <= scopes)
        and all(claim_ok(c.name, c.values) for c in subject.claims)
    )


class Reference:
    """Everything about one request, computed the plain way."""

    def __init__(
        self, request: PolicyInput, who: Principal | None, now: float, grants: tuple[Grant, ...]
    ) -> None:
        self.request, self.who, self.now = request, who, now
        mine = []
        if who is not None:
            for g in sorted(grants, key=lambda g: (g.file, g.line)):
                if g.issuer is not None and g.issuer != who.issuer:
                    continue
                if g.subject == who.subject or (g.group is not None and g.group in who.groups):
                    mine.append(g)
        self.active = [g for g in mine if g.not_before <= now < g.expires]
        self.inactive = [g for g in mine if not g.not_before <= now < g.expires]
        self.groups = set(who.groups) if who else set()
        self.scopes = set(who.scopes) if who else set()
        for g in self.active:
            self.groups |= g.groups
            self.scopes |= g.scopes

    def cel(self, source: str) -> bool | None:
        """True/False, or None for an evaluation error."""
        who = self.who
        subject = None
        if who is not None:
            subject = {
                "id": who.subject,
                "issuer": who.issuer,
                "groups": sorted(self.groups),
                "scopes": sorted(self.scopes),
                "grants": [g.name for g in self.active],
                "claims": dict(who.claims),
                "client_id": who.client_id,
                "acr": who.acr,
                "amr": sorted(who.amr),
                "auth_time": who.auth_time,
            }
        variables = {
            "request": {
                "method": self.request.method,
                "host": self.request.host,
                "path": self.request.path,
                "headers": {},
            },
            "subject": subject,
            "device": dict(self.request.device),
            "location": dict(self.request.location),
            "workload": dict(self.request.workload),
            "time": {"now": datetime.fromtimestamp(self.now, UTC), "unix": int(self.now)},
        }
        try:
            value = cel_compile(source).execute(variables)
        except Exception:
            return None
        return value if isinstance(value, bool) else None

    def evidence(self, rule: Rule) -> tuple[str, Reason | None]:
        """("ok" | "fail" | "unknown", reason) for the rule's evidence conditions: every check
        in order; the first known failure wins, else the first unknown."""
        assert rule.evidence is not None
        ev, checks = self.request.evidence, []
        wanted = rule.evidence.device
        if wanted is not None:
            d = ev.device
            if (
                d is not None
                and wanted.sources_any is not None
                and d.source not in wanted.sources_any
            ):
                d = None
            if d is None:
                checks.append(("unknown", ev.device_problem or Reason.DEVICE_MISSING))
            else:
                if wanted.max_posture_age is not None and (
                    d.assessed_at is None or self.now - d.assessed_at > wanted.max_posture_age
                ):
                    checks.append(("unknown", Reason.DEVICE_STALE))
                for want, have in (
                    (wanted.managed, d.managed),
                    (wanted.compliant, d.compliant),
                    (wanted.disk_encrypted, d.disk_encrypted),
                    (wanted.screen_lock, d.screen_lock),
                ):
                    if want is not None and have is None:
                        checks.append(("unknown", Reason.DEVICE_NONCOMPLIANT))
                    elif want is not None and have != want:
                        checks.append(("fail", Reason.DEVICE_NONCOMPLIANT))
                if wanted.max_risk is not None:
                    if d.risk_score is None:
                        checks.append(("unknown", Reason.DEVICE_NONCOMPLIANT))
                    elif d.risk_score > wanted.max_risk:
                        checks.append(("fail", Reason.DEVICE_NONCOMPLIANT))
                if wanted.min_os_version is not None:
                    table = dict(wanted.min_os_version)
                    if d.os_name is None or (d.os_name in table and d.os_version is None):
                        checks.append(("unknown", Reason.DEVICE_NONCOMPLIANT))
                    elif d.os_name not in table:
                        checks.append(("fail", Reason.DEVICE_NONCOMPLIANT))
                    else:
                        have_version = [int(x) for x in str(d.os_version).split(".")]
                        need = list(table[d.os_name])
                        width = max(len(have_version), len(need))
                        have_version += [0] * (width - len(have_version))
                        need += [0] * (width - len(need))
                        if have_version < need:
                            checks.append(("fail", Reason.DEVICE_NONCOMPLIANT))
        place = rule.evidence.location
        if place is not None:
            where = ev.location
            if place.countries_any is not None or place.countries_none is not None:
                if where.country is None:
                    checks.append(("unknown", Reason.COUNTRY_UNKNOWN))
                elif (
                    place.countries_any is not None and where.country not in place.countries_any
                ) or (place.countries_none is not None and where.country in place.countries_none):
                    checks.append(("fail", Reason.LOCATION_DENIED))
            if place.networks_any is not None or place.networks_none is not None:
                if where.client_ip is None:
                    checks.append(("unknown", Reason.CLIENT_IP_UNKNOWN))
                elif (
                    place.networks_any is not None and not place.networks_any & where.networks
                ) or (place.networks_none is not None and place.networks_none & where.networks):
                    checks.append(("fail", Reason.NETWORK_DENIED))
            if place.claim_matches_ip:
                if where.ip_country is None or where.claim_country is None:
                    checks.append(("unknown", Reason.COUNTRY_UNKNOWN))
                elif where.ip_country != where.claim_country:
                    checks.append(("fail", Reason.LOCATION_MISMATCH))
        caller = rule.evidence.workload
        if caller is not None:
            if ev.workload is None:
                checks.append(("fail", Reason.WORKLOAD_MISSING))
            elif (
                caller.spiffe_ids_any is not None and ev.workload.id not in caller.spiffe_ids_any
            ) or (
                caller.trust_domains_any is not None
                and ev.workload.trust_domain not in caller.trust_domains_any
            ):
                checks.append(("fail", Reason.WORKLOAD_DENIED))
        for status in ("fail", "unknown"):
            for found, reason in checks:
                if found == status:
                    return status, reason
        return "ok", None

    def outcome(self, rule: Rule) -> tuple[bool, Reason | None, tuple[str, ...], bool]:
        """(applies, miss reason or None, grants used, the miss is unknown evidence)."""
        who, used = self.who, []
        service_rule = rule.evidence is not None and rule.evidence.workload is not None
        if not rule.anonymous:
            if who is None:
                if rule.subject is not None or (rule.effect == "allow" and not service_rule):
                    return False, None, (), False
            elif rule.subject is not None:
                if not subject_ok(rule.subject, who, self.groups, self.scopes):
                    return False, None, (), False
                if not subject_ok(rule.subject, who, set(who.groups), set(who.scopes)):
                    s = rule.subject
                    wanted_groups = (s.groups_any or set()) | (s.groups_all or set())
                    wanted_scopes = (s.scopes_any or set()) | (s.scopes_all or set())
                    used += [
                        g.name
                        for g in self.active
                        if g.groups & wanted_groups or g.scopes & wanted_scopes
                    ]
        window = rule.time_window
        if window is not None:
            minute = datetime.fromtimestamp(self.now, UTC).hour * 60
            minute += datetime.fromtimestamp(self.now, UTC).minute
            if not window.start <= minute < window.end:
                return False, Reason.OUTSIDE_TIME_WINDOW, (), False
        if rule.grant is not None:
            holding = [g for g in self.active if g.grant == rule.grant]
            if not holding:
                inactive = any(g.grant == rule.grant for g in self.inactive)
                return (
                    False,
                    Reason.GRANT_INACTIVE if inactive else Reason.GRANT_REQUIRED,
                    (),
                    False,
                )
            used.append(holding[0].name)
        pending = None
        if rule.evidence is not None:
            if rule.subject is None and service_rule and self.request.evidence.workload is None:
                return False, None, (), False
            status, reason = self.evidence(rule)
            if status == "fail" or (status == "unknown" and rule.effect == "allow"):
                return False, reason, (), False
            if status == "unknown":
                pending = reason
        if rule.when is not None:
            holds = self.cel(rule.when.source)
            if holds is None:
                return False, Reason.CONDITION_ERROR, (), False
            if not holds:
                return False, Reason.CONDITION_NOT_MET, (), False
        if pending is not None:
            return False, pending, (), True
        if rule.auth is not None:
            assert who is not None
            auth = rule.auth
            strong = (
                (auth.acr_any is None or who.acr in auth.acr_any)
                and (auth.amr_all is None or auth.amr_all <= who.amr)
                and (
                    auth.max_age is None
                    or (who.auth_time is not None and self.now - who.auth_time <= auth.max_age)
                )
            )
            if not strong:
                return False, Reason.INSUFFICIENT_USER_AUTHENTICATION, (), False
        return True, None, tuple(dict.fromkeys(used)), False


def naive(
    rules: tuple[Rule, ...],
    request: PolicyInput,
    who: Principal | None,
    now: float,
    grants: tuple[Grant, ...],
) -> Verdict:
    ref = Reference(request, who, now, grants)
    matching = [r for r in rules if rule_matches(r, request)]
    for rule in matching:
        if rule.effect == "deny":
            applies, miss, _, unknown = ref.outcome(rule)
            if applies:
                return Verdict(False, Reason.DENIED_BY_RULE, rule.id, rule.policy)
            if miss is Reason.CONDITION_ERROR or (miss is not None and unknown):
                return Verdict(False, miss, rule.id, rule.policy)
    misses: dict[Reason, Rule] = {}
    for rule in matching:
        if rule.effect == "allow":
            applies, miss, used, _ = ref.outcome(rule)
            if applies:
                anonymous = who is None and rule.anonymous
                reason = Reason.ALLOWED_ANONYMOUS if anonymous else Reason.ALLOWED
                return Verdict(True, reason, rule.id, rule.policy, grants=used)
            as_workload = (
                rule.evidence is not None
                and rule.evidence.workload is not None
                and request.evidence.workload is not None
            )
            counts = who is not None or miss is Reason.CONDITION_ERROR or as_workload
            if miss is not None and miss not in misses and counts:
                misses[miss] = rule
    for reason in MISS_PRIORITY:
        if reason in misses:
            rule = misses[reason]
            step_up = None
            if reason is Reason.INSUFFICIENT_USER_AUTHENTICATION and rule.auth is not None:
                step_up = StepUp(rule.auth.acr_any or (), rule.auth.max_age)
            return Verdict(False, reason, rule.id, rule.policy, step_up=step_up)
    if who is None:
        return Verdict(False, Reason.TOKEN_MISSING, None, None)
    return Verdict(False, Reason.NO_MATCHING_RULE, None, None)


# --- random inputs -----------------------------------------------------------------------------


def random_pattern(rng: random.Random, shortest: int) -> str:
    segments = [rng.choice([*SEGMENTS, "*"]) for _ in range(rng.randint(shortest, 3))]
    if rng.random() < 0.35:
        segments.append("**")
    return "/" + "/".join(segments)


def random_rule(rng: random.Random, rule_id: str) -> dict[str, Any]:
    rule: dict[str, Any] = {"id": rule_id, "effect": "deny" if rng.random() < 0.3 else "allow"}
    match: dict[str, Any] = {}
    if rng.random() < 0.6:
        match["methods"] = rng.sample(METHODS, rng.randint(1, 3))
    if rule["effect"] == "deny" or rng.random() < 0.85:
        shortest = 1 if rule["effect"] == "deny" else 0  # few blanket denies
        patterns = {random_pattern(rng, shortest) for _ in range(rng.randint(1, 3))}
        match["paths"] = sorted(patterns)
    if match:
        rule["match"] = match
    if rng.random() < 0.15:
        start = rng.randint(0, 23)
        rule["time_window"] = {
            "timezone": "UTC",
            "hours": f"{start:02d}:00-{rng.randint(start + 1, 24):02d}:00",
        }
    if rng.random() < 0.15:
        rule["when"] = rng.choice(CONDITIONS)
    if rng.random() < 0.2:
        rule["device"] = random_device_requirement(rng)
    if rng.random() < 0.2:
        rule["location"] = random_location_requirement(rng)
    if rule["effect"] == "allow" and rng.random() < 0.2:
        rule["anonymous"] = True
        return rule
    if rng.random() < 0.15:
        rule["workload"] = (
            {"spiffe_ids_any": rng.sample(WORKLOADS, rng.randint(1, 2))}
            if rng.random() < 0.6
            else {"trust_domains_any": [rng.choice(["prod.example", "dev.example"])]}
        )
    subject: dict[str, Any] = {}
    if rng.random() < 0.5:
        subject["groups_any"] = rng.sample(GROUPS, rng.randint(1, 2))
    if rng.random() < 0.3:
        subject["scopes_all"] = rng.sample(SCOPES, rng.randint(1, 2))
    if rng.random() < 0.2:
        subject["claims"] = {"org.tenant": rng.sample(TENANTS, rng.randint(1, 2))}
    if subject:
        rule["subject"] = subject
    if rule["effect"] == "allow" and rng.random() < 0.15:
        rule["grant"] = rng.choice(GRANT_NAMES)
    if rule["effect"] == "allow" and rng.random() < 0.15:
        rule["auth"] = rng.choice(
            [{"amr_all": ["mfa"]}, {"acr_any": ["high", "max"]}, {"max_age": "10m"}]
        )
    return rule


def random_device_requirement(rng: random.Random) -> dict[str, Any]:
    options: dict[str, Any] = {
        "managed": rng.random() < 0.8,
        "compliant": True,
        "disk_encrypted": True,
        "max_risk": rng.choice([10, 30, 50]),
        "max_posture_age": rng.choice(["10m", "1h"]),
        "min_os_version": {"macos": "14.4", "windows": "10.0.22631"},
        "sources_any": rng.sample(["device_token", "token_claims", "client_certificate"], 2),
    }
    keys = rng.sample(sorted(options), rng.randint(1, 3))
    return {key: options[key] for key in keys}


def random_location_requirement(rng: random.Random) -> dict[str, Any]:
    options: dict[str, Any] = {
        "countries_any": rng.sample(COUNTRIES[:3], rng.randint(1, 2)),
        "countries_none": ["KP"],
        "networks_any": ["corp-vpn"],
        "networks_none": ["tor-exits"],
        "claim_matches_ip": True,
    }
    keys = rng.sample(sorted(options), rng.randint(1, 2))
    return {key: options[key] for key in keys}


def random_evidence(rng: random.Random, now: float) -> Evidence:
    device = None
    if rng.random() < 0.6:
        os_name = rng.choice(["macos", "windows", "linux", None])
        versions = {"macos": ["14.3", "14.4", "15"], "windows": ["10.0.19045", "10.0.22631.2"]}
        device = Device(
            id=f"d{rng.randint(1, 3)}",
            source=rng.choice(["device_token", "token_claims", "client_certificate"]),
            managed=rng.choice([True, False, None]),
            compliant=rng.choice([True, True, False, None]),
            os_name=os_name,
            os_version=rng.choice([*versions.get(os_name or "", ["1.0"]), None]),
            disk_encrypted=rng.choice([True, False, None]),
            risk_score=rng.choice([5.0, 25.0, 45.0, None]),
            assessed_at=rng.choice([now - 60, now - 1800, now - 7200, None]),
        )
    problem = rng.choice(
        [None, None, Reason.DEVICE_UNBOUND, Reason.DEVICE_INVALID, Reason.DEVICE_STALE]
    )
    known_ip = rng.random() < 0.8
    ip_country = rng.choice([*COUNTRIES, None]) if known_ip else None
    claim_country = rng.choice([*COUNTRIES, None])
    location = Location(
        client_ip="192.0.2.1" if known_ip else None,
        networks=frozenset(rng.sample(NETWORKS, rng.randint(0, 2))) if known_ip else frozenset(),
        ip_country=ip_country,
        claim_country=claim_country,
        country=ip_country or rng.choice([claim_country, None]),
    )
    workload = None
    if rng.random() < 0.4:
        chosen = rng.choice(WORKLOADS)
        workload = Workload(chosen, chosen.split("/")[2], "peer")
    return Evidence(device, problem, location, workload)


def random_grants(rng: random.Random) -> list[dict[str, Any]]:
    grants = []
    for number in range(rng.randint(0, 4)):
        start = DAY_START + rng.randint(0, 20) * 3600
        spec: dict[str, Any] = {
            "not_before": datetime.fromtimestamp(start, UTC).isoformat(),
            "expires": datetime.fromtimestamp(start + rng.randint(1, 8) * 3600, UTC).isoformat(),
            "approved_by": "approver",
            "reason": "test",
        }
        if rng.random() < 0.5:
            spec["subject"] = rng.choice(SUBJECTS)
        else:
            spec["group"] = rng.choice(GROUPS)
        what = rng.random()
        if what < 0.5:
            spec["grant"] = rng.choice(GRANT_NAMES)
        elif what < 0.75:
            spec["groups"] = rng.sample(GROUPS, 1)
        else:
            spec["scopes"] = rng.sample(SCOPES, 1)
        grants.append(
            {
                "apiVersion": "ztauthz/v1",
                "kind": "Grant",
                "metadata": {"name": f"grant-{number}"},
                "spec": spec,
            }
        )
    return grants


def write_random_policies(rng: random.Random, root: Path) -> None:
    serial = 0
    for file_number in range(rng.randint(1, 3)):
        docs = []
        for doc_number in range(rng.randint(1, 2)):
            spec: dict[str, Any] = {"rules": []}
            if rng.random() < 0.5:
                spec["hosts"] = rng.sample(POLICY_HOSTS, rng.randint(1, 2))
            if rng.random() < 0.15:
                spec["mode"] = "dry-run"
            for _ in range(rng.randint(1, 15)):
                serial += 1
                spec["rules"].append(random_rule(rng, f"r{serial}"))
            docs.append(
                {
                    "apiVersion": "ztauthz/v1",
                    "kind": "Policy",
                    "metadata": {"name": f"p{file_number}-{doc_number}"},
                    "spec": spec,
                }
            )
        (root / f"f{file_number}.yaml").write_text(yaml.safe_dump_all(docs), encoding="utf-8")
    grants = random_grants(rng)
    if grants:
        (root / "grants.yaml").write_text(yaml.safe_dump_all(grants), encoding="utf-8")


def random_request(rng: random.Random, now: float) -> PolicyInput:
    segments = [rng.choice(REQUEST_SEGMENTS) for _ in range(rng.randint(0, 4))]
    path = "/" + "/".join(segments)
    request = PolicyInput(rng.choice(REQUEST_METHODS), rng.choice(REQUEST_HOSTS), path)
    return with_evidence(request, random_evidence(rng, now), now)


def random_principal(rng: random.Random, now: float) -> Principal | None:
    if rng.random() < 0.3:
        return None
    claims = {"org": {"tenant": rng.choice(TENANTS)}} if rng.random() < 0.7 else {}
    return Principal(
        issuer="https://idp.example.com",
        subject=rng.choice(SUBJECTS),
        groups=frozenset(rng.sample(GROUPS, rng.randint(0, 2))),
        scopes=frozenset(rng.sample(SCOPES, rng.randint(0, 2))),
        audience=("api",),
        expires_at=0,
        issued_at=0,
        claims=MappingProxyType(claims),
        acr=rng.choice([None, "low", "high"]),
        amr=frozenset(rng.sample(["pwd", "mfa"], rng.randint(0, 2))),
        auth_time=rng.choice([None, int(now) - rng.randint(0, 1200)]),
    )


@pytest.mark.parametrize("seed", range(40))
def test_indexed_evaluation_equals_naive_scan(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    write_random_policies(rng, tmp_path)
    policies: CompiledPolicies = load_policy_dir(tmp_path)
    grants = policies.grants.grants
    enforced = tuple(r for r in policies.rules if not r.dry_run)
    outcomes = set()
    for _ in range(300):
        now = DAY_START + rng.randint(0, 86399)
        request, who = random_request(rng, now), random_principal(rng, now)
        expected_candidates = [r.id for r in enforced if rule_matches(r, request)]
        found = policies.index.lookup(request.method, request.host, request.path)
        assert [r.id for r in found.rules] == expected_candidates, (seed, request)
        verdict = evaluate(policies, request, who, now)
        assert verdict == naive(enforced, request, who, now, grants), (seed, request, who, now)
        outcomes.add(verdict.reason)
        if policies.dry_run_index is not None:
            shadow = evaluate_index(policies.dry_run_index, policies.grants, request, who, now)
            assert shadow == naive(policies.rules, request, who, now, grants), (seed, request)
    # The generator is not degenerate: rule sets produce more than one kind of outcome.
    assert len(outcomes) >= 2, seed


def test_the_generator_reaches_every_reason(tmp_path: Path) -> None:
    """Across the seeds, every policy outcome occurs: the property covers each feature."""
    seen: set[Reason] = set()
    for seed in range(40):
        rng = random.Random(seed)
        root = tmp_path / str(seed)
        root.mkdir()
        write_random_policies(rng, root)
        policies = load_policy_dir(root)
        for _ in range(300):
            now = DAY_START + rng.randint(0, 86399)
            request, who = random_request(rng, now), random_principal(rng, now)
            seen.add(evaluate(policies, request, who, now).reason)
    assert seen >= {
        Reason.ALLOWED,
        Reason.ALLOWED_ANONYMOUS,
        Reason.DENIED_BY_RULE,
        Reason.NO_MATCHING_RULE,
        Reason.TOKEN_MISSING,
        *MISS_PRIORITY,
    }
