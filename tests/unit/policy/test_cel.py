"""CEL conditions: compiled at load (errors at file:line), evaluated per request, errors deny."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from app.identity.principal import Principal
from app.policy.cel import CelCompileError, CelEvalError, build_context, compile_condition
from app.policy.evaluate import PolicyInput, evaluate
from app.policy.index import CompiledPolicies
from app.policy.loader import check_policy_dir
from app.reasons import Reason

CompilePolicies = Callable[..., CompiledPolicies]
MakePrincipal = Callable[..., Principal]

NOW = 1_795_687_200.0  # 2026-11-26T10:00:00Z, a Thursday


def policy(*rules: str) -> str:
    """A policy document holding ``rules`` (each a YAML mapping, first line ``id: ...``)."""
    out = "apiVersion: ztauthz/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  rules:\n"
    for text in rules:
        first, *rest = textwrap.dedent(text).strip().splitlines()
        out += f"    - {first}\n" + "".join(f"      {line}\n" for line in rest)
    return out


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("request.method == ", "invalid CEL at 1:19"),
        ("1 +* 2", "invalid CEL at 1:4"),
        ("requests.method == 'GET'", "unknown variable(s) requests"),
        ("request.method == 'GET' && tenant == 'a'", "unknown variable(s) tenant"),
        ("1 + 1", "must be a boolean, not int"),
        ("1 / 0 == 1", "the expression fails"),
    ],
)
def test_compile_errors(source: str, message: str) -> None:
    with pytest.raises(CelCompileError) as caught:
        compile_condition(source)
    assert message in caught.value.message


@pytest.mark.parametrize(
    "source",
    [
        "subject.groups.exists(g, g.startsWith('fin'))",
        "subject.groups.all(g, g != 'contractors')",
        "[1, 2].map(x, x * 2).size() == 2",
        "request.headers.exists(name, name == 'x-a') && time.now > timestamp('2026-01-01T00:00:00Z')",
        "has(device.managed) && device.managed",
        "location.country in ['DE', 'FR'] && workload.namespace == 'billing'",
    ],
)
def test_macro_bound_names_and_every_documented_variable_compile(source: str) -> None:
    assert compile_condition(source).source == source


@pytest.mark.parametrize(("source", "value"), [("true", True), ("1 > 2", False)])
def test_constant_expressions_are_folded(source: str, value: bool) -> None:
    assert compile_condition(source).constant is value


def test_cel_errors_name_file_and_line(tmp_path: Path) -> None:
    text = policy(
        "id: ok\neffect: allow\nwhen: request.method == 'GET'",
        "id: bad-syntax\neffect: allow\nwhen: request.method ==",
        "id: bad-name\neffect: allow\nwhen: |\n  request.method == 'GET' &&\n    tenant == 'acme'",
    )
    path = tmp_path / "p.yaml"
    path.write_text(text)
    problems = [str(p) for p in check_policy_dir(tmp_path)]
    lines = text.splitlines()
    syntax_line = next(
        i
        for i, line in enumerate(lines, 1)
        if "when: request.method ==" in line and "'GET'" not in line
    )
    name_line = next(i for i, line in enumerate(lines, 1) if "tenant == 'acme'" in line)
    assert problems == [
        f"{path}:{syntax_line}: spec.rules[1].when: invalid CEL at 1:18: Syntax error: "
        "mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', "
        "'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}",
        f"{path}:{name_line}: spec.rules[2].when: unknown variable(s) tenant; available: "
        "device, location, request, signals, subject, time, workload",
    ]


CEL_POLICY = policy(
    """
    id: tenant-read
    effect: allow
    match: {methods: [GET], paths: ["/tenants/*/docs/**"]}
    when: request.path.startsWith("/tenants/" + subject.claims.tenant + "/")
    """,
    """
    id: header-gated
    effect: allow
    match: {methods: [POST], paths: [/jobs]}
    when: '"x-approved" in request.headers && request.headers["x-approved"] == "yes"'
    """,
    """
    id: no-night-writes
    effect: deny
    match: {methods: [PUT]}
    when: time.now.getHours() < 6
    """,
    """
    id: put-anything
    effect: allow
    match: {methods: [PUT]}
    """,
    """
    id: managed-devices
    effect: allow
    match: {methods: [GET], paths: [/device-only]}
    when: device.managed == true
    """,
    """
    id: secrets-are-hidden
    effect: allow
    match: {methods: [GET], paths: [/peek]}
    when: '"authorization" in request.headers || "cookie" in request.headers'
    """,
    """
    id: anonymous-when
    effect: allow
    anonymous: true
    match: {methods: [GET], paths: [/open]}
    when: subject == null && request.host == "api.example.com"
    """,
)

TENANT = {"claims": {"tenant": "acme"}}
EARLY = 1_795_658_400.0  # 2026-11-26T02:00:00Z


@pytest.mark.parametrize(
    ("method", "path", "headers", "who", "now", "device", "outcome", "rule"),
    [
        ("GET", "/tenants/acme/docs/a", {}, TENANT, NOW, {}, (True, Reason.ALLOWED), "tenant-read"),
        (
            "GET",
            "/tenants/globex/docs/a",
            {},
            TENANT,
            NOW,
            {},
            (False, Reason.CONDITION_NOT_MET),
            "tenant-read",
        ),
        # A missing claim is an evaluation error: the allow rule does not allow, the reason says why.
        (
            "GET",
            "/tenants/acme/docs/a",
            {},
            {},
            NOW,
            {},
            (False, Reason.CONDITION_ERROR),
            "tenant-read",
        ),
        (
            "POST",
            "/jobs",
            {"x-approved": "yes"},
            {},
            NOW,
            {},
            (True, Reason.ALLOWED),
            "header-gated",
        ),
        (
            "POST",
            "/jobs",
            {"x-approved": "no"},
            {},
            NOW,
            {},
            (False, Reason.CONDITION_NOT_MET),
            "header-gated",
        ),
        ("POST", "/jobs", {}, {}, NOW, {}, (False, Reason.CONDITION_NOT_MET), "header-gated"),
        ("PUT", "/x", {}, {}, NOW, {}, (True, Reason.ALLOWED), "put-anything"),
        ("PUT", "/x", {}, {}, EARLY, {}, (False, Reason.DENIED_BY_RULE), "no-night-writes"),
        (
            "GET",
            "/device-only",
            {},
            {},
            NOW,
            {"managed": True},
            (True, Reason.ALLOWED),
            "managed-devices",
        ),
        (
            "GET",
            "/device-only",
            {},
            {},
            NOW,
            {"managed": False},
            (False, Reason.CONDITION_NOT_MET),
            "managed-devices",
        ),
        (
            "GET",
            "/device-only",
            {},
            {},
            NOW,
            {},
            (False, Reason.CONDITION_ERROR),
            "managed-devices",
        ),
        (
            "GET",
            "/peek",
            {"authorization": "Bearer x", "cookie": "s=1"},
            {},
            NOW,
            {},
            (False, Reason.CONDITION_NOT_MET),
            "secrets-are-hidden",
        ),
        ("GET", "/open", {}, None, NOW, {}, (True, Reason.ALLOWED_ANONYMOUS), "anonymous-when"),
        ("GET", "/open", {}, {}, NOW, {}, (False, Reason.CONDITION_NOT_MET), "anonymous-when"),
    ],
)
def test_cel_conditions_decide_as_written(
    compile_policies: CompilePolicies,
    principal: MakePrincipal,
    method: str,
    path: str,
    headers: dict[str, str],
    who: dict[str, Any] | None,
    now: float,
    device: dict[str, Any],
    outcome: tuple[bool, Reason],
    rule: str,
) -> None:
    policies = compile_policies(CEL_POLICY)
    request = PolicyInput(
        method, "api.example.com", path, MappingProxyType(headers), MappingProxyType(device)
    )
    verdict = evaluate(policies, request, None if who is None else principal(**who), now)
    assert (verdict.allow, verdict.reason) == outcome
    assert verdict.rule_id == rule


def test_a_deny_rule_whose_condition_fails_to_evaluate_denies(
    compile_policies: CompilePolicies, principal: MakePrincipal
) -> None:
    policies = compile_policies(
        policy(
            "id: allow-all-reads\neffect: allow\nmatch: {methods: [GET]}\nsubject: {groups_any: [staff]}",
            "id: block-risky\neffect: deny\nwhen: device.risk > 50",
        )
    )
    staff = principal(groups=["staff"])
    verdict = evaluate(policies, PolicyInput("GET", "h", "/a"), staff, NOW)
    assert (verdict.allow, verdict.reason, verdict.rule_id) == (
        False,
        Reason.CONDITION_ERROR,
        "block-risky",
    )
    assert verdict.detail is not None and "risk" in verdict.detail
    safe = PolicyInput("GET", "h", "/a", device=MappingProxyType({"risk": 10}))
    assert evaluate(policies, safe, staff, NOW).allow
    risky = PolicyInput("GET", "h", "/a", device=MappingProxyType({"risk": 90}))
    assert evaluate(policies, risky, staff, NOW).reason is Reason.DENIED_BY_RULE


def test_an_erroring_allow_rule_does_not_stop_a_later_allow(
    compile_policies: CompilePolicies, principal: MakePrincipal
) -> None:
    policies = compile_policies(
        policy(
            "id: needs-tenant\neffect: allow\nwhen: subject.claims.tenant == 'acme'",
            "id: staff\neffect: allow\nsubject: {groups_any: [staff]}",
        )
    )
    verdict = evaluate(policies, PolicyInput("GET", "h", "/a"), principal(groups=["staff"]), NOW)
    assert (verdict.allow, verdict.rule_id) == (True, "staff")


def test_large_integer_claims_still_evaluate(
    compile_policies: CompilePolicies, principal: MakePrincipal
) -> None:
    policies = compile_policies(policy("id: r\neffect: allow\nwhen: subject.claims.n > 1"))
    verdict = evaluate(policies, PolicyInput("GET", "h", "/a"), principal(claims={"n": 2**70}), NOW)
    assert verdict.reason is Reason.ALLOWED


def test_values_cel_cannot_represent_are_an_evaluation_error() -> None:
    with pytest.raises(CelEvalError, match="cannot convert"):
        build_context(
            method="GET",
            host="h",
            path="/",
            headers={},
            subject={"claims": {"odd": object()}},
            evidence={},
            now=NOW,
        )
