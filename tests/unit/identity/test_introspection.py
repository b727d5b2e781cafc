"""Introspector: cached within the bound, coalesced per token, fail closed, authenticated.

The authorization server is scripted behind httpx.MockTransport (introspection_support.py);
the requests ztauthz sends are checked as the server would see them. The interop tests
(tests/interop/test_introspection_envoy.py) do the same against oidc-provider through Envoy.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote_plus

import httpx
import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jwk
from joserfc import jwt as joserfc_jwt

from app.identity.errors import TokenError
from app.identity.introspection import (
    ACTIVE,
    CACHED,
    COALESCED,
    ERROR,
    INACTIVE,
    OVERLOADED,
    REFUSED,
    IntrospectionOutcome,
    Introspector,
)
from app.identity.introspection_client import ASSERTION_LIFETIME, ClientCredentials
from app.reasons import Reason
from tests.unit.identity.identity_support import NOW, FakeClock
from tests.unit.identity.introspection_support import (
    ENDPOINT,
    ISSUER,
    SECRET,
    FakeAuthorizationServer,
    active,
    introspecting_issuer,
    make_introspector,
)

TOKEN = "opaque-token-1"


@pytest.fixture
def server() -> FakeAuthorizationServer:
    return FakeAuthorizationServer()


@pytest.fixture
def outcomes() -> list[IntrospectionOutcome]:
    return []


@pytest.fixture
async def introspector(
    server: FakeAuthorizationServer, outcomes: list[IntrospectionOutcome]
) -> AsyncIterator[Introspector]:
    item = make_introspector(server, on_outcome=outcomes.append)
    yield item
    await item.aclose()


async def reason_of(introspector: Introspector, token: str, now: float = NOW) -> Reason:
    with pytest.raises(TokenError) as refused:
        await introspector.introspect(token, now)
    return refused.value.reason


# -- answers ---------------------------------------------------------------------------------


async def test_an_active_token_becomes_the_principal_of_its_answer(
    server: FakeAuthorizationServer, introspector: Introspector
) -> None:
    server.answers[TOKEN] = active(groups=["admins"])

    principal = await introspector.introspect(TOKEN, NOW)

    assert (principal.issuer, principal.subject, principal.client_id) == (ISSUER, "user-1", "app")
    assert principal.scopes == {"read", "write"}
    assert principal.groups == {"admins"}
    assert principal.expires_at == int(NOW) + 300
    assert "active" not in principal.claims and "token_type" not in principal.claims
    [question] = server.questions()
    assert question == {"token": [TOKEN], "token_type_hint": ["access_token"]}


async def test_an_inactive_token_is_refused_as_inactive(introspector: Introspector) -> None:
    assert await reason_of(introspector, "unknown-token") is Reason.TOKEN_INACTIVE


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (active(iss="https://other.example"), Reason.TOKEN_ISSUER_UNKNOWN),
        (active(aud="other-api"), Reason.TOKEN_AUDIENCE_INVALID),
        (active(exp=int(NOW) - 60), Reason.TOKEN_EXPIRED),
        (active(token_type="DPoP"), Reason.TOKEN_TYPE_INVALID),
        (active(scope="read  write"), Reason.TOKEN_CLAIMS_INVALID),
        (active(sub=None), Reason.TOKEN_CLAIMS_MISSING),
    ],
)
async def test_an_active_answer_is_held_to_the_rules_of_a_jwt(
    server: FakeAuthorizationServer,
    introspector: Introspector,
    outcomes: list[IntrospectionOutcome],
    answer: dict[str, Any],
    reason: Reason,
) -> None:
    server.answers[TOKEN] = answer
    assert await reason_of(introspector, TOKEN) is reason
    assert await reason_of(introspector, TOKEN) is reason
    assert len(server.questions()) == 2, "a refused answer is never remembered"
    assert [o.outcome for o in outcomes] == [REFUSED, REFUSED]


# -- the cache -------------------------------------------------------------------------------


async def test_an_active_answer_is_used_for_cache_ttl_then_asked_again(
    server: FakeAuthorizationServer, outcomes: list[IntrospectionOutcome]
) -> None:
    introspector = make_introspector(
        server, introspecting_issuer(cache_ttl="30s"), on_outcome=outcomes.append
    )
    server.answers[TOKEN] = active()
    first = await introspector.introspect(TOKEN, NOW)
    assert await introspector.introspect(TOKEN, NOW + 29.9) is first
    assert len(server.questions()) == 1
    # The provider revokes it: the cached answer still holds until the bound, then no more.
    server.answers[TOKEN] = {"active": False}
    assert await reason_of(introspector, TOKEN, NOW + 30) is Reason.TOKEN_INACTIVE
    assert len(server.questions()) == 2
    assert [o.outcome for o in outcomes] == [ACTIVE, CACHED, INACTIVE]
    await introspector.aclose()


async def test_an_answer_is_never_used_past_the_tokens_exp(server: FakeAuthorizationServer) -> None:
    introspector = make_introspector(server, introspecting_issuer(cache_ttl="5m"))
    server.answers[TOKEN] = active(exp=int(NOW) + 10)
    await introspector.introspect(TOKEN, NOW)
    await introspector.introspect(TOKEN, NOW + 9.9)
    assert len(server.questions()) == 1
    # At exp the entry is gone: the server is asked (it would say inactive by then).
    server.answers[TOKEN] = {"active": False}
    assert await reason_of(introspector, TOKEN, NOW + 10) is Reason.TOKEN_INACTIVE
    await introspector.aclose()


async def test_an_inactive_answer_is_remembered_as_a_refusal(
    server: FakeAuthorizationServer, introspector: Introspector
) -> None:
    assert await reason_of(introspector, TOKEN) is Reason.TOKEN_INACTIVE
    server.answers[TOKEN] = active()  # no server turns a revoked token active; still refused
    assert await reason_of(introspector, TOKEN, NOW + 1) is Reason.TOKEN_INACTIVE
    assert len(server.questions()) == 1


async def test_cache_ttl_zero_asks_every_time(server: FakeAuthorizationServer) -> None:
    introspector = make_introspector(server, introspecting_issuer(cache_ttl=0))
    server.answers[TOKEN] = active()
    for _ in range(3):
        await introspector.introspect(TOKEN, NOW)
    assert len(server.questions()) == 3
    await introspector.aclose()


async def test_max_age_asks_again_when_the_answer_is_older(
    server: FakeAuthorizationServer, introspector: Introspector
) -> None:
    server.answers[TOKEN] = active()
    await introspector.introspect(TOKEN, NOW)
    await introspector.introspect(TOKEN, NOW + 5, max_age=10)
    assert len(server.questions()) == 1
    await introspector.introspect(TOKEN, NOW + 5, max_age=0)
    assert len(server.questions()) == 2


async def test_the_cache_keeps_digests_never_tokens(
    server: FakeAuthorizationServer, introspector: Introspector
) -> None:
    server.answers[TOKEN] = active()
    await introspector.introspect(TOKEN, NOW)
    keys = list(introspector.cache._entries)
    assert len(keys) == 1 and isinstance(keys[0], bytes) and len(keys[0]) == 32
    assert TOKEN.encode() not in keys[0]


async def test_a_jti_that_echoes_the_token_is_dropped(
    server: FakeAuthorizationServer, introspector: Introspector
) -> None:
    server.answers[TOKEN] = active(jti=TOKEN)
    principal = await introspector.introspect(TOKEN, NOW)
    assert principal.token_id is None and TOKEN not in principal.claims.values()


# -- failing closed --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "broken",
    [
        {"status": 500},
        {"status": 401},  # our client authentication was refused
        {"body": b"<html>maintenance</html>"},
        {"body": b'{"active": "true"}'},
        {"body": b"[true]"},
        {"fail": httpx.ConnectError("refused")},
        {"status": 302, "body": b"", "headers": {"location": "https://evil.example/"}},
    ],
    ids=["500", "401", "html", "string-active", "not-object", "unreachable", "redirect"],
)
async def test_no_usable_answer_fails_closed_and_is_not_remembered(
    server: FakeAuthorizationServer,
    introspector: Introspector,
    outcomes: list[IntrospectionOutcome],
    broken: dict[str, Any],
) -> None:
    server.answers[TOKEN] = active()
    for name, value in broken.items():
        setattr(server, name, value)
    assert await reason_of(introspector, TOKEN) is Reason.INTROSPECTION_UNAVAILABLE
    assert await reason_of(introspector, TOKEN) is Reason.INTROSPECTION_UNAVAILABLE
    assert len(server.questions()) == 2
    assert [o.outcome for o in outcomes] == [ERROR, ERROR]
    assert [o.changed for o in outcomes] == [True, False], "one event when failing starts"
    # The server answers again: allowed, and the recovery is reported once.
    server.status, server.body, server.fail, server.headers = 200, None, None, {}
    await introspector.introspect(TOKEN, NOW)
    assert outcomes[-1].outcome == ACTIVE and outcomes[-1].changed


async def test_a_slow_server_fails_closed_within_the_timeout(
    server: FakeAuthorizationServer,
) -> None:
    introspector = make_introspector(server, introspecting_issuer(timeout="0.2s"))
    server.gate = asyncio.Event()  # never set: the server never answers
    assert await reason_of(introspector, TOKEN) is Reason.INTROSPECTION_UNAVAILABLE
    await introspector.aclose()


async def test_an_oversized_answer_is_not_read(server: FakeAuthorizationServer) -> None:
    introspector = make_introspector(server, introspecting_issuer(max_bytes=1024))
    server.body = b'{"active": false, "pad": "' + b"x" * 4096 + b'"}'
    assert await reason_of(introspector, TOKEN) is Reason.INTROSPECTION_UNAVAILABLE
    await introspector.aclose()


# -- coalescing and bounds -------------------------------------------------------------------


async def test_concurrent_checks_of_one_token_ask_once(
    server: FakeAuthorizationServer,
    introspector: Introspector,
    outcomes: list[IntrospectionOutcome],
) -> None:
    server.answers[TOKEN] = active()
    server.gate = asyncio.Event()
    waiting = [asyncio.create_task(introspector.introspect(TOKEN, NOW)) for _ in range(20)]
    await asyncio.sleep(0.05)
    server.gate.set()
    principals = await asyncio.gather(*waiting)
    assert len(server.questions()) == 1
    assert all(p is principals[0] for p in principals)
    assert sorted(o.outcome for o in outcomes) == sorted([ACTIVE] + [COALESCED] * 19)


async def test_concurrent_failures_are_shared_and_not_remembered(
    server: FakeAuthorizationServer, introspector: Introspector
) -> None:
    server.status = 503
    server.gate = asyncio.Event()
    waiting = [asyncio.create_task(reason_of(introspector, TOKEN)) for _ in range(5)]
    await asyncio.sleep(0.05)
    server.gate.set()
    assert set(await asyncio.gather(*waiting)) == {Reason.INTROSPECTION_UNAVAILABLE}
    assert len(server.questions()) == 1
    assert await reason_of(introspector, TOKEN) is Reason.INTROSPECTION_UNAVAILABLE
    assert len(server.questions()) == 2


async def test_a_caller_giving_up_does_not_cancel_the_others(
    server: FakeAuthorizationServer, introspector: Introspector
) -> None:
    server.answers[TOKEN] = active()
    server.gate = asyncio.Event()
    quitter = asyncio.create_task(introspector.introspect(TOKEN, NOW))
    stayer = asyncio.create_task(introspector.introspect(TOKEN, NOW))
    await asyncio.sleep(0.05)
    quitter.cancel()
    server.gate.set()
    assert (await stayer).subject == "user-1"
    assert quitter.cancelled()


async def test_distinct_tokens_beyond_max_in_flight_are_refused_at_once(
    server: FakeAuthorizationServer, outcomes: list[IntrospectionOutcome]
) -> None:
    introspector = make_introspector(
        server, introspecting_issuer(max_in_flight=2), on_outcome=outcomes.append
    )
    server.gate = asyncio.Event()
    waiting = [asyncio.create_task(introspector.introspect(f"t{i}", NOW)) for i in range(2)]
    await asyncio.sleep(0.05)
    assert await reason_of(introspector, "t-third") is Reason.INTROSPECTION_UNAVAILABLE
    assert outcomes[-1].outcome == OVERLOADED
    server.gate.set()
    for task in waiting:
        with pytest.raises(TokenError):
            await task  # inactive: the script has no answer for them
    await introspector.aclose()


# -- the endpoint from discovery -------------------------------------------------------------


async def test_the_endpoint_comes_from_discovery(server: FakeAuthorizationServer) -> None:
    server.discovery = {"issuer": ISSUER, "introspection_endpoint": ENDPOINT}
    server.answers[TOKEN] = active()
    introspector = make_introspector(server, introspecting_issuer(endpoint=None))
    await introspector.start()
    assert (await introspector.introspect(TOKEN, NOW)).subject == "user-1"
    assert introspector.endpoint == ENDPOINT
    await introspector.aclose()


@pytest.mark.parametrize(
    "document",
    [
        None,  # no discovery document at all
        {"issuer": ISSUER},  # no introspection_endpoint
        {"issuer": "https://other.example", "introspection_endpoint": ENDPOINT},
        {"issuer": ISSUER, "introspection_endpoint": "http://as.example/introspect"},
    ],
    ids=["absent", "no-endpoint", "other-issuer", "plain-http"],
)
async def test_an_endpoint_discovery_cannot_vouch_for_fails_closed(
    server: FakeAuthorizationServer, document: dict[str, Any] | None
) -> None:
    server.discovery = document
    server.answers[TOKEN] = active()
    introspector = make_introspector(server, introspecting_issuer(endpoint=None))
    assert await reason_of(introspector, TOKEN) is Reason.INTROSPECTION_UNAVAILABLE
    assert server.questions() == [], "the token went nowhere"
    await introspector.aclose()


# -- client authentication -------------------------------------------------------------------


async def test_client_secret_basic_form_encodes_id_and_secret(
    server: FakeAuthorizationServer,
) -> None:
    issuer = introspecting_issuer(client_id="ztauthz:sidecar")
    creds = ClientCredentials("ztauthz:sidecar", secret=SECRET)
    introspector = make_introspector(server, issuer, credentials=creds)
    await reason_of(introspector, TOKEN)
    [request] = server.requests
    scheme, _, value = request.headers["authorization"].partition(" ")
    user, _, password = base64.b64decode(value).decode().partition(":")
    # RFC 6749 §2.3.1: each form-urlencoded, so the ':' in the id cannot split it.
    assert scheme == "Basic" and ":" not in user
    assert (unquote_plus(user), unquote_plus(password)) == ("ztauthz:sidecar", SECRET)
    await introspector.aclose()


@pytest.mark.parametrize("alg", ["ES256", "PS256", "Ed25519"])
async def test_private_key_jwt_sends_a_short_lived_assertion(
    server: FakeAuthorizationServer, alg: str
) -> None:
    key: jwk.ECKey | jwk.RSAKey | jwk.OKPKey
    if alg == "ES256":
        key = jwk.ECKey.generate_key("P-256")
    elif alg == "PS256":
        key = jwk.RSAKey.generate_key(2048)
    else:
        key = jwk.OKPKey.generate_key("Ed25519")
    issuer = introspecting_issuer(
        auth="private_key_jwt",
        client_secret_env=None,
        private_key_file="/unused",
        signing_alg=alg,
        key_id="k1",
    )
    introspector = make_introspector(
        server, issuer, credentials=ClientCredentials("ztauthz", key=key)
    )
    await reason_of(introspector, TOKEN)
    [request] = server.requests
    assert "authorization" not in request.headers
    [form] = server.questions()
    assert form["client_assertion_type"] == [
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    ]
    assertion = form["client_assertion"][0]
    assert jwt.get_unverified_header(assertion)["alg"] == alg
    public = jwk.import_key(key.as_dict(private=False))
    if alg == "Ed25519":  # PyJWT knows only the deprecated name: verified with joserfc
        claims = dict(joserfc_jwt.decode(assertion, public, algorithms=[alg]).claims)
        assert claims["aud"] == ISSUER
    else:  # verified by another library than the one that signed
        pyjwk = jwt.PyJWK(key.as_dict(private=False), algorithm=alg)
        claims = jwt.decode(assertion, pyjwk.key, algorithms=[alg], audience=ISSUER)
    assert claims["iss"] == claims["sub"] == "ztauthz"
    assert claims["exp"] - claims["iat"] == ASSERTION_LIFETIME
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 16
    assert jwt.get_unverified_header(assertion)["kid"] == "k1"
    await introspector.aclose()


async def test_neither_token_nor_secret_is_logged(
    server: FakeAuthorizationServer,
    introspector: Introspector,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    server.status = 500
    await reason_of(introspector, TOKEN)
    server.status = 200
    server.answers[TOKEN] = active()
    await introspector.introspect(TOKEN, NOW)
    text = caplog.text
    assert TOKEN not in text and SECRET not in text
    assert "introspection failing" in text  # there was something to log


async def test_a_changing_clock_never_extends_an_answer(
    server: FakeAuthorizationServer, introspector: Introspector
) -> None:
    server.answers[TOKEN] = active()
    await introspector.introspect(TOKEN, NOW)
    # A clock set back before the answer was received: the entry is not trusted.
    await introspector.introspect(TOKEN, NOW - 10)  # (within the issuer's leeway for iat)
    assert len(server.questions()) == 2


def test_clock_support_is_shared() -> None:
    assert FakeClock()() == NOW


async def test_answers_about_a_revoked_subject_can_be_forgotten(
    server: FakeAuthorizationServer, introspector: Introspector
) -> None:
    """The hook a revocation signal uses: the next check asks the issuer again."""
    server.answers["t-sam"] = active(sub="sam")
    server.answers["t-kim"] = active(sub="kim")
    for token in ("t-sam", "t-kim", "t-dead"):
        with contextlib.suppress(TokenError):
            await introspector.introspect(token, NOW)
    assert introspector.cache.discard(lambda p: p.subject == "sam") == 1
    await introspector.introspect("t-sam", NOW)
    await introspector.introspect("t-kim", NOW)
    assert await reason_of(introspector, "t-dead") is Reason.TOKEN_INACTIVE
    assert len(server.questions()) == 4, "only sam's answer was asked again"


@settings(max_examples=60, deadline=None)
@given(token=st.from_regex(r"[A-Za-z0-9\-._~+/]+=*", fullmatch=True))
def test_every_bearer_token_reaches_the_server_unchanged(token: str) -> None:
    """Whatever RFC 6750 b64token a client sends, the server is asked about exactly it."""

    async def ask() -> list[dict[str, list[str]]]:
        server = FakeAuthorizationServer()
        introspector = make_introspector(server)
        try:
            with contextlib.suppress(TokenError):
                await introspector.introspect(token, NOW)
        finally:
            await introspector.aclose()
        return server.questions()

    [question] = asyncio.run(ask())
    assert question["token"] == [token]
