from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from app.identity.principal import Principal
from app.policy.evaluate import PolicyInput, Verdict, evaluate
from app.policy.index import CompiledPolicies
from app.reasons import Reason

CompilePolicies = Callable[..., CompiledPolicies]  # fixtures from conftest.py
MakePrincipal = Callable[..., Principal]

NOW = 2_000_000_100.0

MAIN = """\
apiVersion: ztauthz/v1
kind: Policy
metadata: {name: main}
spec:
  rules:
    - id: public
      effect: allow
      anonymous: true
      match: {methods: [GET], paths: ["/public/**"]}
    - id: read-invoices
      effect: allow
      match: {methods: [GET], paths: [/invoices, "/invoices/*"]}
      subject: {groups_any: [finance, auditors], scopes_all: ["invoices:read"]}
    - id: contractors-never-delete
      effect: deny
      match: {methods: [DELETE]}
      subject: {groups_any: [contractors]}
    - id: delete-invoices
      effect: allow
      match: {methods: [DELETE], paths: ["/invoices/*"]}
      subject: {groups_any: [finance]}
    - id: internal-never
      effect: deny
      match: {paths: ["/public/internal/**"]}
    - id: any-authenticated
      effect: allow
      match: {methods: [GET], paths: [/me]}
"""

READER = {"groups": ["finance"], "scopes": ["invoices:read"]}
AUDITOR = {"groups": ["auditors"], "scopes": ["invoices:read", "other"]}
NOBODY: dict[str, Any] = {}
ANON = None

ALLOW = (True, Reason.ALLOWED)
ALLOW_ANON = (True, Reason.ALLOWED_ANONYMOUS)
DENIED = (False, Reason.DENIED_BY_RULE)
NO_RULE = (False, Reason.NO_MATCHING_RULE)
MISSING = (False, Reason.TOKEN_MISSING)


@pytest.mark.parametrize(
    ("method", "path", "who", "outcome", "rule"),
    [
        ("GET", "/public/page", ANON, ALLOW_ANON, "public"),
        ("GET", "/public", ANON, ALLOW_ANON, "public"),  # "**" matches zero segments
        ("GET", "/public/a/b/c", ANON, ALLOW_ANON, "public"),
        ("GET", "/public/page", NOBODY, ALLOW, "public"),  # anonymous rules allow principals
        ("POST", "/public/page", ANON, MISSING, None),
        ("POST", "/public/page", NOBODY, NO_RULE, None),
        ("GET", "/publicity", ANON, MISSING, None),
        ("GET", "/public/internal", ANON, DENIED, "internal-never"),  # deny beats anonymous
        ("GET", "/public/internal/x", READER, DENIED, "internal-never"),
        ("DELETE", "/public/internal/x", ANON, DENIED, "internal-never"),
        ("GET", "/invoices", READER, ALLOW, "read-invoices"),
        ("GET", "/invoices/42", AUDITOR, ALLOW, "read-invoices"),
        ("GET", "/invoices/42/lines", READER, NO_RULE, None),  # "*" is exactly one segment
        ("GET", "/Invoices", READER, NO_RULE, None),  # case-sensitive
        ("GET", "/invoices", {"groups": ["finance"]}, NO_RULE, None),  # scope missing
        ("GET", "/invoices", {"scopes": ["invoices:read"]}, NO_RULE, None),  # group missing
        ("GET", "/invoices", ANON, MISSING, None),
        ("HEAD", "/invoices", READER, NO_RULE, None),  # other method bucket
        ("DELETE", "/invoices/1", {"groups": ["finance"]}, ALLOW, "delete-invoices"),
        (
            "DELETE",
            "/invoices/1",
            {"groups": ["finance", "contractors"]},
            DENIED,
            "contractors-never-delete",
        ),
        ("DELETE", "/anything", {"groups": ["contractors"]}, DENIED, "contractors-never-delete"),
        ("DELETE", "/invoices/1", ANON, MISSING, None),  # subject-bound deny needs a principal
        ("GET", "/me", NOBODY, ALLOW, "any-authenticated"),  # allow without subject
        ("GET", "/me", ANON, MISSING, None),
        ("GET", "/", NOBODY, NO_RULE, None),
    ],
)
def test_semantics(
    compile_policies: CompilePolicies,
    principal: MakePrincipal,
    method: str,
    path: str,
    who: dict[str, Any] | None,
    outcome: tuple[bool, Reason],
    rule: str | None,
) -> None:
    policies = compile_policies(MAIN)
    who_principal = None if who is None else principal(**who)
    verdict = evaluate(policies, PolicyInput(method, "api.example.com", path), who_principal, NOW)
    allow, reason = outcome
    assert verdict == Verdict(allow, reason, rule, "main" if rule else None)


SUBJECTS = """\
apiVersion: ztauthz/v1
kind: Policy
metadata: {name: subjects}
spec:
  rules:
    - {id: issuer, effect: allow, match: {paths: [/issuer]},
       subject: {issuers_any: ["https://a.example.com", "https://b.example.com"]}}
    - {id: sub, effect: allow, match: {paths: [/sub]}, subject: {subjects_any: [alice, bob]}}
    - {id: groups-any, effect: allow, match: {paths: [/groups-any]},
       subject: {groups_any: [a, b]}}
    - {id: groups-all, effect: allow, match: {paths: [/groups-all]},
       subject: {groups_all: [a, b]}}
    - {id: scopes-any, effect: allow, match: {paths: [/scopes-any]},
       subject: {scopes_any: ["x:read", "x:write"]}}
    - {id: scopes-all, effect: allow, match: {paths: [/scopes-all]},
       subject: {scopes_all: ["x:read", "x:write"]}}
    - {id: claim, effect: allow, match: {paths: [/claim]}, subject: {claims: {tenant: acme}}}
    - {id: claim-list, effect: allow, match: {paths: [/claim-list]},
       subject: {claims: {tenant: [acme, globex]}}}
    - {id: claim-dotted, effect: allow, match: {paths: [/claim-dotted]},
       subject: {claims: {realm_access.roles: [admin, ops]}}}
    - {id: claim-dotted-name, effect: allow, match: {paths: [/claim-dotted-name]},
       subject: {claims: {"example.com/role": admin}}}
    - {id: claim-number, effect: allow, match: {paths: [/claim-number]},
       subject: {claims: {level: 2}}}
    - {id: claim-bool, effect: allow, match: {paths: [/claim-bool]},
       subject: {claims: {email_verified: true}}}
    - {id: claim-two, effect: allow, match: {paths: [/claim-two]},
       subject: {claims: {tenant: acme, email_verified: true}}}
    - {id: combined, effect: allow, match: {paths: [/combined]},
       subject: {issuers_any: ["https://a.example.com"], groups_any: [a], scopes_all: [s]}}
"""

A_ISS = "https://a.example.com"


@pytest.mark.parametrize(
    ("path", "who", "allowed"),
    [
        ("/issuer", {"issuer": A_ISS}, True),
        ("/issuer", {"issuer": "https://b.example.com"}, True),
        ("/issuer", {"issuer": "https://c.example.com"}, False),
        ("/sub", {"subject": "bob"}, True),
        ("/sub", {"subject": "mallory"}, False),
        ("/sub", {"subject": "Alice"}, False),
        ("/groups-any", {"groups": ["b", "z"]}, True),
        ("/groups-any", {"groups": ["z"]}, False),
        ("/groups-any", {"groups": []}, False),
        ("/groups-all", {"groups": ["a", "b", "c"]}, True),
        ("/groups-all", {"groups": ["a"]}, False),
        ("/scopes-any", {"scopes": ["x:write"]}, True),
        ("/scopes-any", {"scopes": ["x:delete"]}, False),
        ("/scopes-all", {"scopes": ["x:read", "x:write"]}, True),
        ("/scopes-all", {"scopes": ["x:read"]}, False),
        ("/scopes-all", {"groups": ["x:read", "x:write"]}, False),  # groups are not scopes
        ("/claim", {"claims": {"tenant": "acme"}}, True),
        ("/claim", {"claims": {"tenant": "ACME"}}, False),
        ("/claim", {"claims": {}}, False),
        ("/claim", {"claims": {"tenant": ["x", "acme"]}}, True),  # list claim contains it
        ("/claim", {"claims": {"tenant": ["x"]}}, False),
        ("/claim", {"claims": {"tenant": {"acme": True}}}, False),
        ("/claim-list", {"claims": {"tenant": "globex"}}, True),
        ("/claim-list", {"claims": {"tenant": ["initech", "globex"]}}, True),
        ("/claim-list", {"claims": {"tenant": "initech"}}, False),
        ("/claim-dotted", {"claims": {"realm_access": {"roles": ["user", "ops"]}}}, True),
        ("/claim-dotted", {"claims": {"realm_access": {"roles": "admin"}}}, True),
        ("/claim-dotted", {"claims": {"realm_access": {"roles": ["user"]}}}, False),
        ("/claim-dotted", {"claims": {"realm_access": "admin"}}, False),
        ("/claim-dotted", {"claims": {"realm_access.roles": "admin"}}, True),
        ("/claim-dotted", {"claims": {}}, False),
        ("/claim-dotted-name", {"claims": {"example.com/role": "admin"}}, True),
        ("/claim-dotted-name", {"claims": {"example": {"com/role": "admin"}}}, True),
        ("/claim-dotted-name", {"claims": {"example.com/role": "user"}}, False),
        ("/claim-number", {"claims": {"level": 2}}, True),
        ("/claim-number", {"claims": {"level": 2.0}}, True),
        ("/claim-number", {"claims": {"level": "2"}}, False),
        ("/claim-number", {"claims": {"level": 3}}, False),
        ("/claim-bool", {"claims": {"email_verified": True}}, True),
        ("/claim-bool", {"claims": {"email_verified": 1}}, False),
        ("/claim-bool", {"claims": {"email_verified": "true"}}, False),
        ("/claim-two", {"claims": {"tenant": "acme", "email_verified": True}}, True),
        ("/claim-two", {"claims": {"tenant": "acme", "email_verified": False}}, False),
        ("/combined", {"issuer": A_ISS, "groups": ["a"], "scopes": ["s"]}, True),
        ("/combined", {"issuer": A_ISS, "groups": ["a"]}, False),
        ("/combined", {"issuer": A_ISS, "scopes": ["s"]}, False),
        ("/combined", {"groups": ["a"], "scopes": ["s"]}, False),
    ],
)
def test_subject_conditions(
    compile_policies: CompilePolicies,
    principal: MakePrincipal,
    path: str,
    who: dict[str, Any],
    allowed: bool,
) -> None:
    policies = compile_policies(SUBJECTS)
    verdict = evaluate(policies, PolicyInput("GET", "h.example.com", path), principal(**who), NOW)
    expected_rule = path.removeprefix("/") if allowed else None
    assert (verdict.allow, verdict.rule_id) == (allowed, expected_rule)
    assert verdict.reason == (Reason.ALLOWED if allowed else Reason.NO_MATCHING_RULE)


HOSTS = """\
apiVersion: ztauthz/v1
kind: Policy
metadata: {name: exact}
spec:
  hosts: [api.example.com, Other.Example.com]
  rules:
    - {id: exact, effect: allow, anonymous: true}
---
apiVersion: ztauthz/v1
kind: Policy
metadata: {name: wildcard}
spec:
  hosts: ["*.apps.example.com"]
  rules:
    - {id: wildcard, effect: allow, anonymous: true}
---
apiVersion: ztauthz/v1
kind: Policy
metadata: {name: anywhere}
spec:
  rules:
    - {id: anywhere, effect: allow, anonymous: true, match: {paths: [/anywhere]}}
"""


@pytest.mark.parametrize(
    ("host", "path", "rule"),
    [
        ("api.example.com", "/x", "exact"),
        ("other.example.com", "/x", "exact"),  # policy hosts are lower-cased at load
        ("api.example.com", "/anywhere", "exact"),  # first in order wins
        ("x.api.example.com", "/x", None),
        ("example.com", "/x", None),
        ("a.apps.example.com", "/x", "wildcard"),
        ("apps.example.com", "/x", None),  # a wildcard needs one label
        ("a.b.apps.example.com", "/x", None),  # ...and exactly one
        ("a.apps.example.org", "/x", None),
        ("unknown.example.net", "/anywhere", "anywhere"),
        ("a.apps.example.com", "/anywhere", "wildcard"),
        ("localhost", "/x", None),
    ],
)
def test_hosts(compile_policies: CompilePolicies, host: str, path: str, rule: str | None) -> None:
    verdict = evaluate(compile_policies(HOSTS), PolicyInput("GET", host, path), None, NOW)
    assert verdict.rule_id == rule
    assert verdict.policy == rule  # each policy here is named like its one rule
    assert verdict.reason == (Reason.ALLOWED_ANONYMOUS if rule else Reason.TOKEN_MISSING)


PATHS = """\
apiVersion: ztauthz/v1
kind: Policy
metadata: {name: paths}
spec:
  rules:
    - {id: root, effect: allow, anonymous: true, match: {paths: [/]}}
    - {id: one-star, effect: allow, anonymous: true, match: {paths: ["/*"]}}
    - {id: middle-star, effect: allow, anonymous: true, match: {paths: ["/a/*/c"]}}
    - {id: tail, effect: allow, anonymous: true, match: {paths: ["/b/x/**"]}}
    - {id: star-tail, effect: allow, anonymous: true, match: {paths: ["/c/*/**"]}}
    - {id: literal, effect: allow, anonymous: true, match: {paths: [/d/e]}}
    - {id: unicode, effect: allow, anonymous: true, match: {paths: [/café/*]}}
    - {id: get-post, effect: allow, anonymous: true,
       match: {methods: [GET, POST], paths: ["/m/**"]}}
    - {id: any-method, effect: allow, anonymous: true, match: {paths: ["/m/any"]}}
"""


@pytest.mark.parametrize(
    ("method", "path", "rule"),
    [
        ("GET", "/", "root"),
        ("GET", "/x", "one-star"),
        ("GET", "/x/y", None),
        ("GET", "/a/b/c", "middle-star"),
        ("GET", "/a/b", None),
        ("GET", "/a/b/c/d", None),
        ("GET", "/b", "one-star"),
        ("GET", "/b/x", "tail"),  # "**" matches zero segments
        ("GET", "/b/x/1/2/3", "tail"),
        ("GET", "/b/y/1", None),
        ("GET", "/c", "one-star"),  # "/c/*/**" needs one segment after /c
        ("GET", "/c/1", "star-tail"),
        ("GET", "/c/1/2/3", "star-tail"),
        ("GET", "/d/e", "literal"),
        ("GET", "/d/e/f", None),
        ("GET", "/d", "one-star"),
        ("GET", "/café/x", "unicode"),
        ("GET", "/m/x", "get-post"),
        ("POST", "/m/x", "get-post"),
        ("PUT", "/m/x", None),
        ("PUT", "/m/any", "any-method"),
        ("GET", "/m/any", "get-post"),  # both match: the first in order is named
        ("DELETE", "/", "root"),
    ],
)
def test_paths_and_methods(
    compile_policies: CompilePolicies, method: str, path: str, rule: str | None
) -> None:
    verdict = evaluate(compile_policies(PATHS), PolicyInput(method, "h", path), None, NOW)
    assert verdict.rule_id == rule
    assert verdict.allow is (rule is not None)


ORDER_A = """\
apiVersion: ztauthz/v1
kind: Policy
metadata: {name: first}
spec:
  rules:
    - {id: a-broad, effect: allow, match: {paths: ["/**"]}, subject: {groups_any: [g]}}
    - {id: a-narrow, effect: allow, match: {paths: [/x]}}
"""
ORDER_B = """\
apiVersion: ztauthz/v1
kind: Policy
metadata: {name: second}
spec:
  rules:
    - {id: b-anon, effect: allow, anonymous: true, match: {paths: [/x]}}
    - {id: b-deny-one, effect: deny, match: {paths: [/x/deny]}}
    - {id: b-deny-two, effect: deny, match: {paths: ["/x/*"]}}
"""


@pytest.mark.parametrize(
    ("path", "groups", "rule", "policy", "reason"),
    [
        ("/x", ["g"], "a-broad", "first", Reason.ALLOWED),
        ("/x", [], "a-narrow", "first", Reason.ALLOWED),
        ("/y", [], None, None, Reason.NO_MATCHING_RULE),
        ("/x/deny", ["g"], "b-deny-one", "second", Reason.DENIED_BY_RULE),  # deny after allow
        ("/x/other", ["g"], "b-deny-two", "second", Reason.DENIED_BY_RULE),
    ],
)
def test_order_across_files_is_deterministic(
    compile_policies: CompilePolicies,
    principal: MakePrincipal,
    path: str,
    groups: list[str],
    rule: str | None,
    policy: str | None,
    reason: Reason,
) -> None:
    policies = compile_policies(ORDER_A, ORDER_B)
    for _ in range(3):
        verdict = evaluate(policies, PolicyInput("GET", "h", path), principal(groups=groups), NOW)
        assert (verdict.rule_id, verdict.policy, verdict.reason) == (rule, policy, reason)


def test_anonymous_request_named_by_anonymous_rule(compile_policies: CompilePolicies) -> None:
    policies = compile_policies(ORDER_A, ORDER_B)
    verdict = evaluate(policies, PolicyInput("GET", "h", "/x"), None, NOW)
    assert verdict == Verdict(True, Reason.ALLOWED_ANONYMOUS, "b-anon", "second")


def test_evaluate_does_not_depend_on_now(
    compile_policies: CompilePolicies, principal: MakePrincipal
) -> None:
    policies = compile_policies(MAIN)
    who: Principal = principal(**READER)
    request = PolicyInput("GET", "h", "/invoices")
    assert evaluate(policies, request, who, 0.0) == evaluate(policies, request, who, NOW)
