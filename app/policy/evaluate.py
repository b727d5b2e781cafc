"""Policy evaluation: a pure function of the compiled policies, the request, the principal and
the moment (``now``, epoch seconds, passed in; nothing here reads the clock).

- Default deny.
- Only the rules whose host, method and path match are looked at (from the index), in their
  global order (file, document, rule), so results are deterministic.
- A rule *applies* when all of its conditions hold, checked in this order: subject (with the
  groups and scopes of active grants added), ``time_window``, ``grant``, evidence (``device``,
  ``location``, ``workload``; see app/policy/posture.py), ``when`` (CEL),
  ``sender_constrained`` (the token is bound to a DPoP key or a client certificate; the
  binding itself was enforced before policies), ``auth`` (step-up). ``anonymous`` allow rules
  have no subject, grant, sender_constrained or auth condition.
- A deny rule that applies beats every allow (``denied_by_rule``). A deny rule without subject
  applies to everyone, anonymous requests included. A deny rule whose ``when`` fails to
  evaluate denies too (``condition_error``), and so does one whose evidence is unknown while
  its other conditions hold (with that evidence reason, e.g. ``country_unknown``): errors and
  unknowns fail closed.
- A rule with ``workload:`` and without ``subject:`` is a service rule: for a request that
  carries no workload identity it does not apply (and explains nothing).
- With a principal, the first allow rule that applies allows (``allowed``). Without one, only
  ``anonymous`` allow rules (``allowed_anonymous``) and allow rules with ``workload:`` and no
  ``subject:`` (``allowed``: the verified client certificate identifies the caller) can allow.
- When nothing allows, the answer explains the nearest miss among the allow rules whose subject
  held, most useful first: ``condition_error`` (a ``when`` failed to evaluate),
  ``sender_constraint_required`` (the token is not bound as the rule requires: 401 with a
  DPoP challenge), ``insufficient_user_authentication`` (only ``auth`` failed: 401 with a step-up challenge),
  ``grant_inactive`` (the principal has that grant, but not now), ``grant_required``,
  ``outside_time_window``, the evidence reasons (``device_*``, location, network, ``workload_*``),
  ``condition_not_met``; otherwise ``no_matching_rule``, or ``token_missing`` without a
  principal (so the client is asked to authenticate). Without a principal only the misses of
  ``workload:`` rules count, and only when the request carries a workload identity.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from app.decision import StepUp
from app.evidence.model import (
    NO_EVIDENCE,
    Evidence,
    device_variables,
    location_variables,
    workload_variables,
)
from app.identity.claims import claim_at
from app.identity.confirmation import bindings_of
from app.identity.principal import Principal
from app.policy.cel import CelEvalError, build_context, evaluate_condition, principal_variables
from app.policy.cel_engine import Context
from app.policy.grants import Elevation, GrantIndex
from app.policy.index import CompiledPolicies, RuleIndex
from app.policy.model import AuthRequirement, ClaimCondition, Rule, Scalar, Subject
from app.policy.posture import evidence_miss
from app.policy.timewindow import within
from app.reasons import Reason

EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class PolicyInput:
    """The request as policies see it; method, host and path are already normalized.

    ``headers`` (lower-case names) and the evidence maps are read only by CEL conditions;
    ``evidence`` (the same facts, typed) by ``device:``, ``location:`` and ``workload:``.
    """

    method: str
    host: str
    path: str
    headers: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    device: Mapping[str, Any] = field(default_factory=lambda: EMPTY)
    location: Mapping[str, Any] = field(default_factory=lambda: EMPTY)
    workload: Mapping[str, Any] = field(default_factory=lambda: EMPTY)
    evidence: Evidence = NO_EVIDENCE
    # What security events said about the token since it was issued (the CEL ``signals``).
    signals: Mapping[str, Any] = field(default_factory=lambda: EMPTY)


def with_evidence(request: PolicyInput, evidence: Evidence, now: float) -> PolicyInput:
    """``request`` with gathered evidence: typed for the evidence conditions, as maps for CEL."""
    return dataclasses.replace(
        request,
        device=MappingProxyType(device_variables(evidence, now)),
        location=MappingProxyType(location_variables(evidence)),
        workload=MappingProxyType(workload_variables(evidence)),
        evidence=evidence,
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    allow: bool
    reason: Reason
    rule_id: str | None
    policy: str | None
    grants: tuple[str, ...] = ()  # the grants this decision was made through
    step_up: StepUp | None = None  # set with insufficient_user_authentication
    # For logs only (e.g. a CEL error message); never sent to clients, not part of equality.
    detail: str | None = field(default=None, compare=False)


# The nearest-miss reasons of allow rules, most useful first.
_MISS_PRIORITY: tuple[Reason, ...] = (
    Reason.CONDITION_ERROR,
    Reason.SENDER_CONSTRAINT_REQUIRED,
    Reason.INSUFFICIENT_USER_AUTHENTICATION,
    Reason.GRANT_INACTIVE,
    Reason.GRANT_REQUIRED,
    Reason.OUTSIDE_TIME_WINDOW,
    Reason.DEVICE_UNBOUND,
    Reason.DEVICE_INVALID,
    Reason.DEVICE_STALE,
    Reason.DEVICE_NONCOMPLIANT,
    Reason.DEVICE_MISSING,
    Reason.CLIENT_IP_UNKNOWN,
    Reason.COUNTRY_UNKNOWN,
    Reason.LOCATION_MISMATCH,
    Reason.LOCATION_DENIED,
    Reason.NETWORK_DENIED,
    Reason.WORKLOAD_DENIED,
    Reason.WORKLOAD_MISSING,
    Reason.CONDITION_NOT_MET,
)


def _same_scalar(actual: Any, expected: Scalar) -> bool:
    # Strict about types: true is not 1 and "1" is not 1; 1 and 1.0 are the same number.
    if isinstance(actual, bool) or isinstance(expected, bool):
        return isinstance(actual, bool) and isinstance(expected, bool) and actual == expected
    if isinstance(actual, int | float) and isinstance(expected, int | float):
        return actual == expected
    return isinstance(actual, str) and isinstance(expected, str) and actual == expected


def claim_holds(condition: ClaimCondition, claims: Mapping[str, Any]) -> bool:
    # An absent claim reads as None, which equals no scalar a condition can name.
    value = claim_at(claims, condition.name)
    items = value if isinstance(value, list | tuple) else (value,)
    return any(_same_scalar(item, want) for item in items for want in condition.values)


def subject_holds(
    subject: Subject,
    principal: Principal,
    groups: frozenset[str] | None = None,
    scopes: frozenset[str] | None = None,
) -> bool:
    """Every condition the subject sets holds for the principal (whose groups and scopes may
    be widened by active grants)."""
    groups = principal.groups if groups is None else groups
    scopes = principal.scopes if scopes is None else scopes
    checks = (
        subject.issuers_any is None or principal.issuer in subject.issuers_any,
        subject.subjects_any is None or principal.subject in subject.subjects_any,
        subject.groups_any is None or not subject.groups_any.isdisjoint(groups),
        subject.groups_all is None or subject.groups_all <= groups,
        subject.scopes_any is None or not subject.scopes_any.isdisjoint(scopes),
        subject.scopes_all is None or subject.scopes_all <= scopes,
    )
    return all(checks) and all(claim_holds(c, principal.claims) for c in subject.claims)


def auth_holds(auth: AuthRequirement, principal: Principal, now: float) -> bool:
    """Is the authentication strong enough (``acr``, ``amr``) and recent enough (``auth_time``)?"""
    if auth.acr_any is not None and principal.acr not in auth.acr_any:
        return False
    if auth.amr_all is not None and not auth.amr_all <= principal.amr:
        return False
    if auth.max_age is None:
        return True
    return principal.auth_time is not None and now - principal.auth_time <= auth.max_age


def step_up_for(auth: AuthRequirement) -> StepUp:
    return StepUp(acr_values=auth.acr_any or (), max_age=auth.max_age)


@dataclass(frozen=True, slots=True)
class Outcome:
    """Whether one matching rule applies, and if not, why (``None``: its subject did not hold)."""

    applies: bool
    miss: Reason | None = None
    grants: tuple[str, ...] = ()
    detail: str | None = None
    unknown: bool = False  # a deny rule whose evidence is unknown: it denies (fail closed)


@dataclass(slots=True)
class Evaluation:
    """One request's evaluation inputs, with the expensive parts computed at most once."""

    request: PolicyInput
    principal: Principal | None
    now: float
    grant_index: GrantIndex
    _elevation: Elevation | None = None
    _context: Context | None = field(default=None, repr=False)
    _context_error: str | None = None

    @property
    def elevation(self) -> Elevation | None:
        if self.principal is None:
            return None
        if self._elevation is None:
            self._elevation = self.grant_index.elevation(self.principal, self.now)
        return self._elevation

    def context(self) -> Context:
        if self._context_error is not None:
            raise CelEvalError(self._context_error)
        if self._context is None:
            subject = None
            elevation = self.elevation
            if self.principal is not None and elevation is not None:
                subject = principal_variables(
                    self.principal, elevation.groups, elevation.scopes, elevation.names
                )
            request = self.request
            try:
                self._context = build_context(
                    method=request.method,
                    host=request.host,
                    path=request.path,
                    headers=request.headers,
                    subject=subject,
                    evidence={
                        "device": request.device,
                        "location": request.location,
                        "workload": request.workload,
                    },
                    now=self.now,
                    signals=request.signals,
                )
            except CelEvalError as exc:
                self._context_error = str(exc)
                raise
        return self._context


_APPLIES = Outcome(True)
_DOES_NOT_APPLY = Outcome(False)
_MISSES = {reason: Outcome(False, reason) for reason in _MISS_PRIORITY}


def check_rule(rule: Rule, scope: Evaluation) -> Outcome:
    """Does a rule that matched the request's host, method and path apply?"""
    principal = scope.principal
    used: tuple[str, ...] = ()
    if not rule.anonymous:
        if principal is None:
            # An allow rule needs some principal (a token, or for a workload rule the client
            # certificate); a deny rule without subject hits everyone.
            if rule.subject is not None or (
                rule.effect == "allow" and not rule.workload_authenticates
            ):
                return _DOES_NOT_APPLY
        elif rule.subject is not None and not scope.grant_index.grants:
            if not subject_holds(rule.subject, principal):  # no grants: the fast path
                return _DOES_NOT_APPLY
        elif rule.subject is not None:
            elevation = scope.elevation
            assert elevation is not None
            if not subject_holds(rule.subject, principal, elevation.groups, elevation.scopes):
                return _DOES_NOT_APPLY
            if elevation.active and not subject_holds(rule.subject, principal):
                # It holds only thanks to granted groups or scopes: name those grants.
                subject = rule.subject
                used = elevation.adding(
                    (subject.groups_any or frozenset()) | (subject.groups_all or frozenset()),
                    (subject.scopes_any or frozenset()) | (subject.scopes_all or frozenset()),
                )
    if rule.plain:
        return _APPLIES if not used else Outcome(True, grants=tuple(dict.fromkeys(used)))
    if rule.time_window is not None and not within(rule.time_window, scope.now):
        return _MISSES[Reason.OUTSIDE_TIME_WINDOW]
    if rule.grant is not None:
        elevation = scope.elevation
        holding = None if elevation is None else elevation.holding(rule.grant)
        if holding is None:
            inactive = elevation is not None and elevation.has_inactive(rule.grant)
            return _MISSES[Reason.GRANT_INACTIVE if inactive else Reason.GRANT_REQUIRED]
        used = (*used, holding.name)
    unknown: Reason | None = None
    if rule.evidence is not None:
        evidence = scope.request.evidence
        if (
            rule.subject is None
            and rule.evidence.workload is not None
            and evidence.workload is None
        ):
            # A service rule (the workload is its subject) says nothing about other callers.
            return _DOES_NOT_APPLY
        miss = evidence_miss(rule.evidence, evidence, scope.now)
        if miss is not None:
            if rule.effect == "allow" or not miss.unknown:
                return _MISSES[miss.reason]
            unknown = miss.reason  # a deny rule: it denies unless another condition is false
    if rule.when is not None:
        try:
            holds = evaluate_condition(rule.when, scope.context())
        except CelEvalError as exc:
            return Outcome(False, Reason.CONDITION_ERROR, detail=str(exc))
        if not holds:
            return _MISSES[Reason.CONDITION_NOT_MET]
    if unknown is not None:
        return Outcome(False, unknown, unknown=True)
    # The loader refuses sender_constrained on anonymous rules: it needs a principal.
    if rule.sender_constrained is not None and (
        principal is None or rule.sender_constrained.isdisjoint(bindings_of(principal.claims))
    ):
        return _MISSES[Reason.SENDER_CONSTRAINT_REQUIRED]
    if rule.auth is not None:
        assert principal is not None  # the loader refuses auth on anonymous rules
        if not auth_holds(rule.auth, principal, scope.now):
            return _MISSES[Reason.INSUFFICIENT_USER_AUTHENTICATION]
    return Outcome(True, grants=tuple(dict.fromkeys(used))) if used else _APPLIES


def verdict_over(
    candidates: tuple[Rule, ...],
    request: PolicyInput,
    principal: Principal | None,
    now: float,
    grants: GrantIndex,
) -> Verdict:
    """The verdict over ``candidates``: the rules matching the request, in global order."""
    scope = Evaluation(request, principal, now, grants)
    allowed: tuple[Rule, Outcome] | None = None
    misses: dict[Reason, tuple[Rule, Outcome]] = {}
    for rule in candidates:
        if rule.effect == "deny":
            outcome = check_rule(rule, scope)
            if outcome.applies:
                return Verdict(False, Reason.DENIED_BY_RULE, rule.id, rule.policy)
            if outcome.miss is Reason.CONDITION_ERROR or outcome.unknown:
                assert outcome.miss is not None
                return Verdict(False, outcome.miss, rule.id, rule.policy, detail=outcome.detail)
        elif allowed is None:
            outcome = check_rule(rule, scope)
            if outcome.applies:
                allowed = (rule, outcome)
            elif outcome.miss is not None and (
                principal is not None
                or outcome.miss is Reason.CONDITION_ERROR
                or (rule.workload_authenticates and request.evidence.workload is not None)
            ):
                misses.setdefault(outcome.miss, (rule, outcome))
    if allowed is not None:
        rule, outcome = allowed
        anonymous = principal is None and rule.anonymous
        reason = Reason.ALLOWED_ANONYMOUS if anonymous else Reason.ALLOWED
        return Verdict(True, reason, rule.id, rule.policy, grants=outcome.grants)
    for reason in _MISS_PRIORITY:
        if reason in misses:
            rule, outcome = misses[reason]
            step_up = None
            if reason is Reason.INSUFFICIENT_USER_AUTHENTICATION and rule.auth is not None:
                step_up = step_up_for(rule.auth)
            return Verdict(
                False, reason, rule.id, rule.policy, step_up=step_up, detail=outcome.detail
            )
    if principal is None:
        return Verdict(False, Reason.TOKEN_MISSING, None, None)
    return Verdict(False, Reason.NO_MATCHING_RULE, None, None)


def evaluate_index(
    index: RuleIndex,
    grants: GrantIndex,
    request: PolicyInput,
    principal: Principal | None,
    now: float,
) -> Verdict:
    candidates = index.lookup(request.method, request.host, request.path).rules
    return verdict_over(candidates, request, principal, now, grants)


def evaluate(
    policies: CompiledPolicies, request: PolicyInput, principal: Principal | None, now: float
) -> Verdict:
    """Decide a normalized request with the enforced rules."""
    return evaluate_index(policies.index, policies.grants, request, principal, now)
