"""``ztauthz explain``: the decision for one request, and rule by rule why.

Every rule of the directory is shown in evaluation order with whether its host, method and
path match and, if they do, each of its conditions in the order the evaluator checks them. The
decision itself comes from the real evaluator (``evaluate``); the trace is a linear, readable
re-check of the same rules, so it explains without being a second implementation of the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from app.identity.confirmation import bindings_of
from app.identity.principal import Principal
from app.policy.cel import CelEvalError, evaluate_condition
from app.policy.evaluate import Evaluation, PolicyInput, Verdict, auth_holds, claim_holds, evaluate
from app.policy.index import CompiledPolicies, split_path
from app.policy.model import Rule, Subject
from app.policy.posture import evidence_miss
from app.policy.timewindow import within
from app.reasons import status_of


@dataclass(frozen=True, slots=True)
class Check:
    label: str
    ok: bool | None  # None: not evaluated (an earlier step failed)
    note: str = ""


@dataclass(frozen=True, slots=True)
class RuleTrace:
    rule: Rule
    matched: bool
    applies: bool
    checks: tuple[Check, ...]


@dataclass(frozen=True, slots=True)
class Explanation:
    verdict: Verdict
    policy_version: str
    traces: tuple[RuleTrace, ...]


def _pattern_matches(pattern: tuple[str, ...], segments: tuple[str, ...]) -> bool:
    if pattern == ("**",):
        return True
    if not pattern or not segments:
        return not pattern and not segments
    return pattern[0] in ("*", segments[0]) and _pattern_matches(pattern[1:], segments[1:])


def _host_matches(rule_host: str, host: str) -> bool:
    if rule_host.startswith("*."):
        label, dot, parent = host.partition(".")
        return bool(label) and bool(dot) and parent == rule_host[2:]
    return rule_host == host


def _names(values: frozenset[str] | tuple[str, ...]) -> str:
    return "[" + ", ".join(sorted(values)) + "]"


def _match_checks(rule: Rule, request: PolicyInput) -> list[Check]:
    host_ok = not rule.hosts or any(_host_matches(h, request.host) for h in rule.hosts)
    method_ok = rule.methods is None or request.method in rule.methods
    segments = split_path(request.path)
    hit = next((p for p in rule.paths if _pattern_matches(split_path(p), segments)), None)
    return [
        Check(
            "host",
            host_ok,
            "any host" if not rule.hosts else f"{request.host} in {_names(tuple(rule.hosts))}",
        ),
        Check(
            "method",
            method_ok,
            "any method" if rule.methods is None else f"{request.method} in {_names(rule.methods)}",
        ),
        Check(
            "path",
            hit is not None,
            f"{request.path} matches {hit}"
            if hit is not None
            else f"{request.path} matches none of {list(rule.paths)}",
        ),
    ]


def _subject_checks(subject: Subject, principal: Principal, scope: Evaluation) -> list[Check]:
    elevation = scope.elevation
    groups = principal.groups if elevation is None else elevation.groups
    scopes = principal.scopes if elevation is None else elevation.scopes
    checks: list[Check] = []
    for label, wanted, have, every in (
        ("issuers_any", subject.issuers_any, frozenset({principal.issuer}), False),
        ("subjects_any", subject.subjects_any, frozenset({principal.subject}), False),
        ("groups_any", subject.groups_any, groups, False),
        ("groups_all", subject.groups_all, groups, True),
        ("scopes_any", subject.scopes_any, scopes, False),
        ("scopes_all", subject.scopes_all, scopes, True),
    ):
        if wanted is None:
            continue
        ok = wanted <= have if every else not wanted.isdisjoint(have)
        checks.append(Check(f"subject.{label}", ok, f"{_names(wanted)} vs {_names(have)}"))
    for condition in subject.claims:
        ok = claim_holds(condition, principal.claims)
        checks.append(
            Check(f"subject.claims.{condition.name}", ok, f"one of {list(condition.values)}")
        )
    return checks


def _condition_checks(rule: Rule, scope: Evaluation) -> list[Check]:
    principal = scope.principal
    checks: list[Check] = []
    if rule.anonymous:
        checks.append(Check("anonymous", True, "no token needed"))
    elif principal is None:
        needs = rule.subject is not None or (
            rule.effect == "allow" and not rule.workload_authenticates
        )
        checks.append(Check("token", not needs, "no token" + (" (required)" if needs else "")))
    elif rule.subject is not None:
        checks.extend(_subject_checks(rule.subject, principal, scope))
    if rule.time_window is not None:
        window = rule.time_window
        local = datetime.fromtimestamp(scope.now, window.timezone)
        checks.append(
            Check(
                "time_window",
                within(window, scope.now),
                f"local time {local:%a %H:%M} {window.timezone.key}",
            )
        )
    if rule.grant is not None:
        elevation = scope.elevation
        holding = None if elevation is None else elevation.holding(rule.grant)
        if holding is not None:
            note = f"active grant {holding.name!r} (approved by {holding.approved_by})"
        elif elevation is not None and elevation.has_inactive(rule.grant):
            note = "a grant exists but is outside its window"
        else:
            note = "no grant"
        checks.append(Check(f"grant {rule.grant}", holding is not None, note))
    if rule.evidence is not None:
        miss = evidence_miss(rule.evidence, scope.request.evidence, scope.now)
        if miss is None:
            note = "device, location and workload conditions hold"
        else:
            note = miss.reason.value + (" (evidence unknown)" if miss.unknown else "")
        checks.append(Check("evidence", miss is None, note))
    if rule.when is not None:
        try:
            ok = evaluate_condition(rule.when, scope.context())
            checks.append(Check("when", ok, rule.when.source.strip()))
        except CelEvalError as exc:
            checks.append(Check("when", False, f"error: {exc}"))
    if rule.sender_constrained is not None:
        bound = frozenset() if principal is None else bindings_of(principal.claims)
        checks.append(
            Check(
                "sender_constrained",
                not rule.sender_constrained.isdisjoint(bound),
                f"token bound by {_names(bound) if bound else 'nothing'}; "
                f"rule accepts {_names(rule.sender_constrained)}",
            )
        )
    if rule.auth is not None and principal is not None:
        auth = rule.auth
        parts = []
        if auth.acr_any is not None:
            parts.append(f"acr {principal.acr!r} in {list(auth.acr_any)}")
        if auth.amr_all is not None:
            parts.append(f"amr {_names(principal.amr)} has {_names(auth.amr_all)}")
        if auth.max_age is not None:
            age = (
                "unknown"
                if principal.auth_time is None
                else f"{int(scope.now - principal.auth_time)}s"
            )
            parts.append(f"auth age {age} <= {auth.max_age}s")
        checks.append(Check("auth", auth_holds(auth, principal, scope.now), "; ".join(parts)))
    return checks


def explain(
    policies: CompiledPolicies, request: PolicyInput, principal: Principal | None, now: float
) -> Explanation:
    verdict = evaluate(policies, request, principal, now)
    scope = Evaluation(request, principal, now, policies.grants)
    traces = []
    for rule in policies.rules:
        matching = _match_checks(rule, request)
        matched = all(c.ok for c in matching)
        conditions = _condition_checks(rule, scope) if matched else []
        applies = matched and all(c.ok for c in conditions)
        traces.append(RuleTrace(rule, matched, applies, tuple(matching + conditions)))
    return Explanation(verdict, policies.version, tuple(traces))


def render_text(explanation: Explanation, principal: Principal | None, now: float) -> str:
    verdict = explanation.verdict
    lines = [
        f"decision: {'allow' if verdict.allow else 'deny'} "
        f"({status_of(verdict.reason)} {verdict.reason.value})"
        + (f" by rule {verdict.rule_id} (policy {verdict.policy})" if verdict.rule_id else ""),
        f"policy version: {explanation.policy_version}",
        f"time: {datetime.fromtimestamp(now, UTC):%Y-%m-%dT%H:%M:%SZ}",
    ]
    if verdict.grants:
        lines.append(f"through grants: {', '.join(verdict.grants)}")
    if verdict.step_up is not None:
        lines.append(
            f"step-up: acr_values={list(verdict.step_up.acr_values)} max_age={verdict.step_up.max_age}"
        )
    deciding = next((t.rule for t in explanation.traces if t.rule.id == verdict.rule_id), None)
    if verdict.allow and deciding is not None and deciding.high_risk and not deciding.dry_run:
        lines.append(
            "high-risk: the token's issuer must also confirm the token active by introspection "
            "before this allow holds (docs/introspection.md)"
        )
    if principal is None:
        lines.append("principal: none (no token)")
    else:
        lines.append(
            f"principal: {principal.subject} (issuer {principal.issuer}; groups "
            f"{_names(principal.groups)}; scopes {_names(principal.scopes)}; acr {principal.acr}; "
            f"amr {_names(principal.amr)}; auth_time {principal.auth_time})"
        )
    lines.append("")
    lines.append("rules, in evaluation order (deny rules that apply win over allow rules):")
    for trace in explanation.traces:
        rule = trace.rule
        state = (
            "APPLIES"
            if trace.applies
            else ("matches, conditions fail" if trace.matched else "no match")
        )
        dry = (" [dry-run]" if rule.dry_run else "") + (" [high-risk]" if rule.high_risk else "")
        lines.append(
            f"  {rule.effect:<5} {rule.id} ({rule.policy}, {rule.file}:{rule.line}){dry}: {state}"
        )
        for check in trace.checks:
            mark = "ok " if check.ok else "NO "
            lines.append(f"        {mark} {check.label}: {check.note}")
            if not check.ok and not trace.matched:
                break
    return "\n".join(lines) + "\n"
