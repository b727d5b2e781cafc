"""Semantic lint: allow-all rules, rules that can never apply, expiring grants."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from app.policy.index import CompiledPolicies, split_path
from app.policy.lint import host_covers, lint, pattern_covers

CompilePolicies = Callable[..., CompiledPolicies]

NOW = 1_795_687_200.0  # 2026-11-26T10:00:00Z

HEAD = "apiVersion: ztauthz/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  rules:\n"


@pytest.mark.parametrize(
    ("wide", "narrow", "covers"),
    [
        ("/**", "/a/*/b", True),
        ("/**", "/", True),
        ("/a/**", "/a", True),
        ("/a/**", "/a/b/**", True),
        ("/a/*", "/a/b", True),
        ("/a/*", "/a/*", True),
        ("/a/b", "/a/*", False),
        ("/a/*", "/a/**", False),
        ("/a/*/**", "/a/**", False),
        ("/a", "/a/b", False),
        ("/", "/", True),
        ("/a/**", "/b", False),
    ],
)
def test_pattern_covers(wide: str, narrow: str, covers: bool) -> None:
    assert pattern_covers(split_path(wide), split_path(narrow)) is covers


@pytest.mark.parametrize(
    ("wide", "narrow", "covers"),
    [
        ((), ("a.example.com",), True),
        (("a.example.com",), (), False),
        (("*.example.com",), ("a.example.com", "b.example.com"), True),
        (("*.example.com",), ("example.com",), False),
        (("*.example.com",), ("a.b.example.com",), False),
        (("*.example.com",), ("*.example.com",), True),
        (("a.example.com",), ("*.example.com",), False),
    ],
)
def test_host_covers(wide: tuple[str, ...], narrow: tuple[str, ...], covers: bool) -> None:
    assert host_covers(wide, narrow) is covers


RULES = (
    HEAD
    + """\
    - id: everyone-everywhere
      effect: allow
    - id: anonymous-everywhere
      effect: allow
      anonymous: true
      match: {methods: [GET]}
    - id: admin-area
      effect: allow
      match: {methods: [GET], paths: ["/admin/users/*"]}
      subject: {groups_any: [admins]}
    - id: admin-blocked
      effect: deny
      match: {paths: ["/admin/**"]}
    - id: only-sometimes-blocked
      effect: deny
      match: {paths: ["/reports/**"]}
      subject: {groups_any: [contractors]}
    - id: reports
      effect: allow
      match: {paths: ["/reports/q4"]}
      subject: {groups_any: [staff]}
    - id: never-when
      effect: allow
      match: {paths: [/x]}
      when: 1 > 2
    - id: needs-missing-grant
      effect: allow
      match: {paths: [/y]}
      grant: nobody-has-this
"""
)


def grant(name: str, not_before: str, expires: str, what: str = "grant: other") -> str:
    return (
        f"apiVersion: ztauthz/v1\nkind: Grant\nmetadata: {{name: {name}}}\nspec:\n"
        f"  subject: dana\n  {what}\n  not_before: {not_before}\n  expires: {expires}\n"
        "  approved_by: erin\n  reason: r\n"
    )


def test_lint_findings(compile_policies: CompilePolicies) -> None:
    grants = "---\n".join(
        [
            grant("expired", "2026-11-25T01:00:00Z", "2026-11-25T09:00:00Z", "groups: [a]"),
            grant("soon", "2026-11-26T06:00:00Z", "2026-11-26T13:00:00Z", "groups: [a]"),
            grant("later", "2026-12-01T06:00:00Z", "2026-12-01T13:00:00Z", "groups: [a]"),
            grant("unused", "2026-12-01T06:00:00Z", "2026-12-01T13:00:00Z"),
        ]
    )
    policies = compile_policies(RULES, grants)
    found = [(p.severity, p.line, p.message) for p in lint(policies, NOW)]
    messages = [m for _, _, m in found]
    assert all(severity == "warning" for severity, _, _ in found)
    assert messages == [
        "rule 'everyone-everywhere' allows every authenticated caller on every path with no "
        "condition (add match.paths, subject, when, grant or auth)",
        "rule 'anonymous-everywhere' allows everyone, without a token on every path with no "
        "condition (add match.paths, subject, when, grant or auth)",
        "rule 'admin-area' can never allow: deny rule 'admin-blocked' "
        f"({policies.rules[3].file}:{policies.rules[3].line}) matches every request it matches",
        "rule 'never-when' can never apply: its when condition is always false",
        "rule 'needs-missing-grant' requires grant 'nobody-has-this', which no Grant in the "
        "directory provides: it applies to nobody until one is added",
        "grant 'expired' expired 1 day, 1:00:00 ago; it no longer counts: remove it",
        "grant 'soon' expires in 3:00:00",
        "grant 'unused' gives 'other', which no rule requires",
    ]


def test_clean_policies_have_no_findings(compile_policies: CompilePolicies) -> None:
    policies = compile_policies(
        HEAD
        + "    - id: a\n      effect: allow\n      match: {paths: [/a]}\n"
        + "      subject: {groups_any: [g]}\n"
    )
    assert lint(policies, NOW) == []
