"""Dry-run policies and candidate directories: evaluated and logged, never enforced."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from app.decision import DryRun
from app.identity.principal import Principal
from app.policy.decide import policy_decision
from app.policy.evaluate import PolicyInput
from app.policy.index import CompiledPolicies
from app.reasons import Reason

CompilePolicies = Callable[..., CompiledPolicies]
MakePrincipal = Callable[..., Principal]

NOW = 1_795_687_200.0

LIVE = """\
apiVersion: ztauthz/v1
kind: Policy
metadata: {name: live}
spec:
  rules:
    - id: read
      effect: allow
      match: {methods: [GET], paths: ["/docs/**"]}
      subject: {groups_any: [staff]}
"""

TIGHTEN = """\
apiVersion: ztauthz/v1
kind: Policy
metadata: {name: tighten}
spec:
  mode: dry-run
  rules:
    - id: drafts-need-editors
      effect: deny
      match: {paths: ["/docs/drafts/**"]}
      when: subject == null || !("editors" in subject.groups)
    - id: public-docs
      effect: allow
      anonymous: true
      match: {methods: [GET], paths: ["/docs/public/**"]}
"""

CANDIDATE = """\
apiVersion: ztauthz/v1
kind: Policy
metadata: {name: next}
spec:
  rules:
    - id: read-v2
      effect: allow
      match: {methods: [GET], paths: ["/docs/**"]}
      subject: {groups_any: [staff, contractors]}
"""


def test_dry_run_rules_never_reach_the_enforced_index(compile_policies: CompilePolicies) -> None:
    policies = compile_policies(LIVE, TIGHTEN)
    assert [r.id for r in policies.enforced] == ["read"]
    assert policies.dry_run_index is not None
    found = policies.index.lookup("GET", "h", "/docs/drafts/a").rules
    assert [r.id for r in found] == ["read"]
    shadow = policies.dry_run_index.lookup("GET", "h", "/docs/drafts/a").rules
    assert [r.id for r in shadow] == ["read", "drafts-need-editors"]
    assert compile_policies(LIVE).dry_run_index is None


@pytest.mark.parametrize(
    ("path", "groups", "live", "dry_run"),
    [
        ("/docs/a", ["staff"], (True, Reason.ALLOWED, "read"), (True, Reason.ALLOWED, "read")),
        (
            "/docs/drafts/a",
            ["staff"],
            (True, Reason.ALLOWED, "read"),
            (False, Reason.DENIED_BY_RULE, "drafts-need-editors"),
        ),
        (
            "/docs/drafts/a",
            ["staff", "editors"],
            (True, Reason.ALLOWED, "read"),
            (True, Reason.ALLOWED, "read"),
        ),
        (
            "/docs/public/x",
            None,
            (False, Reason.TOKEN_MISSING, None),
            (True, Reason.ALLOWED_ANONYMOUS, "public-docs"),
        ),
    ],
)
def test_dry_run_decisions_are_reported_not_enforced(
    compile_policies: CompilePolicies,
    principal: MakePrincipal,
    caplog: pytest.LogCaptureFixture,
    path: str,
    groups: list[str] | None,
    live: tuple[bool, Reason, str | None],
    dry_run: tuple[bool, Reason, str | None],
) -> None:
    policies = compile_policies(LIVE, TIGHTEN)
    who = None if groups is None else principal(groups=groups)
    with caplog.at_level(logging.INFO, logger="ztauthz.policy"):
        decision = policy_decision(policies, None, PolicyInput("GET", "h", path), who, NOW, "d1")
    assert (decision.allow, decision.reason, decision.rule_id) == live
    assert decision.dry_run is not None
    assert (decision.dry_run.allow, decision.dry_run.reason, decision.dry_run.rule_id) == dry_run
    differences = [
        r for r in caplog.records if getattr(r, "event", None) == "policy_dry_run_difference"
    ]
    assert len(differences) == (0 if live == dry_run else 1)
    if differences:
        record = differences[0]
        assert record.__dict__["source"] == "dry-run"
        assert record.__dict__["would_rule"] == dry_run[2]
        assert record.__dict__["decision_id"] == "d1"


def test_a_candidate_directory_is_compared_with_the_live_one(
    compile_policies: CompilePolicies, principal: MakePrincipal, caplog: pytest.LogCaptureFixture
) -> None:
    live, candidate = compile_policies(LIVE), compile_policies(CANDIDATE)
    request = PolicyInput("GET", "h", "/docs/a")
    with caplog.at_level(logging.INFO, logger="ztauthz.policy"):
        same = policy_decision(live, candidate, request, principal(groups=["sales"]), NOW, "d1")
        changed = policy_decision(
            live, candidate, request, principal(groups=["contractors"]), NOW, "d2"
        )
    assert same.candidate == DryRun(False, Reason.NO_MATCHING_RULE, None, None)
    assert (changed.allow, changed.reason) == (False, Reason.NO_MATCHING_RULE)
    assert changed.candidate == DryRun(True, Reason.ALLOWED, "read-v2", "next")
    events = [r.__dict__ for r in caplog.records if getattr(r, "event", None)]
    assert [(e["decision_id"], e["source"], e["policy_version"]) for e in events] == [
        ("d2", "candidate", candidate.version)
    ]
    assert policy_decision(live, None, request, None, NOW, "d3").candidate is None
