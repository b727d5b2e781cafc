"""Just-in-time grants: which grants hold for a principal at a moment, and what they add.

Grants are indexed by subject and by group, so finding a principal's grants costs a few dict
lookups whatever the number of grants. A grant counts only while ``not_before <= now <
expires``: an expired grant stops counting at its second, without a reload.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from app.identity.principal import Principal
from app.policy.model import Grant


@dataclass(frozen=True, slots=True)
class Elevation:
    """The grants that hold for one principal at one moment, and what they add to it."""

    active: tuple[Grant, ...]
    inactive: tuple[Grant, ...]  # the principal's grants outside their window
    groups: frozenset[str]  # the token's groups plus those granted
    scopes: frozenset[str]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.active)

    def holding(self, grant: str) -> Grant | None:
        """The first active grant of the named access, if any."""
        return next((g for g in self.active if g.grant == grant), None)

    def has_inactive(self, grant: str) -> bool:
        return any(g.grant == grant for g in self.inactive)

    def adding(self, groups: Iterable[str], scopes: Iterable[str]) -> tuple[str, ...]:
        """Names of active grants that contributed any of ``groups`` or ``scopes``."""
        wanted_groups, wanted_scopes = set(groups), set(scopes)
        return tuple(
            g.name for g in self.active if g.groups & wanted_groups or g.scopes & wanted_scopes
        )


@dataclass(frozen=True, slots=True, eq=False)
class GrantIndex:
    by_subject: Mapping[str, tuple[Grant, ...]]
    by_group: Mapping[str, tuple[Grant, ...]]
    grants: tuple[Grant, ...]

    def for_principal(self, principal: Principal) -> tuple[Grant, ...]:
        """Every grant naming this principal (by subject or by one of its token groups)."""
        found = list(self.by_subject.get(principal.subject, ()))
        for group in sorted(principal.groups):
            found.extend(self.by_group.get(group, ()))
        mine = (g for g in dict.fromkeys(found) if g.issuer is None or g.issuer == principal.issuer)
        return tuple(sorted(mine, key=lambda g: (g.file, g.line)))

    def elevation(self, principal: Principal, now: float) -> Elevation:
        mine = self.for_principal(principal) if self.grants else ()
        active = tuple(g for g in mine if g.active(now))
        inactive = tuple(g for g in mine if not g.active(now))
        groups, scopes = set(principal.groups), set(principal.scopes)
        for grant in active:
            groups |= grant.groups
            scopes |= grant.scopes
        return Elevation(active, inactive, frozenset(groups), frozenset(scopes))


def build_grant_index(grants: Iterable[Grant]) -> GrantIndex:
    ordered = tuple(grants)
    by_subject: dict[str, list[Grant]] = {}
    by_group: dict[str, list[Grant]] = {}
    for grant in ordered:
        if grant.subject is not None:
            by_subject.setdefault(grant.subject, []).append(grant)
        if grant.group is not None:
            by_group.setdefault(grant.group, []).append(grant)
    return GrantIndex(
        by_subject=MappingProxyType({k: tuple(v) for k, v in by_subject.items()}),
        by_group=MappingProxyType({k: tuple(v) for k, v in by_group.items()}),
        grants=ordered,
    )


EMPTY_GRANTS = build_grant_index(())
