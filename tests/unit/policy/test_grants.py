"""Just-in-time grants: who, what, when; validated at load; counted only inside their window."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.identity.principal import Principal
from app.policy.compile import LoadOptions
from app.policy.evaluate import PolicyInput, evaluate
from app.policy.index import CompiledPolicies
from app.policy.loader import check_policy_dir
from app.reasons import Reason

CompilePolicies = Callable[..., CompiledPolicies]
MakePrincipal = Callable[..., Principal]

START = 1_795_683_600.0  # 2026-11-26T09:00:00Z
END = START + 4 * 3600  # 13:00Z

RULES = """\
apiVersion: ztauthz/v1
kind: Policy
metadata: {name: p}
spec:
  rules:
    - id: db-restore
      effect: allow
      match: {methods: [POST], paths: [/db/restore]}
      grant: break-glass-db
    - id: ledger
      effect: allow
      match: {methods: [GET], paths: ["/ledger/**"]}
      subject: {groups_any: [auditors]}
    - id: billing-write
      effect: allow
      match: {methods: [PUT], paths: ["/billing/**"]}
      subject: {scopes_all: ["billing:write"]}
"""


def grant(name: str, **spec: Any) -> str:
    body = {
        "not_before": "2026-11-26T09:00:00Z",
        "expires": "2026-11-26T13:00:00Z",
        "approved_by": "erin",
        "reason": "incident",
        **spec,
    }
    lines = "".join(f"  {k}: {v}\n" for k, v in body.items())
    return f"apiVersion: ztauthz/v1\nkind: Grant\nmetadata: {{name: {name}}}\nspec:\n{lines}"


GRANTS = "---\n".join(
    [
        grant("dana-db", subject="dana", grant="break-glass-db", ticket="INC-1"),
        grant("oncall-audit", group="oncall", groups="[auditors]"),
        grant(
            "pinned", subject="pat", issuer="https://idp.example.com", scopes='["billing:write"]'
        ),
        grant(
            "other-issuer",
            subject="quinn",
            issuer="https://elsewhere.example",
            scopes='["billing:write"]',
        ),
    ]
)


@pytest.mark.parametrize(
    ("now", "allow", "reason"),
    [
        (START - 1, False, Reason.GRANT_INACTIVE),
        (START, True, Reason.ALLOWED),  # not_before counts
        (END - 1, True, Reason.ALLOWED),
        (END, False, Reason.GRANT_INACTIVE),  # expires does not
        (END + 86400, False, Reason.GRANT_INACTIVE),
    ],
)
def test_a_grant_counts_only_inside_its_window(
    compile_policies: CompilePolicies,
    principal: MakePrincipal,
    now: float,
    allow: bool,
    reason: Reason,
) -> None:
    policies = compile_policies(RULES, GRANTS)
    verdict = evaluate(
        policies, PolicyInput("POST", "h", "/db/restore"), principal(subject="dana"), now
    )
    assert (verdict.allow, verdict.reason) == (allow, reason)
    assert verdict.grants == (("dana-db",) if allow else ())


@pytest.mark.parametrize(
    ("method", "path", "who", "allow", "reason", "grants"),
    [
        ("POST", "/db/restore", {"subject": "erin"}, False, Reason.GRANT_REQUIRED, ()),
        (
            "GET",
            "/ledger/q4",
            {"subject": "olga", "groups": ["oncall"]},
            True,
            Reason.ALLOWED,
            ("oncall-audit",),
        ),
        # Already an auditor: the decision does not rely on the grant, so it does not name it.
        (
            "GET",
            "/ledger/q4",
            {"subject": "olga", "groups": ["oncall", "auditors"]},
            True,
            Reason.ALLOWED,
            (),
        ),
        (
            "GET",
            "/ledger/q4",
            {"subject": "olga", "groups": ["sales"]},
            False,
            Reason.NO_MATCHING_RULE,
            (),
        ),
        ("PUT", "/billing/x", {"subject": "pat"}, True, Reason.ALLOWED, ("pinned",)),
        (
            "PUT",
            "/billing/x",
            {"subject": "pat", "issuer": "https://other.example"},
            False,
            Reason.NO_MATCHING_RULE,
            (),
        ),
        ("PUT", "/billing/x", {"subject": "quinn"}, False, Reason.NO_MATCHING_RULE, ()),
        # A grant for a subject does not match a group of the same name, and vice versa.
        ("GET", "/ledger/q4", {"subject": "oncall"}, False, Reason.NO_MATCHING_RULE, ()),
    ],
)
def test_who_and_what_a_grant_gives(
    compile_policies: CompilePolicies,
    principal: MakePrincipal,
    method: str,
    path: str,
    who: dict[str, Any],
    allow: bool,
    reason: Reason,
    grants: tuple[str, ...],
) -> None:
    policies = compile_policies(RULES, GRANTS)
    verdict = evaluate(policies, PolicyInput(method, "h", path), principal(**who), START + 60)
    assert (verdict.allow, verdict.reason, verdict.grants) == (allow, reason, grants)


def test_granted_groups_expire_with_the_grant(
    compile_policies: CompilePolicies, principal: MakePrincipal
) -> None:
    policies = compile_policies(RULES, GRANTS)
    olga = principal(subject="olga", groups=["oncall"])
    request = PolicyInput("GET", "h", "/ledger/q4")
    assert evaluate(policies, request, olga, END - 1).allow
    assert evaluate(policies, request, olga, END).reason is Reason.NO_MATCHING_RULE


def _problems(tmp_path: Path, text: str, options: LoadOptions | None = None) -> list[str]:
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "grant.yaml").write_text(text)
    return [str(p) for p in check_policy_dir(tmp_path, options)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            grant("g", subject="dana", approved_by="dana", grant="x"),
            "approved_by: a grant cannot be approved by its grantee",
        ),
        (
            grant("g", subject="dana", expires="2026-11-26T09:00:00Z", grant="x"),
            "expires: must be later than not_before",
        ),
        (
            grant("g", subject="dana", expires="2026-11-26T18:00:01Z", grant="x"),
            "expires: the grant lasts 9:00:01, longer than the allowed maximum of 8:00:00",
        ),
        (
            grant("g", subject="dana", not_before="2026-11-26T09:00:00", grant="x"),
            "not_before: '2026-11-26T09:00:00' needs a zone offset",
        ),
        (
            grant("g", subject="dana", not_before="'next tuesday'", grant="x"),
            "is not a date and time",
        ),
        (
            grant("g", subject="dana", group="ops", grant="x"),
            "give exactly one of subject or group",
        ),
        (grant("g", grant="x"), "give exactly one of subject or group"),
        (grant("g", subject="dana"), "give at least one of grant, groups or scopes"),
        (
            grant("g", subject="dana", grant="x").replace("  reason: incident\n", ""),
            "missing required key 'reason'",
        ),
        (
            grant("g", subject="dana", grant="x") + "---\n" + grant("g", subject="eve", grant="x"),
            "duplicate grant name 'g'",
        ),
    ],
)
def test_invalid_grants_are_load_errors_at_file_and_line(
    tmp_path: Path, text: str, message: str
) -> None:
    problems = _problems(tmp_path, text)
    assert len(problems) == 1 and message in problems[0], problems
    assert problems[0].startswith(f"{tmp_path / 'grant.yaml'}:")


def test_the_maximum_duration_comes_from_the_options(tmp_path: Path) -> None:
    text = grant("g", subject="dana", grant="x")  # four hours
    assert _problems(tmp_path, text, LoadOptions(grant_max_duration=4 * 3600)) == []
    problems = _problems(tmp_path, text, LoadOptions(grant_max_duration=3600))
    assert "longer than the allowed maximum of 1:00:00" in problems[0]


@pytest.mark.parametrize(
    "rule",
    [
        "effect: deny\n      grant: x",
        "effect: allow\n      anonymous: true\n      grant: x",
    ],
)
def test_only_authenticated_allow_rules_require_grants(tmp_path: Path, rule: str) -> None:
    (tmp_path / "p.yaml").write_text(
        "apiVersion: ztauthz/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  rules:\n"
        f"    - id: r\n      {rule}\n"
    )
    problems = [str(p) for p in check_policy_dir(tmp_path)]
    assert len(problems) == 1 and "grant" in problems[0], problems


def test_quoted_and_unquoted_timestamps_are_the_same_moment(
    compile_policies: CompilePolicies,
) -> None:
    unquoted = grant("g", subject="dana", grant="break-glass-db")
    quoted = grant(
        "g",
        subject="dana",
        grant="break-glass-db",
        not_before="'2026-11-26T10:00:00+01:00'",
        expires='"2026-11-26T13:00:00Z"',
    )
    assert "not_before: 2026-11-26T09:00:00Z" in unquoted
    for text in (unquoted, quoted):
        found = compile_policies(RULES, text).grants.grants[0]
        assert (found.not_before, found.expires) == (START, END)
