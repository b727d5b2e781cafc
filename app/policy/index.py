"""The rule index: find the rules that can match a request without scanning every rule.

Rules are indexed by host, then by path pattern in a segment trie, then by method:

- host: an exact-host table, a single-label wildcard table keyed by the suffix after ``*.``,
  and one trie for rules that apply to any host. A lookup visits at most three tries.
- trie: each node has literal children (a dict), one ``*`` child, and two rule buckets: rules
  whose pattern ends at this node (``terminal``) and rules whose pattern ends here with ``**``
  (``rest``, matching zero or more further segments).
- bucket: rules per method plus the rules that apply to any method.

A lookup walks the trie once along the request's segments, following the literal child and the
``*`` child of every node it reaches; its cost depends on the path's depth and on how many
distinct pattern shapes share a prefix, not on the number of rules. The candidates come back in
the rules' global order, so evaluation over them is deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from app.policy.grants import EMPTY_GRANTS, GrantIndex, build_grant_index
from app.policy.model import Grant, Rule

# A bucket with more rules than this is split by method; a smaller one is one tuple, filtered
# by method as it is read (cheaper than a dict per bucket, which tens of thousands of buckets
# would pay in memory).
_SPLIT_BUCKET_AT = 8


@dataclass(frozen=True, slots=True, eq=False)
class Bucket:
    """The rules whose pattern ends at one trie node."""

    rules: tuple[Rule, ...]  # every rule; read as it is while ``by_method`` is None
    by_method: Mapping[str, tuple[Rule, ...]] | None = None  # large buckets: rules per method
    any_method: tuple[Rule, ...] = ()  # large buckets: rules for any method

    def collect(self, method: str, into: dict[int, Rule]) -> None:
        if self.by_method is None:
            for rule in self.rules:
                if rule.methods is None or method in rule.methods:
                    into[rule.order] = rule
            return
        for rule in self.any_method:
            into[rule.order] = rule
        for rule in self.by_method.get(method, ()):
            into[rule.order] = rule


@dataclass(frozen=True, slots=True, eq=False)
class TrieNode:
    # Read-only by convention (built once by build_index): plain dicts, no proxies, and one
    # shared empty mapping for the leaves, since a large index has tens of thousands of nodes.
    children: Mapping[str, TrieNode]
    star: TrieNode | None
    terminal: Bucket
    rest: Bucket


_EMPTY_BUCKET = Bucket(rules=())
_NO_CHILDREN: Mapping[str, TrieNode] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Candidates:
    """The rules that match a request's host, method and path, in global order.

    ``nodes_visited`` counts trie nodes the lookup touched: instrumentation for tests and
    benchmarks that must show the lookup does not grow with the number of rules.
    """

    rules: tuple[Rule, ...]
    nodes_visited: int


def split_path(path: str) -> tuple[str, ...]:
    """Segments of a normalized path (``/`` has none)."""
    return () if path == "/" else tuple(path[1:].split("/"))


def _walk(root: TrieNode, segments: tuple[str, ...], method: str, into: dict[int, Rule]) -> int:
    frontier = [root]
    visited = 0
    for segment in segments:
        following: list[TrieNode] = []
        for node in frontier:
            visited += 1
            if node.rest is not _EMPTY_BUCKET:
                node.rest.collect(method, into)
            child = node.children.get(segment)
            if child is not None:
                following.append(child)
            if node.star is not None:
                following.append(node.star)
        if not following:
            return visited
        frontier = following
    for node in frontier:
        visited += 1
        if node.rest is not _EMPTY_BUCKET:
            node.rest.collect(method, into)
        if node.terminal is not _EMPTY_BUCKET:
            node.terminal.collect(method, into)
    return visited


@dataclass(frozen=True, slots=True, eq=False)
class RuleIndex:
    exact_hosts: Mapping[str, TrieNode]
    wildcard_hosts: Mapping[str, TrieNode]  # "*.example.com" is stored under "example.com"
    any_host: TrieNode

    def lookup(self, method: str, host: str, path: str) -> Candidates:
        """Rules matching a normalized method, host and path, in global order."""
        segments = split_path(path)
        found: dict[int, Rule] = {}
        visited = _walk(self.any_host, segments, method, found)
        if self.exact_hosts:
            exact = self.exact_hosts.get(host)
            if exact is not None:
                visited += _walk(exact, segments, method, found)
        if self.wildcard_hosts:
            _, dot, parent = host.partition(".")
            wildcard = self.wildcard_hosts.get(parent) if dot else None
            if wildcard is not None:
                visited += _walk(wildcard, segments, method, found)
        if len(found) < 2:
            return Candidates(rules=tuple(found.values()), nodes_visited=visited)
        return Candidates(rules=tuple(map(found.__getitem__, sorted(found))), nodes_visited=visited)


# Builders: mutable while the index is assembled, frozen before anyone reads it.


@dataclass(slots=True)
class _BucketBuilder:
    rules: list[Rule] = field(default_factory=list)

    def add(self, rule: Rule) -> None:
        self.rules.append(rule)

    def freeze(self) -> Bucket:
        if not self.rules:
            return _EMPTY_BUCKET
        rules = tuple(self.rules)
        if len(rules) <= _SPLIT_BUCKET_AT:
            return Bucket(rules=rules)
        by_method: dict[str, list[Rule]] = {}
        for rule in rules:
            for method in sorted(rule.methods or ()):
                by_method.setdefault(method, []).append(rule)
        return Bucket(
            rules=rules,
            by_method={m: tuple(found) for m, found in by_method.items()},
            any_method=tuple(rule for rule in rules if rule.methods is None),
        )


@dataclass(slots=True)
class _NodeBuilder:
    children: dict[str, _NodeBuilder] = field(default_factory=dict)
    star: _NodeBuilder | None = None
    terminal: _BucketBuilder = field(default_factory=_BucketBuilder)
    rest: _BucketBuilder = field(default_factory=_BucketBuilder)

    def insert(self, segments: tuple[str, ...], rule: Rule) -> None:
        node = self
        for position, segment in enumerate(segments):
            if segment == "**" and position == len(segments) - 1:
                node.rest.add(rule)
                return
            if segment == "*":
                if node.star is None:
                    node.star = _NodeBuilder()
                node = node.star
            else:
                node = node.children.setdefault(segment, _NodeBuilder())
        node.terminal.add(rule)

    def freeze(self) -> TrieNode:
        return TrieNode(
            children={k: c.freeze() for k, c in self.children.items()} or _NO_CHILDREN,
            star=None if self.star is None else self.star.freeze(),
            terminal=self.terminal.freeze(),
            rest=self.rest.freeze(),
        )


def build_index(rules: Iterable[Rule]) -> RuleIndex:
    """Index validated rules (their path patterns must already be valid)."""
    any_host = _NodeBuilder()
    exact: dict[str, _NodeBuilder] = {}
    wildcard: dict[str, _NodeBuilder] = {}
    for rule in rules:
        roots: list[_NodeBuilder] = []
        if not rule.hosts:
            roots.append(any_host)
        for host in dict.fromkeys(rule.hosts):
            if host.startswith("*."):
                roots.append(wildcard.setdefault(host[2:], _NodeBuilder()))
            else:
                roots.append(exact.setdefault(host, _NodeBuilder()))
        for root in roots:
            for pattern in dict.fromkeys(rule.paths):
                root.insert(split_path(pattern), rule)
    return RuleIndex(
        exact_hosts=MappingProxyType({h: n.freeze() for h, n in exact.items()}),
        wildcard_hosts=MappingProxyType({h: n.freeze() for h, n in wildcard.items()}),
        any_host=any_host.freeze(),
    )


@dataclass(frozen=True, slots=True, eq=False)
class CompiledPolicies:
    """Every rule and grant of a policy directory, compiled and indexed; never changed after load.

    ``version`` is ``"sha256:"`` plus the first 16 hex digits of a SHA-256 over the sorted
    (relative file path, file bytes) pairs: the same files give the same version.
    ``index`` holds the enforced rules; ``dry_run_index``, present only when some policy is
    ``mode: dry-run``, holds every rule: what would be decided if those policies were enforced.
    """

    version: str
    rules: tuple[Rule, ...]  # in global order, dry-run rules included
    policy_names: tuple[str, ...]
    index: RuleIndex = field(repr=False)
    grants: GrantIndex = field(default=EMPTY_GRANTS, repr=False)
    dry_run_index: RuleIndex | None = field(default=None, repr=False)
    # Ids of the enforced ``high_risk`` allow rules (ids are unique across the directory):
    # an allow by one of them needs the token confirmed by introspection (app/pipeline.py).
    high_risk: frozenset[str] = frozenset()

    @property
    def rule_count(self) -> int:
        return len(self.rules)

    @property
    def enforced(self) -> tuple[Rule, ...]:
        return tuple(rule for rule in self.rules if not rule.dry_run)


def compile_policies(
    version: str,
    rules: Iterable[Rule],
    policy_names: Iterable[str],
    grants: Iterable[Grant] = (),
) -> CompiledPolicies:
    ordered = tuple(sorted(rules, key=lambda rule: rule.order))
    any_dry_run = any(rule.dry_run for rule in ordered)
    return CompiledPolicies(
        version=version,
        rules=ordered,
        policy_names=tuple(policy_names),
        index=build_index(rule for rule in ordered if not rule.dry_run),
        grants=build_grant_index(grants),
        dry_run_index=build_index(ordered) if any_dry_run else None,
        high_risk=frozenset(rule.id for rule in ordered if rule.high_risk and not rule.dry_run),
    )
