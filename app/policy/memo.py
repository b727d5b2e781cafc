"""Decisions of plain rules, remembered per verified principal and request line.

A rule is *plain* (``Rule.plain``, derived once when the rule is built) when nothing but the
request's method, host and path and the principal decides whether it applies: no time window,
grant, CEL condition, step-up requirement, evidence or sender-constraint condition. When every
rule matching a request is plain, no grant could widen the
principal's groups or scopes (grants come and go with the clock), there are no dry-run or
candidate policies to shadow it, and no evidence source is configured, the decision is a
function of (principal, method, host, path) for as long as these policies are loaded. The
token cache hands back the same Principal object for the same verified token (and a new one
once the keys change or the token is verified again), so this memo keys on that object,
compared by identity, and lives in one RuntimeState: a policy reload starts a new memo.

What a remembered decision skips is the policy evaluation and nothing else: the token is
still found in the token cache and checked against the clock on every request, before the
memo is asked. Tests decide random requests with and without the memo and compare.
"""

from __future__ import annotations

from collections.abc import Callable

from app.decision import Decision
from app.identity.principal import Principal
from app.policy.evaluate import PolicyInput
from app.policy.index import CompiledPolicies


def memoizable(policies: CompiledPolicies, request: PolicyInput) -> bool:
    """Do only plain rules match ``request`` under ``policies``, with no dry run beside them?"""
    if policies.dry_run_index is not None:
        return False
    rules = policies.index.lookup(request.method, request.host, request.path).rules
    return all(rule.plain for rule in rules)


def widened(policies: CompiledPolicies, principal: Principal) -> bool:
    """Could a grant widen this principal's groups or scopes? Grants come and go with the
    clock, so then any subject condition may hold at one moment and not the next."""
    return bool(policies.grants.grants) and any(
        grant.groups or grant.scopes for grant in policies.grants.for_principal(principal)
    )


def eligible(policies: CompiledPolicies, request: PolicyInput, principal: Principal) -> bool:
    """May the decision of ``request`` by ``principal`` be remembered (see module doc)?"""
    return memoizable(policies, request) and not widened(policies, principal)


class DecisionMemo:
    """Bounded: when full, it starts again empty (the next requests fill it back)."""

    MAX_ENTRIES = 8192

    def __init__(self) -> None:
        # (policies, method, host, path) -> are all the rules matching it plain?
        self._plain_lines: dict[tuple[int, str, str, str], tuple[CompiledPolicies, bool]] = {}
        self._decisions: dict[
            tuple[int, str, str, str], tuple[Principal, CompiledPolicies, Decision]
        ] = {}

    def __len__(self) -> int:
        return len(self._decisions)

    def discard(self, match: Callable[[Principal], bool]) -> int:
        """Forget every decision remembered for a principal that ``match``es (a security event
        revoked its subject or session: app/signals/); returns how many."""
        gone = [key for key, (principal, _, _) in self._decisions.items() if match(principal)]
        for key in gone:
            del self._decisions[key]
        return len(gone)

    def get(
        self,
        principal: Principal,
        policies: CompiledPolicies,
        request: PolicyInput,
        decision_id: str,
    ) -> Decision | None:
        """The decision remembered for this principal, request line and policies, made anew
        as ``decision_id``; None when there is none."""
        found = self._decisions.get((id(principal), request.method, request.host, request.path))
        if found is None or found[0] is not principal or found[1] is not policies:
            return None
        d = found[2]
        return Decision(
            d.allow,
            d.reason,
            decision_id,
            d.policy_version,
            d.rule_id,
            d.policy,
            principal,
            d.grants,
        )

    def put(self, policies: CompiledPolicies, request: PolicyInput, decision: Decision) -> None:
        """Remember ``decision`` (whose principal is set) for its request line, if only plain
        rules match it (``memoizable``, itself remembered per request line)."""
        principal = decision.principal
        assert principal is not None
        line = (id(policies), request.method, request.host, request.path)
        known = self._plain_lines.get(line)
        if known is None or known[0] is not policies:
            known = (policies, memoizable(policies, request))
            if len(self._plain_lines) >= self.MAX_ENTRIES:
                self._plain_lines.clear()
            self._plain_lines[line] = known
        if not known[1] or widened(policies, principal):
            return
        if len(self._decisions) >= self.MAX_ENTRIES:
            self._decisions.clear()
        key = (id(principal), request.method, request.host, request.path)
        self._decisions[key] = (principal, policies, decision)
