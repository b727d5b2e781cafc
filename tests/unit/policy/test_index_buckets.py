"""Small and large index buckets find the same rules: small ones filter by method as they
are read, large ones are split by method (both in the rules' global order)."""

from __future__ import annotations

import random

import pytest

from app.policy.index import compile_policies
from app.policy.model import Rule

METHODS = ("GET", "POST", "PUT", "DELETE")


def rules_on_one_path(count: int, rng: random.Random) -> list[Rule]:
    rules = []
    for i in range(count):
        methods = None if rng.random() < 0.3 else frozenset(rng.sample(METHODS, rng.randint(1, 2)))
        paths = rng.choice([("/shared/*",), ("/shared/**",), ("/shared/x",), ("/**",)])
        rules.append(Rule(f"r{i}", "p", "allow", order=i, methods=methods, paths=paths))
    return rules


def expected(rules: list[Rule], method: str, path: str) -> list[str]:
    """The rules that match, by brute force."""
    found = []
    for rule in rules:
        if rule.methods is not None and method not in rule.methods:
            continue
        if any(pattern_matches(pattern, path) for pattern in rule.paths):
            found.append(rule.id)
    return found


def pattern_matches(pattern: str, path: str) -> bool:
    want, have = pattern[1:].split("/"), path[1:].split("/")
    if want[-1] == "**":
        return have[: len(want) - 1] == want[:-1] or (
            len(have) >= len(want) - 1
            and all(w in ("*", h) for w, h in zip(want[:-1], have, strict=False))
        )
    return len(want) == len(have) and all(w in ("*", h) for w, h in zip(want, have, strict=True))


@pytest.mark.parametrize("count", [1, 5, 8, 9, 40, 300])
def test_buckets_of_any_size_find_the_matching_rules_in_order(count: int) -> None:
    rng = random.Random(count)
    rules = rules_on_one_path(count, rng)
    index = compile_policies("v", rules, ["p"]).index
    for method in (*METHODS, "PATCH"):
        for path in ("/shared/x", "/shared/y", "/shared/x/deeper", "/other"):
            found = [rule.id for rule in index.lookup(method, "h.example.com", path).rules]
            assert found == expected(rules, method, path), (method, path)
