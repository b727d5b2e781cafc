"""Introspection in the decision path: opaque tokens, high_risk rules, the memo, telemetry.

Decided through ``app.pipeline.authorize`` with a real TokenVerifier: JWTs of issuer A (keys
from a local IdP) and issuer B (no introspection), opaque tokens introspected at A's scripted
authorization server (introspection_support.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry

from app.decision import Decision
from app.decision_id import new_decision_id
from app.identity.introspection import IntrospectionOutcome, Introspector
from app.identity.introspection_client import ClientCredentials, IntrospectionClient
from app.identity.jws import looks_like_jws
from app.identity.principal import principal_from_claims
from app.identity.token_cache import TokenCache
from app.identity.verify import TokenVerifier, build_key_sources
from app.pipeline import authorize
from app.policy.evaluate import PolicyInput
from app.policy.explain import explain, render_text
from app.policy.loader import load_policy_dir
from app.policy.problem import PolicyLoadError
from app.reasons import Reason
from app.request import make_context
from app.settings import Issuer, Settings
from app.state import RuntimeState
from app.telemetry.hub import Telemetry
from tests.unit.identity.identity_support import (
    NOW,
    FakeClock,
    IdpServer,
    jwks,
    mint,
    public_jwk,
    rsa_key,
)
from tests.unit.identity.introspection_support import SECRET, FakeAuthorizationServer

AUDIENCE = "api"
ENDPOINT = "http://127.0.0.1:9/introspect"  # never dialled: the MockTransport answers
POLICY = {
    "apiVersion": "ztauthz/v1",
    "kind": "Policy",
    "metadata": {"name": "p"},
    "spec": {
        "rules": [
            {
                "id": "read",
                "effect": "allow",
                "match": {"methods": ["GET"], "paths": ["/invoices/**"]},
            },
            {
                "id": "payouts",
                "effect": "allow",
                "high_risk": True,
                "match": {"methods": ["GET"], "paths": ["/payouts/**"]},
            },
        ]
    },
}


@pytest.fixture(scope="module")
def idp() -> Iterator[IdpServer]:
    with IdpServer.running() as server:
        server.publish(jwks(public_jwk(rsa_key("a"), "a")))
        server.publish(jwks(public_jwk(rsa_key("b"), "b")), base="/b")
        yield server


@dataclass
class World:
    a: str
    b: str
    server: FakeAuthorizationServer
    state: RuntimeState
    introspector: Introspector

    def jwt(self, issuer: str, sub: str = "user-1") -> str:
        key, kid = (rsa_key("a"), "a") if issuer == self.a else (rsa_key("b"), "b")
        payload = {
            "iss": issuer,
            "aud": AUDIENCE,
            "sub": sub,
            "iat": int(NOW),
            "exp": int(NOW) + 300,
        }
        return mint(key, "RS256", payload, kid)

    def answer(self, token: str, active: bool = True, **claims: Any) -> None:
        document: dict[str, Any] = {"active": active}
        if active:
            document |= {"iss": self.a, "aud": AUDIENCE, "sub": "user-1", "iat": int(NOW)}
            document |= {"exp": int(NOW) + 300, "scope": "read"}
        self.server.answers[token] = document | claims

    async def decide(self, path: str, token: str, now: float = NOW) -> Decision:
        ctx = make_context("GET", "api.example", path, {"authorization": f"Bearer {token}"})
        return await authorize(ctx, self.state, now, new_decision_id())


def issuers(a: str, b: str) -> list[Issuer]:
    introspection = {
        "endpoint": ENDPOINT,
        "client_id": "ztauthz",
        "auth": "client_secret_basic",
        "client_secret_env": "UNUSED",
        "high_risk_jwts": True,
        "cache_ttl": "30s",
    }
    return [
        Issuer.model_validate(
            {"issuer": a, "audiences": [AUDIENCE], "introspection": introspection}
        ),
        Issuer.model_validate({"issuer": b, "audiences": [AUDIENCE]}),
    ]


@pytest.fixture
async def world(idp: IdpServer, tmp_path: Path) -> AsyncIterator[World]:
    a, b = idp.url, idp.url + "/b"
    both = issuers(a, b)
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text(yaml.safe_dump(POLICY), encoding="utf-8")
    server = FakeAuthorizationServer()
    clock = FakeClock()
    async with httpx.AsyncClient(trust_env=False) as client:
        sources = build_key_sources(both, client, clock)
        for source in sources.values():
            assert await source.refresh()
        settings = both[0].introspection
        assert settings is not None
        introspector = Introspector(
            both[0],
            IntrospectionClient(
                a, settings, ClientCredentials("ztauthz", SECRET), server.transport()
            ),
            client,
            clock,
        )
        verifier = TokenVerifier(both, sources, 8192, TokenCache(100), {a: introspector})
        state = RuntimeState(
            settings=Settings.model_validate({"issuers": [i.model_dump() for i in both]}),
            verifier=verifier,
            policies=load_policy_dir(tmp_path / "policies"),
        )
        try:
            yield World(a, b, server, state, introspector)
        finally:
            await introspector.aclose()
            for source in sources.values():
                await source.aclose()


async def test_an_opaque_token_is_allowed_by_its_introspection(world: World) -> None:
    world.answer("opaque-1", sub="sam")
    decision = await world.decide("/invoices/1", "opaque-1")
    assert decision.allow and decision.principal is not None
    assert (decision.principal.issuer, decision.principal.subject) == (world.a, "sam")


async def test_an_inactive_opaque_token_is_unauthenticated(world: World) -> None:
    decision = await world.decide("/invoices/1", "opaque-unknown")
    assert (decision.allow, decision.reason, decision.status) == (False, Reason.TOKEN_INACTIVE, 401)


async def test_opaque_tokens_are_malformed_where_no_issuer_takes_them(
    world: World, idp: IdpServer
) -> None:
    verifier = world.state.verifier
    plain = TokenVerifier(issuers(world.a, world.b), verifier._sources, 8192)
    state = RuntimeState(
        settings=world.state.settings, verifier=plain, policies=world.state.policies
    )
    world.answer("opaque-1")
    ctx = make_context("GET", "api.example", "/invoices/1", {"authorization": "Bearer opaque-1"})
    decision = await authorize(ctx, state, NOW, new_decision_id())
    assert decision.reason is Reason.TOKEN_MALFORMED
    assert world.server.requests == [], "no token is sent anywhere"


async def test_a_high_risk_rule_asks_the_issuer_about_a_jwt_every_time(world: World) -> None:
    token = world.jwt(world.a)
    world.answer(token)
    assert (await world.decide("/invoices/1", token)).allow
    assert world.server.requests == [], "plain rules never introspect a JWT"
    for _ in range(2):
        decision = await world.decide("/payouts/1", token)
        assert decision.allow and decision.rule_id == "payouts"
    assert len(world.server.requests) == 2, "high_risk_max_age 0: asked on every request"
    world.answer(token, active=False)  # revoked at the issuer
    refused = await world.decide("/payouts/1", token)
    assert (refused.allow, refused.reason, refused.rule_id) == (
        False,
        Reason.TOKEN_INACTIVE,
        "payouts",
    )
    assert (await world.decide("/invoices/1", token)).allow, "plain rules still trust the JWT"


async def test_a_remembered_high_risk_decision_is_still_confirmed(world: World) -> None:
    token = world.jwt(world.a)
    world.answer(token)
    first = await world.decide("/payouts/1", token)
    assert first.allow
    world.answer(token, active=False)
    # The same principal and request line: the memo knows the allow, the issuer does not.
    assert (await world.decide("/payouts/1", token)).reason is Reason.TOKEN_INACTIVE


async def test_a_high_risk_rule_refuses_what_no_issuer_can_confirm(world: World) -> None:
    token = world.jwt(world.b)  # issuer B has no introspection
    assert (await world.decide("/invoices/1", token)).allow
    decision = await world.decide("/payouts/1", token)
    assert (decision.reason, decision.status) == (Reason.INTROSPECTION_REQUIRED, 403)


async def test_a_jwt_is_not_introspected_where_high_risk_jwts_is_off(world: World) -> None:
    """Issuer A takes opaque tokens; with high_risk_jwts off its JWTs are never sent to it."""
    assert world.introspector.settings.high_risk_jwts
    world.introspector.settings = world.introspector.settings.model_copy(
        update={"high_risk_jwts": False}
    )
    opaque, token = "opaque-1", world.jwt(world.a)
    world.answer(opaque)
    world.answer(token)
    assert (await world.decide("/payouts/1", opaque)).allow
    decision = await world.decide("/payouts/1", token)
    assert (decision.reason, decision.status) == (Reason.INTROSPECTION_REQUIRED, 403)
    assert [q["token"] for q in world.server.questions()] == [[opaque], [opaque]]


async def test_a_high_risk_rule_fails_closed_when_the_issuer_is_down(world: World) -> None:
    token = world.jwt(world.a)
    world.server.fail = httpx.ConnectError("down")
    decision = await world.decide("/payouts/1", token)
    assert (decision.reason, decision.status) == (Reason.INTROSPECTION_UNAVAILABLE, 503)


async def test_an_answer_about_another_subject_is_refused(world: World) -> None:
    token = world.jwt(world.a, sub="user-1")
    world.answer(token, sub="someone-else")
    decision = await world.decide("/payouts/1", token)
    assert decision.reason is Reason.TOKEN_CLAIMS_INVALID


@pytest.mark.parametrize(
    ("token", "jws"),
    [
        ("opaque-token_1", False),
        ("a.b.c", False),  # three segments, but the first is no JSON object
        ("eyJhbGciOiJSUzI1NiJ9.e30.", True),
        ("eyJhbGciOiJSUzI1NiJ9.!!.x", False),
        ("W10.e30.sig", False),  # a JSON array header
    ],
)
def test_only_a_jws_shaped_token_takes_the_jwt_path(token: str, jws: bool) -> None:
    assert looks_like_jws(token) is jws


# -- policies ------------------------------------------------------------------------------------


def load(tmp_path: Path, spec: dict[str, Any]) -> Any:
    document = {
        "apiVersion": "ztauthz/v1",
        "kind": "Policy",
        "metadata": {"name": "p"},
        "spec": spec,
    }
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    return load_policy_dir(tmp_path)


def test_policy_level_high_risk_covers_its_token_allow_rules(tmp_path: Path) -> None:
    policies = load(
        tmp_path,
        {
            "high_risk": True,
            "rules": [
                {"id": "a", "effect": "allow"},
                {"id": "b", "effect": "allow", "high_risk": False},
                {"id": "c", "effect": "allow", "anonymous": True},
                {"id": "d", "effect": "deny"},
            ],
        },
    )
    assert policies.high_risk == {"a"}


@pytest.mark.parametrize(
    "rule",
    [
        {"id": "x", "effect": "deny", "high_risk": True},
        {"id": "x", "effect": "allow", "anonymous": True, "high_risk": True},
    ],
)
def test_high_risk_is_for_allow_rules_with_a_token(tmp_path: Path, rule: dict[str, Any]) -> None:
    with pytest.raises(PolicyLoadError) as refused:
        load(tmp_path, {"rules": [rule]})
    assert "only allow rules with a token can be high_risk" in str(refused.value)


def test_explain_says_a_high_risk_allow_needs_the_issuers_confirmation(world: World) -> None:
    principal = principal_from_claims(
        {"sub": "sam", "aud": AUDIENCE, "iat": int(NOW), "exp": int(NOW) + 60}, world.a, "g", "s"
    )
    policies = world.state.policies
    for path, said in (("/payouts/1", True), ("/invoices/1", False)):
        request = PolicyInput(method="GET", host="api.example", path=path, headers={})
        text = render_text(explain(policies, request, principal, NOW), principal, NOW)
        assert ("high-risk: the token's issuer must also confirm" in text) is said
        assert "allow payouts (p, " in text and "[high-risk]" in text


# -- telemetry -----------------------------------------------------------------------------------


def test_introspections_are_counted_timed_and_failures_announced(world: World) -> None:
    telemetry = Telemetry.create(world.state.settings)
    registry: CollectorRegistry = telemetry.metrics.registry

    def count(outcome: str) -> float:
        value = registry.get_sample_value(
            "ztauthz_introspections_total", {"issuer": world.a, "outcome": outcome}
        )
        return -1.0 if value is None else value

    def events(name: str) -> float:
        return registry.get_sample_value("ztauthz_events_total", {"event": name}) or 0.0

    assert count("active") == 0 and count("error") == 0  # explicit zeros, up front
    telemetry.introspected(IntrospectionOutcome(world.a, "active", 0.02))
    telemetry.introspected(IntrospectionOutcome(world.a, "error", 0.5, "down", changed=True))
    telemetry.introspected(IntrospectionOutcome(world.a, "error", 0.5, "down"))
    telemetry.introspected(IntrospectionOutcome(world.a, "inactive", 0.01, changed=True))
    assert (count("active"), count("error"), count("inactive")) == (1, 2, 1)
    assert events("introspection_failing") == 1 and events("introspection_recovered") == 1
    observed = registry.get_sample_value(
        "ztauthz_introspection_duration_seconds_count", {"issuer": world.a}
    )
    assert observed == 4
    telemetry.close()


async def test_opaque_tokens_never_touch_the_verified_token_cache(world: World) -> None:
    cache = world.state.verifier.cache
    assert cache is not None
    world.answer("opaque-1")
    for _ in range(3):
        assert (await world.decide("/invoices/1", "opaque-1")).allow
    assert (cache.hits, cache.misses) == (0, 0)
    assert len(world.server.requests) == 1, "the introspection cache answered the rest"
