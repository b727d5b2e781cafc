"""The index finds a request's rules without looking at the others, whatever their number."""

from __future__ import annotations

import pytest

from app.policy.index import CompiledPolicies, compile_policies, split_path
from app.policy.model import Rule, Subject

GROUP = Subject(groups_any=frozenset({"g"}))


def many_rules(count: int) -> list[Rule]:
    """``count`` rules of four shapes, spread over hosts, paths and methods."""
    rules = []
    for i in range(count):
        shape = i % 4
        if shape == 0:  # any host, one literal service path with a "*" leaf, GET only
            rule = Rule(
                f"svc-{i}",
                "p",
                "allow",
                order=i,
                methods=frozenset({"GET"}),
                paths=(f"/svc{i}/items/*",),
                subject=GROUP,
            )
        elif shape == 1:  # one of 100 exact hosts, a versioned API subtree, any method
            rule = Rule(
                f"api-{i}",
                "p",
                "allow",
                order=i,
                hosts=(f"h{i % 100}.example.com",),
                paths=(f"/api/v{i}/**",),
                subject=GROUP,
            )
        elif shape == 2:  # one of 50 wildcard hosts, two literal paths, two methods
            rule = Rule(
                f"tenant-{i}",
                "p",
                "deny",
                order=i,
                hosts=(f"*.t{i % 50}.example.com",),
                methods=frozenset({"PUT", "DELETE"}),
                paths=(f"/t/{i}", f"/u/{i}"),
            )
        else:  # any host, "*" in the middle
            rule = Rule(f"mid-{i}", "p", "allow", order=i, anonymous=True, paths=(f"/m/*/x{i}",))
        rules.append(rule)
    return rules


def build(count: int) -> CompiledPolicies:
    return compile_policies("sha256:test", many_rules(count), ["p"])


REQUESTS = [
    ("GET", "any.example.org", "/svc40/items/7", ["svc-40"]),
    ("POST", "any.example.org", "/svc40/items/7", []),
    ("GET", "h41.example.com", "/api/v41/a/b/c", ["api-41"]),
    ("GET", "h41.example.com", "/api/v41", ["api-41"]),
    ("GET", "h42.example.com", "/api/v41", []),
    ("DELETE", "a.t42.example.com", "/u/42", ["tenant-42"]),
    ("GET", "a.t42.example.com", "/u/42", []),
    ("GET", "x.example.org", "/m/anything/x43", ["mid-43"]),
    ("GET", "x.example.org", "/nothing/here", []),
]


@pytest.fixture(scope="module")
def small() -> CompiledPolicies:
    return build(100)


@pytest.fixture(scope="module")
def large() -> CompiledPolicies:
    return build(10_000)


@pytest.mark.parametrize(("method", "host", "path", "expected"), REQUESTS)
def test_lookup_examines_only_candidates(
    small: CompiledPolicies,
    large: CompiledPolicies,
    method: str,
    host: str,
    path: str,
    expected: list[str],
) -> None:
    assert large.rule_count == 10_000
    found = large.index.lookup(method, host, path)
    assert [rule.id for rule in found.rules] == expected
    # The work done is the same for 100 rules as for 10,000: it depends on the request's
    # shape, not on the number of rules.
    baseline = small.index.lookup(method, host, path)
    assert [rule.id for rule in baseline.rules] == expected
    assert found.nodes_visited == baseline.nodes_visited
    assert found.nodes_visited <= 2 * (len(split_path(path)) + 1) * 3


def test_candidates_keep_global_order() -> None:
    rules = [
        Rule("late-any-method", "p", "allow", order=5, paths=("/a/**",)),
        Rule("early-get", "p", "allow", order=1, methods=frozenset({"GET"}), paths=("/a/*",)),
        Rule("middle-host", "p", "deny", order=3, hosts=("h.example.com",), paths=("/a/b",)),
        Rule("first-wild", "p", "allow", order=0, hosts=("*.example.com",), paths=("/*/b",)),
        Rule("two-patterns", "p", "allow", order=2, paths=("/a/b", "/a/*")),  # listed once
        Rule("other-method", "p", "allow", order=4, methods=frozenset({"POST"}), paths=("/a/b",)),
    ]
    index = compile_policies("v", rules, ["p"]).index
    found = index.lookup("GET", "h.example.com", "/a/b").rules
    assert [r.id for r in found] == [
        "first-wild",
        "early-get",
        "two-patterns",
        "middle-host",
        "late-any-method",
    ]


@pytest.mark.parametrize(
    ("path", "segments"), [("/", ()), ("/a", ("a",)), ("/a/b/c", ("a", "b", "c"))]
)
def test_split_path(path: str, segments: tuple[str, ...]) -> None:
    assert split_path(path) == segments
