"""The decision memo (app/policy/memo.py) never changes a decision.

Property check in the style of test_policy_equivalence.py: random policy sets (plain rules
mixed with time windows, named grants, CEL conditions and step-up rules, sometimes a dry-run
policy) and random request lines, decided through ``app.pipeline.authorize`` at random moments
of one day. Principals come from real tokens verified by a real TokenVerifier (keys from a
real local IdP, a TokenCache), so a token used again hands back the same Principal object and
the memo is asked, as in production. Every decision made with the one long-lived
RuntimeState (its memo filling and answering) must equal the decision made with a fresh state
(an empty memo) at the same moment for the same principal object.

Focused tests: what is never remembered, that the memo keys on the Principal object and the
compiled policies, that a reload starts a new memo, that an expired token is refused however
much the memo knows, and that the memo stays bounded.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from app.decision import Decision
from app.decision_id import new_decision_id
from app.identity.token_cache import TokenCache
from app.identity.verify import TokenVerifier, build_key_sources
from app.pipeline import authorize
from app.policy.evaluate import PolicyInput
from app.policy.loader import load_policy_dir
from app.policy.memo import DecisionMemo, eligible
from app.reasons import Reason
from app.request import make_context
from app.settings import Settings
from app.state import RuntimeState
from tests.unit.identity.identity_support import (
    FakeClock,
    IdpServer,
    jwks,
    make_issuer,
    mint,
    public_jwk,
    rsa_key,
)

DAY_START = 1_795_651_200.0  # 2026-11-26T00:00:00Z
DAY = 86_400
KID = "memo-1"
AUDIENCE = "api"
LEEWAY = 30.0
POLICY_HOSTS = ["a.example.com", "*.example.com"]
REQUEST_HOSTS = ["a.example.com", "b.example.com", "example.com"]
METHODS = ["GET", "POST", "DELETE"]
SEGMENTS = ["a", "b", "c"]
GROUPS = ["g1", "g2", "g3"]
SCOPES = ["s1", "s2"]
TENANTS = ["acme", "globex"]
SUBJECTS = ["sam", "kim"]
GRANT_NAMES = ["jit-a", "jit-b"]
CONDITIONS = [
    'request.method == "GET"',
    '"g1" in subject.groups',
    'subject.claims.org.tenant == "acme"',  # an error when the claim is missing
    "time.now.getHours() >= 12",
    '"jit-a" in subject.grants',
]


# --- the world: a real IdP, real tokens, a real verifier ---------------------------------------


@pytest.fixture(scope="module")
def idp() -> Iterator[IdpServer]:
    with IdpServer.running() as server:
        server.publish(jwks(public_jwk(rsa_key(KID), KID)))
        yield server


@dataclass
class World:
    idp: IdpServer
    verifier: TokenVerifier
    tmp_path: Path

    def token(self, ttl: float = DAY + 3600, iat: float = DAY_START, **claims: Any) -> str:
        payload = {
            "iss": self.idp.url,
            "aud": AUDIENCE,
            "sub": "sam",
            "iat": int(iat),
            "exp": int(iat + ttl),
            **claims,
        }
        return mint(rsa_key(KID), "RS256", payload, KID)

    def state(self, policies_dir: Path, candidate_dir: Path | None = None) -> RuntimeState:
        settings = Settings.model_validate(
            {
                "issuers": [{"issuer": self.idp.url, "audiences": [AUDIENCE]}],
                "policies": self.tmp_path,
            }
        )
        return RuntimeState(
            settings=settings,
            verifier=self.verifier,
            policies=load_policy_dir(policies_dir),
            candidate=None if candidate_dir is None else load_policy_dir(candidate_dir),
        )

    def write(self, name: str, *docs: dict[str, Any]) -> Path:
        root = self.tmp_path / name
        root.mkdir()
        (root / "policies.yaml").write_text(yaml.safe_dump_all(list(docs)), encoding="utf-8")
        return root


@pytest.fixture
async def world(idp: IdpServer, tmp_path: Path) -> AsyncIterator[World]:
    issuer = make_issuer(
        idp.url,
        audiences=[AUDIENCE],
        max_token_lifetime=timedelta(days=2),
        leeway=timedelta(seconds=LEEWAY),
        jwks={"max_staleness": 3 * DAY},
    )
    clock = FakeClock(DAY_START)
    async with httpx.AsyncClient(trust_env=False) as client:
        sources = build_key_sources([issuer], client, clock)
        keys = sources[idp.url]
        try:
            assert await keys.refresh(), keys.last_error
            verifier = TokenVerifier([issuer], sources, 8192, TokenCache(1000))
            yield World(idp, verifier, tmp_path)
        finally:
            await keys.aclose()


async def decide_once(
    state: RuntimeState, token: str | None, method: str, host: str, path: str, now: float
) -> Decision:
    headers = {} if token is None else {"authorization": f"Bearer {token}"}
    decision_id = new_decision_id()
    decision = await authorize(make_context(method, host, path, headers), state, now, decision_id)
    assert decision.decision_id == decision_id  # a remembered decision is made anew
    return decision


def outcome(decision: Decision) -> tuple[Any, ...]:
    return (
        decision.allow,
        decision.reason,
        decision.rule_id,
        decision.policy,
        decision.grants,
        decision.step_up,
        decision.policy_version,
        decision.dry_run,
        decision.candidate,
    )


def policy(name: str, rules: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "ztauthz/v1",
        "kind": "Policy",
        "metadata": {"name": name},
        "spec": {"rules": rules, **spec},
    }


def grant(name: str, start: float, hours: int, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "ztauthz/v1",
        "kind": "Grant",
        "metadata": {"name": name},
        "spec": {
            "not_before": datetime.fromtimestamp(start, UTC).isoformat(),
            "expires": datetime.fromtimestamp(start + hours * 3600, UTC).isoformat(),
            "approved_by": "approver",
            "reason": "test",
            **spec,
        },
    }


# --- random inputs -----------------------------------------------------------------------------


def random_pattern(rng: random.Random, deny: bool) -> str:
    first = rng.choice(SEGMENTS if deny else [*SEGMENTS, "*"])  # few blanket denies
    segments = [first] + [rng.choice([*SEGMENTS, "*"]) for _ in range(rng.randint(0, 1))]
    if rng.random() < 0.3:
        segments.append("**")
    return "/" + "/".join(segments)


@dataclass(frozen=True)
class Mix:
    """How the random policies are made."""

    conditions: float  # each condition beyond the request line and the subject
    groups: float  # a subject's groups_any
    dry_run: float  # a policy document in dry-run mode
    elevating: bool  # grants of extra groups or scopes, besides named accesses


ALL_FEATURES = Mix(conditions=0.15, groups=0.5, dry_run=0.08, elevating=False)
# Mostly plain rules on groups and grants that add groups: where time enters plain rules.
ELEVATING = Mix(conditions=0.05, groups=0.9, dry_run=0.0, elevating=True)


def random_rule(rng: random.Random, rule_id: str, mix: Mix) -> dict[str, Any]:
    """A rule; plain unless it draws a time window, a condition, a grant or step-up."""
    rule: dict[str, Any] = {"id": rule_id, "effect": "deny" if rng.random() < 0.25 else "allow"}
    allow = rule["effect"] == "allow"
    match: dict[str, Any] = {
        "paths": sorted({random_pattern(rng, not allow) for _ in range(rng.randint(1, 2))})
    }
    if rng.random() < 0.6:
        match["methods"] = rng.sample(METHODS, rng.randint(1, 2))
    rule["match"] = match
    if rng.random() < mix.conditions:
        start = rng.randint(0, 22)
        rule["time_window"] = {
            "timezone": "UTC",
            "hours": f"{start:02d}:00-{rng.randint(start + 1, 24):02d}:00",
        }
    if rng.random() < mix.conditions:
        rule["when"] = rng.choice(CONDITIONS)
    if allow and rng.random() < 0.15:
        rule["anonymous"] = True
        return rule
    subject: dict[str, Any] = {}
    if rng.random() < mix.groups:
        subject["groups_any"] = rng.sample(GROUPS, rng.randint(1, 2))
    if rng.random() < 0.3:
        subject["scopes_all"] = rng.sample(SCOPES, rng.randint(1, 2))
    if rng.random() < 0.2:
        subject["claims"] = {"org.tenant": [rng.choice(TENANTS)]}
    if rng.random() < 0.15:
        subject["subjects_any"] = [rng.choice(SUBJECTS)]
    if subject:
        rule["subject"] = subject
    if allow and rng.random() < mix.conditions:
        rule["grant"] = rng.choice(GRANT_NAMES)
    if allow and rng.random() < mix.conditions:
        rule["auth"] = rng.choice(
            [{"amr_all": ["mfa"]}, {"acr_any": ["high", "max"]}, {"max_age": "10m"}]
        )
    return rule


def random_grants(rng: random.Random, mix: Mix) -> list[dict[str, Any]]:
    """Grants active for a few hours of the day: named accesses (``grant:``) and, when
    ``mix.elevating``, mostly extra groups or scopes."""
    grants = []
    for number in range(rng.randint(2, 5) if mix.elevating else rng.randint(1, 4)):
        start = DAY_START + rng.randint(0, 20) * 3600
        who: dict[str, Any] = (
            {"subject": rng.choice(SUBJECTS)}
            if rng.random() < 0.5
            else {"group": rng.choice(GROUPS)}
        )
        what: dict[str, Any] = {"grant": rng.choice(GRANT_NAMES)}
        if mix.elevating and rng.random() < 0.8:
            what = (
                {"groups": rng.sample(GROUPS, 1)}
                if rng.random() < 0.7
                else {"scopes": rng.sample(SCOPES, 1)}
            )
        grants.append(grant(f"grant-{number}", start, rng.randint(1, 8), **who, **what))
    return grants


def write_random_policies(rng: random.Random, root: Path, mix: Mix) -> None:
    root.mkdir()
    serial = 0
    for file_number in range(rng.randint(1, 2)):
        docs = []
        for doc_number in range(rng.randint(1, 2)):
            spec: dict[str, Any] = {}
            if rng.random() < 0.4:
                spec["hosts"] = rng.sample(POLICY_HOSTS, 1)
            if rng.random() < mix.dry_run:
                spec["mode"] = "dry-run"
            rules = []
            for _ in range(rng.randint(2, 10)):
                serial += 1
                rules.append(random_rule(rng, f"r{serial}", mix))
            docs.append(policy(f"p{file_number}-{doc_number}", rules, **spec))
        (root / f"f{file_number}.yaml").write_text(yaml.safe_dump_all(docs), encoding="utf-8")
    grants = yaml.safe_dump_all(random_grants(rng, mix))
    (root / "grants.yaml").write_text(grants, encoding="utf-8")


def random_tokens(world: World, rng: random.Random, count: int) -> list[str | None]:
    tokens: list[str | None] = [None]  # anonymous requests too
    for number in range(count):
        claims: dict[str, Any] = {
            "sub": rng.choice(SUBJECTS),
            "jti": f"t{number}",
            "groups": rng.sample(GROUPS, rng.randint(0, 2)),
            "scope": " ".join(rng.sample(SCOPES, rng.randint(0, 2))),
        }
        if rng.random() < 0.7:
            claims["org"] = {"tenant": rng.choice(TENANTS)}
        if rng.random() < 0.6:
            claims["acr"] = rng.choice(["low", "high"])
        if rng.random() < 0.6:
            claims["amr"] = rng.sample(["pwd", "mfa"], rng.randint(1, 2))
        if rng.random() < 0.6:
            claims["auth_time"] = int(DAY_START) + rng.randint(0, DAY - 1)
        tokens.append(world.token(**claims))
    return tokens


def random_lines(rng: random.Random, count: int) -> list[tuple[str, str, str]]:
    lines: set[tuple[str, str, str]] = set()
    while len(lines) < count:
        segments = [rng.choice([*SEGMENTS, "d"]) for _ in range(rng.randint(1, 3))]
        lines.add((rng.choice(METHODS), rng.choice(REQUEST_HOSTS), "/" + "/".join(segments)))
    return sorted(lines)


async def compare_memo_with_fresh_states(
    world: World, seed: int, mix: Mix
) -> tuple[list[str], int, set[Reason]]:
    """Decide random requests with one long-lived state and with a fresh state each time:
    (mismatches, decisions the memo should have answered, reasons seen)."""
    rng = random.Random(seed)
    root = world.tmp_path / f"seed{seed}-{mix.elevating}"
    write_random_policies(rng, root, mix)
    state = world.state(root)
    tokens = random_tokens(world, rng, 5)
    lines = random_lines(rng, 10)
    mismatches: list[str] = []
    reasons: set[Reason] = set()
    seen: set[tuple[int, str, str, str]] = set()
    repeats = 0
    for _ in range(400):
        token = rng.choice(tokens)
        method, host, path = rng.choice(lines)
        now = DAY_START + rng.randint(0, DAY - 1)
        remembered = await decide_once(state, token, method, host, path, now)
        fresh = await decide_once(dataclasses.replace(state), token, method, host, path, now)
        assert remembered.principal is fresh.principal  # the token cache's one object
        reasons.add(fresh.reason)
        if outcome(remembered) != outcome(fresh):
            at = datetime.fromtimestamp(now, UTC).time()
            mismatches.append(
                f"seed {seed}: {method} {host}{path} at {at} as {token and tokens.index(token)}: "
                f"memo {outcome(remembered)} != fresh {outcome(fresh)}"
            )
        principal = fresh.principal
        if principal is not None:
            key = (id(principal), method, host, path)
            if key in seen and eligible(state.policies, PolicyInput(method, host, path), principal):
                repeats += 1
            seen.add(key)
    return mismatches, repeats, reasons


# --- the property ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(30))
async def test_remembered_decisions_equal_fresh_decisions(world: World, seed: int) -> None:
    mismatches, _, reasons = await compare_memo_with_fresh_states(world, seed, ALL_FEATURES)
    assert not mismatches, "\n".join(mismatches[:5])
    assert len(reasons) >= 2, seed  # the generator is not degenerate


async def test_the_property_exercises_the_memo(world: World) -> None:
    """Across seeds, the memo answers many decisions, for plain allows and denies alike."""
    total = 0
    reasons: set[Reason] = set()
    for seed in range(10):
        _, repeats, seen = await compare_memo_with_fresh_states(world, seed, ALL_FEATURES)
        total += repeats
        reasons |= seen
    assert total >= 200
    assert {Reason.ALLOWED, Reason.DENIED_BY_RULE, Reason.NO_MATCHING_RULE} <= reasons


async def test_remembered_decisions_equal_fresh_decisions_with_elevating_grants(
    world: World,
) -> None:
    mismatches: list[str] = []
    for seed in range(10):
        found, _, _ = await compare_memo_with_fresh_states(world, seed, ELEVATING)
        mismatches += found
    assert not mismatches, "\n".join(mismatches[:5])


# --- focused -----------------------------------------------------------------------------------

READ = {"id": "read", "effect": "allow", "match": {"methods": ["GET"], "paths": ["/a/**"]}}


async def test_an_expired_group_grant_stops_allowing(world: World) -> None:
    rule = {**READ, "subject": {"groups_any": ["admins"]}}
    root = world.write(
        "grants",
        policy("p", [rule]),
        grant("admins-for-an-hour", DAY_START + 9 * 3600, 1, subject="sam", groups=["admins"]),
    )
    state, token = world.state(root), world.token()
    during = await decide_once(state, token, "GET", "a.example.com", "/a/1", DAY_START + 9.5 * 3600)
    assert (during.allow, during.grants) == (True, ("admins-for-an-hour",))
    after = await decide_once(state, token, "GET", "a.example.com", "/a/1", DAY_START + 11 * 3600)
    assert (after.allow, after.reason) == (False, Reason.NO_MATCHING_RULE)


async def test_only_principals_a_grant_could_widen_are_kept_out_of_the_memo(
    world: World,
) -> None:
    rule = {**READ, "subject": {"groups_any": ["admins"]}}
    root = world.write(
        "grants-for-sam",
        policy("p", [rule]),
        grant("admins-for-an-hour", DAY_START + 9 * 3600, 1, subject="sam", groups=["admins"]),
    )
    state = world.state(root)
    sam, ann = world.token(), world.token(sub="ann", groups=["admins"])
    for _ in range(2):
        await decide_once(state, sam, "GET", "a.example.com", "/a/1", DAY_START + 9.5 * 3600)
    assert len(state.memo) == 0  # sam's groups depend on the clock
    for _ in range(2):
        ann_decision = await decide_once(state, ann, "GET", "a.example.com", "/a/1", DAY_START)
    assert ann_decision.allow and len(state.memo) == 1  # no grant names ann: remembered


@pytest.mark.parametrize(
    "condition",
    [
        {"time_window": {"timezone": "UTC", "hours": "00:00-12:00"}},
        {"when": '"g1" in subject.groups'},
        {"grant": "jit-a"},
        {"auth": {"amr_all": ["mfa"]}},
        {"device": {"managed": True}},
    ],
    ids=["time_window", "when", "grant", "auth", "device"],
)
async def test_a_request_matched_by_a_non_plain_rule_is_never_remembered(
    world: World, condition: dict[str, Any]
) -> None:
    # A plain rule matches too, and decides the same every time: still not remembered.
    plain_deny = {"id": "plain", "effect": "deny", "match": {"methods": ["GET"], "paths": ["/a/x"]}}
    root = world.write("nonplain", policy("p", [plain_deny, {**READ, "id": "cond", **condition}]))
    state, token = world.state(root), world.token(groups=["g1"], amr=["mfa"])
    for hour in (1, 1, 13, 13):
        for path in ("/a/x", "/a/y"):
            await decide_once(state, token, "GET", "a.example.com", path, DAY_START + hour * 3600)
    assert len(state.memo) == 0
    # The same state remembers requests only plain rules match.
    decided = await decide_once(state, token, "GET", "a.example.com", "/b", DAY_START)
    assert decided.reason is Reason.NO_MATCHING_RULE
    assert len(state.memo) == 1


async def test_dry_run_and_candidate_policies_are_never_remembered(world: World) -> None:
    live = world.write("live", policy("p", [READ]))
    shadowed = world.write(
        "shadowed", policy("p", [READ]), policy("shadow", [{**READ, "id": "s"}], mode="dry-run")
    )
    candidate = world.write("candidate", policy("p", [{**READ, "effect": "deny"}]))
    token = world.token()
    for state in (world.state(shadowed), world.state(live, candidate)):
        for _ in range(3):
            decision = await decide_once(state, token, "GET", "a.example.com", "/a/1", DAY_START)
            assert decision.allow
            assert decision.dry_run is not None or decision.candidate is not None
        assert len(state.memo) == 0
    plain = world.state(live)
    await decide_once(plain, token, "GET", "a.example.com", "/a/1", DAY_START)
    assert len(plain.memo) == 1


async def test_a_plain_decision_is_remembered_per_principal_object(world: World) -> None:
    root = world.write("plain", policy("p", [READ]))
    state, token = world.state(root), world.token()
    first = await decide_once(state, token, "GET", "a.example.com", "/a/1", DAY_START)
    again = await decide_once(state, token, "GET", "a.example.com", "/a/1", DAY_START + 60)
    assert len(state.memo) == 1  # the second decision came from the memo
    assert again.principal is first.principal
    assert outcome(again) == outcome(first)
    assert again.decision_id != first.decision_id
    # The token verified again (say, after a key rotation) is an equal, different Principal:
    # the memo does not answer for it.
    cache = world.verifier.cache
    assert cache is not None
    cache.clear()
    third = await decide_once(state, token, "GET", "a.example.com", "/a/1", DAY_START + 120)
    assert third.principal == first.principal
    assert third.principal is not first.principal
    assert len(state.memo) == 2
    # Other request lines are their own entries.
    await decide_once(state, token, "GET", "b.example.com", "/a/1", DAY_START)
    await decide_once(state, token, "POST", "a.example.com", "/a/1", DAY_START)
    await decide_once(state, token, "GET", "a.example.com", "/a/2", DAY_START)
    assert len(state.memo) == 5


async def test_the_memo_answers_only_for_the_policies_it_was_filled_with(world: World) -> None:
    old = world.write("old", policy("p", [READ]))
    new = world.write("new", policy("p", [{**READ, "id": "no-reads", "effect": "deny"}]))
    state, token = world.state(old), world.token()
    before = await decide_once(state, token, "GET", "a.example.com", "/a/1", DAY_START)
    assert before.allow and len(state.memo) == 1
    # A reload, as Runtime.replace_policies makes it: a new state with a new, empty memo.
    reloaded = dataclasses.replace(state, policies=load_policy_dir(new))
    assert reloaded.memo is not state.memo
    assert len(reloaded.memo) == 0
    after = await decide_once(reloaded, token, "GET", "a.example.com", "/a/1", DAY_START)
    assert after.principal is before.principal
    assert (after.allow, after.reason, after.rule_id) == (False, Reason.DENIED_BY_RULE, "no-reads")
    assert after.policy_version != before.policy_version
    # The old memo itself refuses to answer for other compiled policies.
    request = PolicyInput("GET", "a.example.com", "/a/1")
    assert before.principal is not None
    assert state.memo.get(before.principal, state.policies, request, "x") is not None
    assert state.memo.get(before.principal, reloaded.policies, request, "x") is None


async def test_the_memo_never_outlives_the_token(world: World) -> None:
    root = world.write("expiry", policy("p", [READ]))
    state = world.state(root)
    token = world.token(ttl=600)
    allowed = await decide_once(state, token, "GET", "a.example.com", "/a/1", DAY_START + 500)
    assert allowed.allow and len(state.memo) == 1
    late = DAY_START + 600 + LEEWAY + 1
    refused = await decide_once(state, token, "GET", "a.example.com", "/a/1", late)
    assert (refused.allow, refused.reason) == (False, Reason.TOKEN_EXPIRED)
    assert len(state.memo) == 1  # it still knows the decision; the token cache decided
    # Not yet valid again before its iat either (the cached verification rechecks the clock).
    early = await decide_once(state, token, "GET", "a.example.com", "/a/1", DAY_START - 600)
    assert early.reason is Reason.TOKEN_NOT_YET_VALID


async def test_the_memo_is_bounded(world: World) -> None:
    root = world.write("bounded", policy("p", [READ]))
    state, token = world.state(root), world.token()
    for number in range(DecisionMemo.MAX_ENTRIES):
        await decide_once(state, token, "GET", "a.example.com", f"/a/{number}", DAY_START)
    assert len(state.memo) == DecisionMemo.MAX_ENTRIES
    await decide_once(state, token, "GET", "a.example.com", "/a/0", DAY_START)  # a hit
    assert len(state.memo) == DecisionMemo.MAX_ENTRIES
    extra = await decide_once(state, token, "GET", "a.example.com", "/a/extra", DAY_START)
    assert extra.allow
    assert len(state.memo) == 1  # full: it started again, with the newest decision
    first = PolicyInput("GET", "a.example.com", "/a/0")
    assert extra.principal is not None
    assert state.memo.get(extra.principal, state.policies, first, "again") is None
