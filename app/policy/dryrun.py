"""Dry-run and candidate policies: evaluated beside the enforced ones, never enforced.

- ``mode: dry-run`` policies: the decision that *would* be made if they were enforced (every
  rule of the directory, dry-run ones included).
- A candidate policy directory (``policies_candidate:``): the decision the candidate would make.

Both come back as ``DryRun`` values for the Decision (and so the decision log); every one that
differs from the enforced decision is also logged as an event with both outcomes. A shadow
evaluation that fails counts as ``internal_error`` there; it never touches the enforced decision.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from app.decision import DryRun
from app.identity.principal import Principal
from app.policy.evaluate import PolicyInput, Verdict, evaluate, evaluate_index
from app.policy.index import CompiledPolicies
from app.reasons import Reason

log = logging.getLogger("ztauthz.policy")


@dataclass(frozen=True, slots=True)
class Shadows:
    dry_run: DryRun | None = None
    candidate: DryRun | None = None


NO_SHADOWS = Shadows()


def _as_dry_run(verdict: Verdict) -> DryRun:
    return DryRun(verdict.allow, verdict.reason, verdict.rule_id, verdict.policy)


def differs(live: Verdict, other: DryRun) -> bool:
    return (live.allow, live.reason, live.rule_id) != (other.allow, other.reason, other.rule_id)


def shadow_verdicts(
    live: Verdict,
    policies: CompiledPolicies,
    candidate: CompiledPolicies | None,
    request: PolicyInput,
    principal: Principal | None,
    now: float,
) -> Shadows:
    """What the dry-run policies and the candidate directory would have decided."""
    if policies.dry_run_index is None and candidate is None:
        return NO_SHADOWS
    dry_run: DryRun | None = None
    if policies.dry_run_index is not None:
        try:
            verdict = evaluate_index(
                policies.dry_run_index, policies.grants, request, principal, now
            )
        except Exception:
            log.exception("dry-run evaluation failed")
            verdict = Verdict(False, Reason.INTERNAL_ERROR, None, None)
        dry_run = _as_dry_run(verdict)
    proposed: DryRun | None = None
    if candidate is not None:
        try:
            verdict = evaluate(candidate, request, principal, now)
        except Exception:
            log.exception("candidate evaluation failed")
            verdict = Verdict(False, Reason.INTERNAL_ERROR, None, None)
        proposed = _as_dry_run(verdict)
    return Shadows(dry_run, proposed)


def difference_fields(
    source: str, version: str, live: Verdict, shadow: DryRun
) -> dict[str, object]:
    """The fields of a ``policy_dry_run_difference`` event: both outcomes, no request data."""
    return {
        "source": source,
        "policy_version": version,
        "decision": "allow" if live.allow else "deny",
        "reason": live.reason.value,
        "rule": live.rule_id,
        "would_decision": "allow" if shadow.allow else "deny",
        "would_reason": shadow.reason.value,
        "would_rule": shadow.rule_id,
        "would_policy": shadow.policy,
    }
