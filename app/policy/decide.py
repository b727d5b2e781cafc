"""From a normalized request and principal to the Decision: enforced verdict plus shadows.

The pipeline calls ``policy_decision`` once identity is settled. It evaluates the enforced
rules, then (only if configured) the dry-run policies and the candidate directory, and logs
every shadow decision that differs from the enforced one as a ``policy_dry_run_difference``
event. CEL evaluation errors are logged here too (with the rule, never request data).
"""

from __future__ import annotations

import logging

from app.decision import Decision
from app.evidence.model import Evidence
from app.identity.principal import Principal
from app.policy.dryrun import difference_fields, differs, shadow_verdicts
from app.policy.evaluate import PolicyInput, evaluate
from app.policy.index import CompiledPolicies
from app.reasons import Reason

log = logging.getLogger("ztauthz.policy")


def policy_decision(
    policies: CompiledPolicies,
    candidate: CompiledPolicies | None,
    request: PolicyInput,
    principal: Principal | None,
    now: float,
    decision_id: str,
    evidence: Evidence | None = None,
) -> Decision:
    verdict = evaluate(policies, request, principal, now)
    if verdict.reason is Reason.CONDITION_ERROR:
        log.warning(
            "CEL condition failed; denying",
            extra={
                "event": "policy_condition_error",
                "decision_id": decision_id,
                "rule": verdict.rule_id,
                "policy": verdict.policy,
                "detail": verdict.detail,
            },
        )
    shadows = shadow_verdicts(verdict, policies, candidate, request, principal, now)
    for source, shadow, version in (
        ("dry-run", shadows.dry_run, policies.version),
        ("candidate", shadows.candidate, candidate.version if candidate else ""),
    ):
        if shadow is not None and differs(verdict, shadow):
            fields = difference_fields(source, version, verdict, shadow)
            log.info(
                "%s policies would decide differently",
                source,
                extra={"event": "policy_dry_run_difference", "decision_id": decision_id, **fields},
            )
    return Decision(
        allow=verdict.allow,
        reason=verdict.reason,
        decision_id=decision_id,
        policy_version=policies.version,
        rule_id=verdict.rule_id,
        policy=verdict.policy,
        principal=principal,
        grants=verdict.grants,
        dry_run=shadows.dry_run,
        candidate=shadows.candidate,
        step_up=verdict.step_up,
        evidence=evidence,
    )
