"""``sender_constrained:`` on allow rules: the token must be bound (DPoP key, client
certificate or either); otherwise 401 sender_constraint_required. The loader keeps it to
allow rules with a token; explain shows it; the decision memo never answers for it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.identity.principal import Principal
from app.policy.evaluate import PolicyInput, evaluate
from app.policy.explain import explain
from app.policy.index import CompiledPolicies
from app.policy.loader import check_policy_dir
from app.policy.memo import memoizable
from app.reasons import Reason, status_of

CompilePolicies = Callable[..., CompiledPolicies]
MakePrincipal = Callable[..., Principal]
NOW = 1_795_687_200.0

POLICY = """\
apiVersion: ztauthz/v1
kind: Policy
metadata: {name: p}
spec:
  rules:
    - id: payments-need-dpop
      effect: allow
      match: {methods: [POST], paths: ["/payments"]}
      subject: {groups_any: [finance]}
      sender_constrained: dpop
    - id: ledger-needs-mtls
      effect: allow
      match: {methods: [GET], paths: ["/ledger"]}
      sender_constrained: mtls
    - id: partner-issuer-bound
      effect: allow
      match: {methods: [GET], paths: ["/partner/**"]}
      subject: {issuers_any: ["https://partner.example.com"]}
      sender_constrained: any
    - id: reports-for-all
      effect: allow
      match: {methods: [GET], paths: ["/reports"]}
"""

DPOP_CNF = {"cnf": {"jkt": "thumbprint"}}
MTLS_CNF = {"cnf": {"x5t#S256": "digest"}}
BOTH = {"cnf": {"jkt": "thumbprint", "x5t#S256": "digest"}}


@pytest.mark.parametrize(
    ("method", "path", "issuer", "claims", "reason"),
    [
        ("POST", "/payments", None, DPOP_CNF, Reason.ALLOWED),
        ("POST", "/payments", None, BOTH, Reason.ALLOWED),
        ("POST", "/payments", None, {}, Reason.SENDER_CONSTRAINT_REQUIRED),
        ("POST", "/payments", None, MTLS_CNF, Reason.SENDER_CONSTRAINT_REQUIRED),
        ("POST", "/payments", None, {"cnf": "jkt"}, Reason.SENDER_CONSTRAINT_REQUIRED),
        ("GET", "/ledger", None, MTLS_CNF, Reason.ALLOWED),
        ("GET", "/ledger", None, DPOP_CNF, Reason.SENDER_CONSTRAINT_REQUIRED),
        ("GET", "/partner/x", "https://partner.example.com", DPOP_CNF, Reason.ALLOWED),
        ("GET", "/partner/x", "https://partner.example.com", MTLS_CNF, Reason.ALLOWED),
        ("GET", "/partner/x", "https://partner.example.com", {}, Reason.SENDER_CONSTRAINT_REQUIRED),
        # The subject does not hold: the rule is no near miss, whatever the binding.
        ("GET", "/partner/x", None, {}, Reason.NO_MATCHING_RULE),
        ("GET", "/reports", None, {}, Reason.ALLOWED),
    ],
)
def test_sender_constrained_is_enforced_as_written(
    compile_policies: CompilePolicies,
    principal: MakePrincipal,
    method: str,
    path: str,
    issuer: str | None,
    claims: dict[str, Any],
    reason: Reason,
) -> None:
    policies = compile_policies(POLICY)
    who = principal(
        groups=["finance"], claims=claims, **({} if issuer is None else {"issuer": issuer})
    )
    verdict = evaluate(policies, PolicyInput(method, "api.example.com", path), who, NOW)
    assert verdict.reason is reason
    if reason is Reason.SENDER_CONSTRAINT_REQUIRED:
        assert status_of(reason) == 401


def test_without_a_token_the_rule_asks_for_one(compile_policies: CompilePolicies) -> None:
    verdict = evaluate(
        compile_policies(POLICY), PolicyInput("POST", "api.example.com", "/payments"), None, NOW
    )
    assert verdict.reason is Reason.TOKEN_MISSING


def test_explain_shows_the_binding(
    compile_policies: CompilePolicies, principal: MakePrincipal
) -> None:
    policies = compile_policies(POLICY)
    request = PolicyInput("POST", "api.example.com", "/payments")
    explanation = explain(policies, request, principal(groups=["finance"], claims=MTLS_CNF), NOW)
    trace = next(t for t in explanation.traces if t.rule.id == "payments-need-dpop")
    check = next(c for c in trace.checks if c.label == "sender_constrained")
    assert not check.ok
    assert check.note == "token bound by [mtls]; rule accepts [dpop]"


def test_the_memo_never_answers_for_a_sender_constrained_rule(
    compile_policies: CompilePolicies,
) -> None:
    policies = compile_policies(POLICY)
    assert not memoizable(policies, PolicyInput("POST", "api.example.com", "/payments"))
    assert memoizable(policies, PolicyInput("GET", "api.example.com", "/reports"))


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            "{id: d, effect: deny, sender_constrained: dpop}",
            "only allow rules can have sender_constrained",
        ),
        (
            "{id: a, effect: allow, anonymous: true, sender_constrained: dpop}",
            "an anonymous rule needs no token, so it cannot have sender_constrained",
        ),
        ("{id: x, effect: allow, sender_constrained: bearer}", "sender_constrained"),
    ],
)
def test_the_loader_refuses_misplaced_or_unknown_constraints(
    tmp_path: Path, rule: str, message: str
) -> None:
    (tmp_path / "p.yaml").write_text(
        f"apiVersion: ztauthz/v1\nkind: Policy\nmetadata: {{name: p}}\nspec:\n  rules:\n    - {rule}\n"
    )
    problems = [str(p) for p in check_policy_dir(tmp_path)]
    assert any(message in p for p in problems), problems
