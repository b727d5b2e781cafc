"""``ztauthz policy test``: YAML test cases beside the policies, run against them.

Test files are the ``*_test.yaml`` files of the directory (the policy loader skips them). Each
holds ``kind: PolicyTest`` documents: a list of cases, each a request (method, host, path,
headers), the token's claims (or none), evidence for CEL conditions, the moment it happens, and
the expected decision. A case passes when every key given under ``expect`` matches. Cases are
decided like a check (path and host normalized, claims read as the verifier reads them, the
enforced rules evaluated), without signatures or keys: the claims stand for a verified token.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from app.evidence.model import evidence_from_maps
from app.identity.errors import TokenError
from app.identity.principal import Principal, principal_from_claims
from app.policy.evaluate import Verdict, evaluate
from app.policy.index import CompiledPolicies
from app.policy.loader import is_test_file, yaml_files
from app.policy.problem import Problem
from app.policy.request import Unmatchable, policy_input
from app.policy.schema import (
    API_VERSION,
    TEST_KIND,
    as_timestamp,
    plain_data,
    policy_validator,
    schema_errors,
)
from app.reasons import Reason, status_of
from app.yamlsrc import YamlError, parse_documents

DEFAULT_HOST = "api.example.com"
DEFAULT_ISSUER = "https://issuer.test"
DEFAULT_AUDIENCE = "https://api.example.com"


@dataclass(frozen=True, slots=True)
class TestCase:
    suite: str
    name: str
    file: str
    line: int
    request: Mapping[str, Any]
    claims: Mapping[str, Any] | None
    evidence: Mapping[str, Mapping[str, Any]]
    now: float
    expect: Mapping[str, Any]

    @property
    def title(self) -> str:
        return f"{self.suite}/{self.name}"


@dataclass(frozen=True, slots=True)
class Outcome:
    allow: bool
    reason: Reason
    rule: str | None
    grants: tuple[str, ...] = ()

    def fields(self) -> dict[str, Any]:
        return {
            "decision": "allow" if self.allow else "deny",
            "reason": self.reason.value,
            "status": status_of(self.reason),
            "rule": self.rule,
            "grants": list(self.grants),
        }


@dataclass(frozen=True, slots=True)
class CaseResult:
    case: TestCase
    outcome: Outcome
    mismatches: tuple[str, ...] = field(default=())

    @property
    def passed(self) -> bool:
        return not self.mismatches


def read_test_files(root: Path, default_now: float) -> tuple[list[TestCase], list[Problem]]:
    """Every test case under ``root``, or the problems that keep them from running."""
    cases: list[TestCase] = []
    problems: list[Problem] = []
    if not root.is_dir():
        return [], [Problem(str(root), 0, "not a directory")]
    validator = policy_validator()
    for path in (p for p in yaml_files(root) if is_test_file(p)):
        try:
            documents = parse_documents(path.read_text(encoding="utf-8"), str(path))
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(str(path), 0, f"cannot read: {exc}"))
            continue
        except YamlError as exc:
            problems.append(Problem(exc.file, exc.line, exc.message))
            continue
        for doc in documents:
            if doc.data is None:
                continue
            data = plain_data(doc.data)
            if not isinstance(data, Mapping) or data.get("kind") != TEST_KIND:
                message = f"a *_test.yaml file holds only kind: {TEST_KIND} documents"
                problems.append(Problem(doc.file, doc.start_line, message))
                continue
            if data.get("apiVersion") != API_VERSION:
                problems.append(
                    Problem(doc.file, doc.line_of(("apiVersion",)), "unsupported apiVersion")
                )
                continue
            found = schema_errors(validator, doc, data)
            if found:
                problems.extend(found)
                continue
            suite = data["metadata"]["name"]
            suite_now = _moment(
                data["spec"].get("now"),
                default_now,
                doc.file,
                doc.line_of(("spec", "now")),
                problems,
            )
            seen: set[str] = set()
            for position, raw in enumerate(data["spec"]["cases"]):
                base = ("spec", "cases", position)
                line = doc.line_of((*base, "name"))
                if raw["name"] in seen:
                    problems.append(Problem(doc.file, line, f"duplicate case name {raw['name']!r}"))
                    continue
                seen.add(raw["name"])
                case_now = _moment(
                    raw.get("now"), suite_now, doc.file, doc.line_of((*base, "now")), problems
                )
                cases.append(
                    TestCase(
                        suite=suite,
                        name=raw["name"],
                        file=doc.file,
                        line=line,
                        request=raw["request"],
                        claims=raw.get("claims"),
                        evidence=raw.get("evidence", {}),
                        now=case_now,
                        expect=raw["expect"],
                    )
                )
    return cases, problems


def _moment(value: Any, default: float, file: str, line: int, problems: list[Problem]) -> float:
    if value is None:
        return default
    try:
        return as_timestamp(value)
    except ValueError as exc:
        problems.append(Problem(file, line, str(exc)))
        return default


def principal_for_claims(claims: Mapping[str, Any], now: float) -> Principal:
    """The principal a verified token with these claims would give (defaults: iss, aud, iat, exp)."""
    payload = {
        "iss": DEFAULT_ISSUER,
        "aud": DEFAULT_AUDIENCE,
        "iat": int(now),
        "exp": int(now) + 300,
        **claims,
    }
    if not isinstance(payload.get("sub"), str) or not payload["sub"]:
        raise TokenError(Reason.TOKEN_CLAIMS_MISSING, "sub is missing")
    return principal_from_claims(payload, str(payload["iss"]), "groups", "scope")


def decide_case(policies: CompiledPolicies, case: TestCase) -> Outcome:
    """Decide one case the way a check would."""
    request = case.request
    try:
        checked = policy_input(
            str(request.get("method", "GET")).upper(),
            str(request.get("host", DEFAULT_HOST)),
            str(request["path"]),
            MappingProxyType({k.lower(): v for k, v in request.get("headers", {}).items()}),
            device=MappingProxyType(dict(case.evidence.get("device", {}))),
            location=MappingProxyType(dict(case.evidence.get("location", {}))),
            workload=MappingProxyType(dict(case.evidence.get("workload", {}))),
            evidence=evidence_from_maps(
                case.evidence.get("device", {}),
                case.evidence.get("location", {}),
                case.evidence.get("workload", {}),
            ),
        )
    except Unmatchable as exc:
        return Outcome(False, exc.reason, None)
    principal = None
    if case.claims is not None:
        try:
            principal = principal_for_claims(case.claims, case.now)
        except TokenError as exc:
            return Outcome(False, exc.reason, None)
    verdict: Verdict = evaluate(policies, checked, principal, case.now)
    return Outcome(verdict.allow, verdict.reason, verdict.rule_id, verdict.grants)


def run_case(policies: CompiledPolicies, case: TestCase) -> CaseResult:
    outcome = decide_case(policies, case)
    got = outcome.fields()
    mismatches = tuple(
        f"{key}: expected {want!r}, got {got[key]!r}"
        for key, want in case.expect.items()
        if got[key] != want
    )
    return CaseResult(case, outcome, mismatches)


def run_cases(
    policies: CompiledPolicies, cases: list[TestCase], pattern: str | None = None
) -> list[CaseResult]:
    chosen = re.compile(pattern) if pattern else None
    return [
        run_case(policies, case) for case in cases if chosen is None or chosen.search(case.title)
    ]


def now_default() -> float:
    """The CLI's default moment for cases without ``now``: the wall clock, read once."""
    return time.time()
