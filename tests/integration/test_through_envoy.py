"""Requests through real Envoy (the shipped bootstrap) to real ztauthz and the echo upstream.

Every test runs over both transports (HTTP and gRPC ext_authz, see transport_support.py) with
the same expectations. Whether a request reached the upstream is read from the reply: only the
echo upstream answers with its JSON echo, and only a proxied reply carries Envoy's
x-envoy-upstream-service-time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app.dev.envoy import Transport, envoy_command, shipped_envoy_config, write_envoy_config
from app.dev.keys import DevKeys
from app.dev.ports import free_port
from app.dev.procs import HttpReady, ManagedProcess, ProcessGroup, TcpReady
from app.dev.stack import Reply, Stack, http_request, ztauthz_command
from app.dev.tokens import (
    DROP,
    forge_alg_none,
    forge_hs256_with_public_key,
    mint,
    standard_claims,
    tamper_payload,
    tamper_signature,
)
from app.reasons import Reason, describe
from app.transport.render import IDENTITY_HEADERS
from tests.integration.transport_support import direct_check

pytestmark = pytest.mark.integration

POLICIES = Path(__file__).resolve().parent / "policies"

Mint = Callable[..., str]
UNTRUSTED_ISSUER = "https://idp.untrusted.example"

FORGED = {
    "x-auth-subject": "admin",
    "x-auth-groups": "admins,finance",
    "x-auth-issuer": "https://evil.example",
    "x-auth-scopes": "invoices:read invoices:write",
    "x-auth-decision-id": "forged-decision",
    "x-auth-rule": "forged-rule",
}


def reached_upstream(reply: Reply) -> bool:
    body = reply.json()
    echoed = isinstance(body, dict) and "header_list" in body
    return echoed or "x-envoy-upstream-service-time" in reply.headers


def upstream_headers(reply: Reply) -> dict[str, str]:
    assert reached_upstream(reply), f"did not reach the upstream: {reply.status} {reply.body!r}"
    headers: dict[str, str] = reply.json()["headers"]
    return headers


def get(
    stack: Stack, path: str, token: str | None = None, method: str = "GET", **headers: str
) -> Reply:
    sent = dict(headers)
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    return http_request(stack.ports.envoy, method, path, sent)


# --- allow ------------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_valid_token_reaches_upstream_with_identity_headers(
    stack: Stack, token: Mint, alg: str
) -> None:
    reply = get(stack, "/invoices", token(alg=alg, subject=f"alice-{alg}"))
    assert reply.status == 200
    seen = upstream_headers(reply)
    assert seen["x-auth-subject"] == f"alice-{alg}"
    assert seen["x-auth-issuer"] == stack.issuer_url
    assert seen["x-auth-groups"] == "finance"
    assert seen["x-auth-scopes"] == "invoices:read"
    assert len(seen["x-auth-decision-id"]) >= 16
    assert reply.json()["path"] == "/invoices"


def test_groups_and_scopes_are_joined(stack: Stack, token: Mint) -> None:
    reply = get(
        stack,
        "/invoices/7",
        token(groups=["finance", "auditors"], scopes=["invoices:read", "invoices:write"]),
    )
    seen = upstream_headers(reply)
    assert sorted(seen["x-auth-groups"].split(",")) == ["auditors", "finance"]
    assert sorted(seen["x-auth-scopes"].split(" ")) == ["invoices:read", "invoices:write"]


def test_each_allow_has_its_own_decision_id(stack: Stack, token: Mint) -> None:
    bearer = token()
    ids = {upstream_headers(get(stack, "/invoices", bearer))["x-auth-decision-id"] for _ in "abc"}
    assert len(ids) == 3


# --- no smuggled identity ---------------------------------------------------------------------


@pytest.mark.parametrize("anonymous", [False, True], ids=["authenticated", "anonymous"])
def test_forged_identity_headers_never_reach_upstream(
    stack: Stack, token: Mint, anonymous: bool
) -> None:
    if anonymous:
        reply = get(stack, "/public/page", **FORGED)
    else:
        reply = get(stack, "/invoices", token(subject="bob"), **FORGED)
    assert reply.status == 200
    seen = upstream_headers(reply)
    for name, forged in FORGED.items():
        assert seen.get(name) != forged, name
        # The raw list too: no second copy of the header hides behind a joined value.
        assert all(v != forged for n, v in reply.json()["header_list"] if n == name), name
    if anonymous:
        assert not {"x-auth-subject", "x-auth-groups", "x-auth-issuer"} & seen.keys()
    else:
        assert seen["x-auth-subject"] == "bob"
        assert seen["x-auth-groups"] == "finance"


def test_envoy_strips_every_client_sent_x_auth_header(stack: Stack) -> None:
    # The first layer, on its own: ztauthz does not know x-auth-tenant, only Envoy's
    # header_mutation filter (prefix x-auth-) keeps it from the upstream.
    reply = get(stack, "/public/page", **{"x-auth-tenant": "acme", "X-Auth-Subject": "admin"})
    seen = upstream_headers(reply)
    assert "x-auth-tenant" not in seen
    assert "x-auth-subject" not in seen


def test_ztauthz_itself_names_every_identity_header_it_did_not_set(
    stack: Stack, transport: Transport
) -> None:
    # The second layer, without Envoy's own stripping: ztauthz's answer to an anonymous allow
    # asks Envoy to remove every identity header it does not set (HTTP:
    # x-envoy-auth-headers-to-remove, gRPC: OkHttpResponse.headers_to_remove).
    answer = direct_check(transport, stack.ports.check, "GET", "/public/page", FORGED)
    assert answer.status == 200
    removed = set(answer.headers_to_remove)
    set_here = {h for h in IDENTITY_HEADERS if h in answer.headers}
    assert removed | set_here == set(IDENTITY_HEADERS)
    assert not removed & set_here
    assert {"x-auth-subject", "x-auth-groups", "x-auth-issuer", "x-auth-scopes"} <= removed
    assert answer.headers["x-auth-decision-id"] != FORGED["x-auth-decision-id"]


# --- 401: every attack is refused before the upstream -----------------------------------------


@dataclass(frozen=True, slots=True)
class Attack:
    name: str
    reason: Reason
    build: Callable[[Stack, DevKeys], str]


def _claims(stack: Stack, **changes: Any) -> dict[str, Any]:
    claims = standard_claims(
        issuer=stack.issuer_url,
        audience=stack.audience,
        subject="mallory",
        groups=["finance"],
        scopes=["invoices:read"],
    )
    claims.update(changes)
    return claims


def _mint(stack: Stack, **kwargs: Any) -> str:
    base: dict[str, Any] = {
        "issuer": stack.issuer_url,
        "audience": stack.audience,
        "subject": "mallory",
        "groups": ["finance"],
        "scopes": ["invoices:read"],
    }
    return mint(stack.keys, **{**base, **kwargs})


HOUR = 3600.0

ATTACKS = [
    Attack("alg-none", Reason.TOKEN_ALGORITHM_NOT_ALLOWED, lambda s, _: forge_alg_none(_claims(s))),
    Attack(
        "hs256-with-public-key",
        Reason.TOKEN_ALGORITHM_NOT_ALLOWED,
        lambda s, _: forge_hs256_with_public_key(s.keys, _claims(s)),
    ),
    Attack(
        "unknown-kid",
        Reason.TOKEN_KEY_UNKNOWN,
        lambda s, _: _mint(s, headers={"kid": "no-such-key"}),
    ),
    Attack(
        "tampered-payload",
        Reason.TOKEN_SIGNATURE_INVALID,
        lambda s, _: tamper_payload(_mint(s, groups=["contractors"]), groups=["finance"]),
    ),
    Attack(
        "tampered-signature",
        Reason.TOKEN_SIGNATURE_INVALID,
        lambda s, _: tamper_signature(_mint(s)),
    ),
    Attack(
        "tampered-signature-es256",
        Reason.TOKEN_SIGNATURE_INVALID,
        lambda s, _: tamper_signature(_mint(s, alg="ES256")),
    ),
    Attack("expired", Reason.TOKEN_EXPIRED, lambda s, _: _mint(s, now=time.time() - HOUR)),
    Attack(
        "not-yet-valid", Reason.TOKEN_NOT_YET_VALID, lambda s, _: _mint(s, now=time.time() + HOUR)
    ),
    Attack(
        "missing-exp",
        Reason.TOKEN_CLAIMS_MISSING,
        lambda s, _: _mint(s, extra_claims={"exp": DROP}),
    ),
    Attack(
        "missing-iat",
        Reason.TOKEN_CLAIMS_MISSING,
        lambda s, _: _mint(s, extra_claims={"iat": DROP}),
    ),
    Attack("lifetime-over-max", Reason.TOKEN_LIFETIME_EXCEEDED, lambda s, _: _mint(s, ttl=HOUR)),
    Attack(
        "wrong-iss",
        Reason.TOKEN_ISSUER_UNKNOWN,
        lambda s, _: _mint(s, issuer=s.issuer_url + "/other"),
    ),
    Attack(
        "wrong-aud",
        Reason.TOKEN_AUDIENCE_INVALID,
        lambda s, _: _mint(s, audience="https://other-api.example.com"),
    ),
    Attack(
        "oversized",
        Reason.TOKEN_TOO_LARGE,
        lambda s, _: _mint(s, extra_claims={"padding": "x" * 9000}),
    ),
    Attack("garbage", Reason.TOKEN_MALFORMED, lambda s, _: "not-a-jwt"),
    Attack("garbage-three-parts", Reason.TOKEN_MALFORMED, lambda s, _: "abc.def.ghi"),
    Attack(
        "unconfigured-issuer",
        Reason.TOKEN_ISSUER_UNKNOWN,
        lambda s, other: mint(
            other,
            issuer=UNTRUSTED_ISSUER,
            audience=s.audience,
            subject="mallory",
            groups=["finance"],
        ),
    ),
]


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
@pytest.mark.parametrize("path", ["/invoices", "/public/page"], ids=["protected", "anonymous-ok"])
def test_attack_gets_401_invalid_token_and_never_reaches_upstream(
    stack: Stack, untrusted_keys: DevKeys, attack: Attack, path: str
) -> None:
    # Also on a route an anonymous rule allows: bad credentials are never downgraded to none.
    reply = get(stack, path, attack.build(stack, untrusted_keys))
    assert reply.status == 401, reply.body
    assert not reached_upstream(reply)
    challenge = reply.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="ztauthz"')
    assert 'error="invalid_token"' in challenge
    assert f'error_description="{describe(attack.reason)}"' in challenge
    body = reply.json()
    assert body["reason"] == attack.reason.value
    assert body["decision"] == "deny"
    assert reply.headers["x-auth-decision-id"] == body["decision_id"]


def test_non_bearer_authorization_is_refused(stack: Stack) -> None:
    reply = get(stack, "/invoices", Authorization="Basic YWxpY2U6c2VjcmV0")
    assert reply.status == 401
    assert not reached_upstream(reply)
    assert reply.json()["reason"] == Reason.TOKEN_MALFORMED.value


# --- 401 without a token, 403 by policy -------------------------------------------------------


def test_missing_token_gets_a_bare_bearer_challenge(stack: Stack) -> None:
    reply = get(stack, "/invoices")
    assert reply.status == 401
    assert not reached_upstream(reply)
    assert reply.headers["www-authenticate"] == 'Bearer realm="ztauthz"'
    assert reply.json()["reason"] == Reason.TOKEN_MISSING.value


@pytest.mark.parametrize(
    ("method", "path", "groups", "scopes", "reason"),
    [
        ("DELETE", "/invoices/42", ["finance", "contractors"], [], Reason.DENIED_BY_RULE),
        ("GET", "/internal/metrics", ["finance"], ["invoices:read"], Reason.DENIED_BY_RULE),
        ("GET", "/invoices", ["engineering"], ["invoices:read"], Reason.NO_MATCHING_RULE),
        ("GET", "/invoices", ["finance"], ["invoices:write"], Reason.NO_MATCHING_RULE),
        ("POST", "/invoices", ["finance"], ["invoices:read"], Reason.NO_MATCHING_RULE),
    ],
    ids=["deny-rule-beats-allow", "internal-never", "wrong-group", "wrong-scope", "wrong-method"],
)
def test_policy_denial_gets_403_with_json_reason(
    stack: Stack,
    token: Mint,
    method: str,
    path: str,
    groups: list[str],
    scopes: list[str],
    reason: Reason,
) -> None:
    reply = get(stack, path, token(groups=groups, scopes=scopes), method=method)
    assert reply.status == 403
    assert not reached_upstream(reply)
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert body["decision"] == "deny"
    assert body["reason"] == reason.value
    assert len(body["decision_id"]) >= 16
    assert reply.headers["x-auth-decision-id"] == body["decision_id"]
    assert "www-authenticate" not in reply.headers


def test_finance_may_delete_when_no_deny_rule_matches(stack: Stack, token: Mint) -> None:
    reply = get(stack, "/invoices/42", token(groups=["finance"], scopes=[]), method="DELETE")
    assert reply.status == 200
    assert upstream_headers(reply)["x-auth-rule"] == "invoices-delete"


# --- fail closed ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Keyless:
    """A ztauthz that cannot load its issuer's keys, checking over HTTP and gRPC side by side."""

    ports: dict[Transport, int]
    issuer: str


@dataclass(frozen=True, slots=True)
class Broken:
    unreachable_envoy: int  # Envoy whose ztauthz cluster points at a closed port
    keyless_envoy: int  # Envoy in front of the keyless ztauthz
    keyless_check: int  # the keyless ztauthz's check port for this transport
    keyless_issuer: str


@pytest.fixture(scope="module")
def keyless(
    tmp_path_factory: pytest.TempPathFactory, child_env: dict[str, str]
) -> Iterator[Keyless]:
    work = tmp_path_factory.mktemp("keyless")
    dead_issuer, check, grpc_port, admin = free_port(), free_port(), free_port(), free_port()
    issuer_url = f"http://127.0.0.1:{dead_issuer}"
    config = work / "ztauthz.yaml"
    config.write_text(
        f"""
server:
  check: {{port: {check}}}
  grpc: {{enabled: true, port: {grpc_port}}}
  admin: {{port: {admin}}}
issuers:
  - issuer: {issuer_url}
    audiences: [https://api.example.com]
    jwks: {{fetch_timeout: 1s}}
policies: {POLICIES}
""",
        encoding="utf-8",
    )
    serve = ManagedProcess(
        "ztauthz-keyless",
        [*ztauthz_command(), "serve", "--config", str(config)],
        log_path=work / "ztauthz.log",
        ready=TcpReady("127.0.0.1", grpc_port),  # never /readyz: it stays 503 without keys
        env=child_env,
    )
    with ProcessGroup() as group:
        group.start(serve)
        yield Keyless({"http": check, "grpc": grpc_port}, issuer_url)


@pytest.fixture(scope="module")
def broken(
    stack: Stack, transport: Transport, keyless: Keyless, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Broken]:
    work = tmp_path_factory.mktemp(f"broken-{transport}")

    def envoy(name: str, authz_port: int) -> tuple[ManagedProcess, int]:
        listen, admin_port = free_port(), free_port()
        path = write_envoy_config(
            work / f"{name}.yaml",
            template=shipped_envoy_config(transport),
            listen_port=listen,
            admin_port=admin_port,
            authz_port=authz_port,
            upstream_port=stack.ports.upstream,
        )
        process = ManagedProcess(
            name,
            envoy_command(path),
            log_path=work / f"{name}.log",
            ready=HttpReady(f"http://127.0.0.1:{admin_port}/ready"),
        )
        return process, listen

    unreachable, unreachable_port = envoy("envoy-unreachable", free_port())
    keyless_envoy, keyless_port = envoy("envoy-keyless", keyless.ports[transport])
    with ProcessGroup() as group:
        group.start(unreachable, keyless_envoy)
        yield Broken(unreachable_port, keyless_port, keyless.ports[transport], keyless.issuer)


def _through(port: int, path: str, token: str | None = None) -> Reply:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return http_request(port, "GET", path, headers)


@pytest.mark.parametrize("path", ["/invoices", "/public/page"])
def test_unreachable_ztauthz_fails_closed_with_503(
    stack: Stack, token: Mint, broken: Broken, path: str
) -> None:
    reply = _through(broken.unreachable_envoy, path, token())
    assert reply.status == 503
    assert not reached_upstream(reply)


def test_ztauthz_that_cannot_decide_is_an_error_for_envoy_never_an_allow(
    stack: Stack, transport: Transport, broken: Broken
) -> None:
    bearer = _mint(stack, issuer=broken.keyless_issuer)  # a configured issuer whose keys are down
    direct = direct_check(
        transport, broken.keyless_check, "GET", "/invoices", {"Authorization": f"Bearer {bearer}"}
    )
    # HTTP: 503 with the reason; gRPC: the RPC fails UNAVAILABLE with the reason as details.
    assert direct.status == {"http": 503, "grpc": "UNAVAILABLE"}[transport]
    assert direct.reason == Reason.KEYS_UNAVAILABLE.value
    # Envoy treats either as a failed check: with failure_mode_allow false it answers
    # status_on_error (503) itself, without ztauthz's body.
    reply = _through(broken.keyless_envoy, "/invoices", bearer)
    assert reply.status == 503
    assert not reached_upstream(reply)
    assert reply.body == b""
