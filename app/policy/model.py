"""Compiled policy rules: immutable values the loader builds once and evaluation only reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Effect = Literal["allow", "deny"]
Scalar = str | int | float | bool

METHODS: frozenset[str] = frozenset(
    {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT", "TRACE"}
)
ANY_PATH = "/**"


@dataclass(frozen=True, slots=True)
class ClaimCondition:
    """The claim at ``name`` (a top-level name or a dotted path) equals one of ``values``;
    a list-valued claim must contain one of them."""

    name: str
    values: tuple[Scalar, ...]


@dataclass(frozen=True, slots=True)
class Subject:
    """Conditions on the principal; every condition that is set must hold (AND).

    ``None`` (or an empty ``claims``) means the condition is not part of the rule.
    """

    issuers_any: frozenset[str] | None = None
    subjects_any: frozenset[str] | None = None
    groups_any: frozenset[str] | None = None
    groups_all: frozenset[str] | None = None
    scopes_any: frozenset[str] | None = None
    scopes_all: frozenset[str] | None = None
    claims: tuple[ClaimCondition, ...] = ()


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule of one policy, with where it was written.

    ``order`` is the rule's global position (files sorted by path, then documents, then rules),
    the tie-breaker that makes every result deterministic. ``hosts`` are normalized (an entry
    ``*.example.com`` is a single-label wildcard); empty means any host. ``methods`` ``None``
    means any method; ``paths`` are validated patterns (``("/**",)`` when the rule gave none).
    """

    id: str
    policy: str
    effect: Effect
    order: int
    anonymous: bool = False
    hosts: tuple[str, ...] = ()
    methods: frozenset[str] | None = None
    paths: tuple[str, ...] = (ANY_PATH,)
    subject: Subject | None = None
    file: str = ""
    line: int = 0
