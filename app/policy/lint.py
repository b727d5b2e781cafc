"""Semantic lint for ``ztauthz policy check``: what compiles but is probably wrong.

Every finding is a warning with the ``file:line`` of the rule or grant:

- an allow rule that matches every path with no condition at all (no subject, time window,
  grant, ``when`` or ``auth``): everyone with a token, or everyone (anonymous), gets in;
- rules that can never apply: an allow rule every request of which an unconditional deny rule
  also matches, a ``when`` that is always false, a rule requiring a grant no Grant provides;
- grants that have expired, or expire within a day; grants no rule requires and that add no
  groups or scopes.

Errors (schema, duplicate ids, CEL syntax, unknown variables, bad time zones, grant windows)
come from the loader.
"""

from __future__ import annotations

from datetime import timedelta

from app.policy.index import CompiledPolicies, split_path
from app.policy.model import ANY_PATH, Grant, Rule
from app.policy.problem import Problem

DAY = 86400.0


def _warning(file: str, line: int, message: str) -> Problem:
    return Problem(file, line, message, severity="warning")


def _where(rule: Rule) -> str:
    return f"{rule.file}:{rule.line}"


def host_covers(wide: tuple[str, ...], narrow: tuple[str, ...]) -> bool:
    """Does every host ``narrow`` matches also match ``wide``? (empty: any host)"""
    if not wide:
        return True
    if not narrow:
        return False

    def one(w: str, n: str) -> bool:
        if w == n:
            return True
        if not w.startswith("*.") or n.startswith("*."):
            return False
        label, _, parent = n.partition(".")
        return bool(label) and parent == w[2:]

    return all(any(one(w, n) for w in wide) for n in narrow)


def pattern_covers(wide: tuple[str, ...], narrow: tuple[str, ...]) -> bool:
    """Does every path the pattern ``narrow`` matches also match ``wide``? (segment tuples)"""
    if wide == ("**",):
        return True
    if not narrow:
        return not wide
    if narrow[0] == "**" or not wide:
        return False
    head = wide[0] == "*" or (wide[0] == narrow[0] and narrow[0] != "*")
    return head and pattern_covers(wide[1:], narrow[1:])


def deny_covers(deny: Rule, rule: Rule) -> bool:
    """Does the unconditional ``deny`` match every request ``rule`` matches?"""
    if deny.conditional or deny.effect != "deny":
        return False
    methods_ok = deny.methods is None or (rule.methods is not None and rule.methods <= deny.methods)
    paths_ok = all(
        any(pattern_covers(split_path(d), split_path(p)) for d in deny.paths) for p in rule.paths
    )
    return methods_ok and paths_ok and host_covers(deny.hosts, rule.hosts)


def lint_rules(policies: CompiledPolicies) -> list[Problem]:
    found: list[Problem] = []
    provided = {g.grant for g in policies.grants.grants if g.grant is not None}
    denies = [r for r in policies.rules if r.effect == "deny" and not r.conditional]
    for rule in policies.rules:
        if rule.effect == "allow" and ANY_PATH in rule.paths and not rule.conditional:
            who = "everyone, without a token" if rule.anonymous else "every authenticated caller"
            found.append(
                _warning(
                    rule.file,
                    rule.line,
                    f"rule {rule.id!r} allows {who} on every path with no condition "
                    "(add match.paths, subject, when, grant or auth)",
                )
            )
        if rule.effect == "allow":
            for deny in denies:
                if deny.dry_run and not rule.dry_run:
                    continue  # a dry-run deny does not stop an enforced allow
                if deny_covers(deny, rule):
                    found.append(
                        _warning(
                            rule.file,
                            rule.line,
                            f"rule {rule.id!r} can never allow: deny rule {deny.id!r} "
                            f"({_where(deny)}) matches every request it matches",
                        )
                    )
                    break
        if rule.when is not None and rule.when.constant is False:
            message = f"rule {rule.id!r} can never apply: its when condition is always false"
            found.append(_warning(rule.file, rule.line, message))
        if rule.grant is not None and rule.grant not in provided:
            message = (
                f"rule {rule.id!r} requires grant {rule.grant!r}, which no Grant in the "
                "directory provides: it applies to nobody until one is added"
            )
            found.append(_warning(rule.file, rule.line, message))
    return found


def _human(seconds: float) -> str:
    return str(timedelta(seconds=max(0, round(seconds))))


def lint_grants(policies: CompiledPolicies, now: float) -> list[Problem]:
    found: list[Problem] = []
    required = {r.grant for r in policies.rules if r.grant is not None}
    for grant in policies.grants.grants:
        found.extend(_grant_findings(grant, required, now))
    return found


def _grant_findings(grant: Grant, required: set[str], now: float) -> list[Problem]:
    found: list[Problem] = []
    if grant.expires <= now:
        message = (
            f"grant {grant.name!r} expired {_human(now - grant.expires)} ago; it no longer "
            "counts: remove it"
        )
        found.append(_warning(grant.file, grant.line, message))
    elif grant.expires - now <= DAY:
        message = f"grant {grant.name!r} expires in {_human(grant.expires - now)}"
        found.append(_warning(grant.file, grant.line, message))
    if (
        grant.grant is not None
        and grant.grant not in required
        and not (grant.groups or grant.scopes)
    ):
        message = f"grant {grant.name!r} gives {grant.grant!r}, which no rule requires"
        found.append(_warning(grant.file, grant.line, message))
    return found


def lint(policies: CompiledPolicies, now: float) -> list[Problem]:
    """Every warning for compiled policies at ``now``, sorted by file and line."""
    found = lint_rules(policies) + lint_grants(policies, now)
    return sorted(found, key=lambda p: (p.file, p.line))
