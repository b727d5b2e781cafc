"""Property check: indexed evaluation equals a naive scan over every rule.

Random rule sets (written as YAML and loaded by the real loader) and random requests, from
fixed seeds so a failure is reproducible. The reference below matches each rule on its own,
straight from the documented semantics, with no index.
"""

from __future__ import annotations

import random
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import yaml

from app.identity.principal import Principal
from app.policy.evaluate import PolicyInput, Verdict, evaluate, subject_holds
from app.policy.index import CompiledPolicies, split_path
from app.policy.loader import load_policy_dir
from app.policy.model import Rule
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


def applies(rule: Rule, principal: Principal | None) -> bool:
    if rule.anonymous:
        return True
    if principal is None:
        return rule.effect == "deny" and rule.subject is None
    return rule.subject is None or subject_holds(rule.subject, principal)


def naive(rules: tuple[Rule, ...], request: PolicyInput, who: Principal | None) -> Verdict:
    matching = [r for r in rules if rule_matches(r, request)]
    for rule in matching:
        if rule.effect == "deny" and applies(rule, who):
            return Verdict(False, Reason.DENIED_BY_RULE, rule.id, rule.policy)
    for rule in matching:
        if rule.effect == "allow" and applies(rule, who):
            reason = Reason.ALLOWED if who is not None else Reason.ALLOWED_ANONYMOUS
            return Verdict(True, reason, rule.id, rule.policy)
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
    if rule["effect"] == "allow" and rng.random() < 0.2:
        rule["anonymous"] = True
        return rule
    subject: dict[str, Any] = {}
    if rng.random() < 0.5:
        subject["groups_any"] = rng.sample(GROUPS, rng.randint(1, 2))
    if rng.random() < 0.3:
        subject["scopes_all"] = rng.sample(SCOPES, rng.randint(1, 2))
    if rng.random() < 0.2:
        subject["claims"] = {"org.tenant": rng.sample(TENANTS, rng.randint(1, 2))}
    if subject:
        rule["subject"] = subject
    return rule


def write_random_policies(rng: random.Random, root: Path) -> None:
    serial = 0
    for file_number in range(rng.randint(1, 3)):
        docs = []
        for doc_number in range(rng.randint(1, 2)):
            spec: dict[str, Any] = {"rules": []}
            if rng.random() < 0.5:
                spec["hosts"] = rng.sample(POLICY_HOSTS, rng.randint(1, 2))
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


def random_request(rng: random.Random) -> PolicyInput:
    segments = [rng.choice(REQUEST_SEGMENTS) for _ in range(rng.randint(0, 4))]
    path = "/" + "/".join(segments)
    return PolicyInput(rng.choice(REQUEST_METHODS), rng.choice(REQUEST_HOSTS), path)


def random_principal(rng: random.Random) -> Principal | None:
    if rng.random() < 0.3:
        return None
    claims = {"org": {"tenant": rng.choice(TENANTS)}} if rng.random() < 0.7 else {}
    return Principal(
        issuer="https://idp.example.com",
        subject="someone",
        groups=frozenset(rng.sample(GROUPS, rng.randint(0, 2))),
        scopes=frozenset(rng.sample(SCOPES, rng.randint(0, 2))),
        audience=("api",),
        expires_at=0,
        issued_at=0,
        claims=MappingProxyType(claims),
    )


@pytest.mark.parametrize("seed", range(40))
def test_indexed_evaluation_equals_naive_scan(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    write_random_policies(rng, tmp_path)
    policies: CompiledPolicies = load_policy_dir(tmp_path)
    outcomes = set()
    for _ in range(300):
        request, who = random_request(rng), random_principal(rng)
        expected_candidates = [r.id for r in policies.rules if rule_matches(r, request)]
        found = policies.index.lookup(request.method, request.host, request.path)
        assert [r.id for r in found.rules] == expected_candidates, (seed, request)
        verdict = evaluate(policies, request, who, 0.0)
        assert verdict == naive(policies.rules, request, who), (seed, request, who)
        outcomes.add(verdict.reason)
    # The generator is not degenerate: rule sets produce more than one kind of outcome.
    assert len(outcomes) >= 2, seed
