"""Policy evaluation: a pure function of the compiled policies, the request and the principal.

- Default deny.
- A matching deny rule beats every allow (``denied_by_rule``). A deny rule with subject
  conditions applies only to a principal that satisfies them; one without applies to everyone,
  anonymous requests included.
- With a principal, the first matching allow rule whose subject conditions hold (an
  ``anonymous`` rule always holds) allows (``allowed``); otherwise ``no_matching_rule``.
- Without a principal, only ``anonymous`` allow rules can allow (``allowed_anonymous``);
  otherwise ``token_missing``, so the client is asked to authenticate.
- "First" is the rules' global order (file, document, rule), so results are deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.identity.principal import Principal
from app.policy.index import CompiledPolicies
from app.policy.model import ClaimCondition, Rule, Scalar, Subject
from app.reasons import Reason


@dataclass(frozen=True, slots=True)
class PolicyInput:
    """The request as policies see it; every field is already normalized."""

    method: str
    host: str
    path: str


@dataclass(frozen=True, slots=True)
class Verdict:
    allow: bool
    reason: Reason
    rule_id: str | None
    policy: str | None


_MISSING = object()


def claim_value(claims: Mapping[str, Any], name: str) -> Any:
    """The claim called ``name``, or reached by ``name`` as a dotted path into nested objects.

    A top-level claim whose name contains dots (``https://example.com/roles``) wins over the
    dotted-path reading. Returns a private sentinel when absent.
    """
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _same_scalar(actual: Any, expected: Scalar) -> bool:
    # Strict about types: true is not 1 and "1" is not 1; 1 and 1.0 are the same number.
    if isinstance(actual, bool) or isinstance(expected, bool):
        return isinstance(actual, bool) and isinstance(expected, bool) and actual == expected
    if isinstance(actual, int | float) and isinstance(expected, int | float):
        return actual == expected
    return isinstance(actual, str) and isinstance(expected, str) and actual == expected


def claim_holds(condition: ClaimCondition, claims: Mapping[str, Any]) -> bool:
    value = claim_value(claims, condition.name)
    if value is _MISSING:
        return False
    items = value if isinstance(value, list | tuple) else (value,)
    return any(_same_scalar(item, want) for item in items for want in condition.values)


def subject_holds(subject: Subject, principal: Principal) -> bool:
    """Every condition the subject sets holds for the principal."""
    checks = (
        subject.issuers_any is None or principal.issuer in subject.issuers_any,
        subject.subjects_any is None or principal.subject in subject.subjects_any,
        subject.groups_any is None or not subject.groups_any.isdisjoint(principal.groups),
        subject.groups_all is None or subject.groups_all <= principal.groups,
        subject.scopes_any is None or not subject.scopes_any.isdisjoint(principal.scopes),
        subject.scopes_all is None or subject.scopes_all <= principal.scopes,
    )
    return all(checks) and all(claim_holds(c, principal.claims) for c in subject.claims)


def _applies(rule: Rule, principal: Principal | None) -> bool:
    """Does a rule that matched the request apply to this principal (or to no principal)?"""
    if rule.anonymous:
        return True
    if rule.subject is None:
        # An allow rule without subject needs some principal; a deny rule hits everyone.
        return rule.effect == "deny" or principal is not None
    return principal is not None and subject_holds(rule.subject, principal)


def evaluate(
    policies: CompiledPolicies, request: PolicyInput, principal: Principal | None, now: float
) -> Verdict:
    """Decide a normalized request. ``now`` (epoch seconds) is reserved for time conditions."""
    del now  # part of the contract: no decision code reads the clock itself
    candidates = policies.index.lookup(request.method, request.host, request.path).rules
    allowed_by: Rule | None = None
    for rule in candidates:
        if rule.effect == "deny":
            if _applies(rule, principal):
                return Verdict(False, Reason.DENIED_BY_RULE, rule.id, rule.policy)
        elif allowed_by is None and _applies(rule, principal):
            allowed_by = rule
    if allowed_by is not None:
        reason = Reason.ALLOWED if principal is not None else Reason.ALLOWED_ANONYMOUS
        return Verdict(True, reason, allowed_by.id, allowed_by.policy)
    if principal is None:
        return Verdict(False, Reason.TOKEN_MISSING, None, None)
    return Verdict(False, Reason.NO_MATCHING_RULE, None, None)
