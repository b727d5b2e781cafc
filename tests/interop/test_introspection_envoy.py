"""End to end: opaque oidc-provider tokens through real Envoy, introspected by ``ztauthz serve``.

oidc-provider (provider.mjs) issues opaque access tokens for its opaque resource, introspects
them (RFC 7662) for ztauthz's two clients and revokes them (RFC 7009) for their holders.
ztauthz finds the introspection endpoint by discovery and authenticates with each method in
turn (the module runs once per method: ``client_secret_basic`` with a secret full of
characters that RFC 6749 §2.3.1's form-encoding changes, and ``private_key_jwt`` with an
ES256 key). The policy (policies-introspection/) allows GET /invoices/** with invoices:read
and marks GET /payouts/** ``high_risk``.

What is shown, through Envoy, for each method:
- an opaque token is allowed after introspection, with the identity a JWT would give;
- once the provider revokes it, it is refused within ``cache_ttl`` (the documented bound),
  and at once on a ``high_risk`` route;
- a JWT of the same provider (which refuses to introspect JWTs, so ``high_risk_jwts`` is off)
  is allowed on a plain route and refused ``introspection_required`` on a high-risk one;
- when the provider is down, an opaque token not seen before is refused at once (503, Envoy's
  status_on_error), and one seen before is refused once its cached answer runs out.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml
from joserfc import jwk

from app.dev.envoy import envoy_command, write_envoy_config
from app.dev.procs import HttpReady, ManagedProcess, ProcessGroup
from app.dev.stack import Reply, http_request, ztauthz_command
from app.dev.stack_config import LOOPBACK, Ports
from tests.interop.oidc_provider_support import (
    INTROSPECTOR_BASIC,
    INTROSPECTOR_JWT,
    OidcProvider,
    start_oidc_provider,
)

pytestmark = pytest.mark.interop

HERE = Path(__file__).resolve().parent
POLICIES = HERE / "policies-introspection"
READY_TIMEOUT = 30.0
CACHE_TTL = 2.0  # seconds: issuers[0].introspection.cache_ttl below
TIMEOUT = 2.0  # seconds: issuers[0].introspection.timeout below
SLACK = 2.0  # seconds on top of a bound, for two shared cores
# Characters RFC 6749 §2.3.1's form-encoding changes: sent raw, the provider would refuse it.
BASIC_SECRET = "intro+sp%ec:ial/secret=value with space"
KEY_ID = "ztauthz-introspection-1"


@dataclass
class Stack:
    """Envoy, ztauthz, the echo upstream and the provider ztauthz introspects at."""

    method: str
    envoy_port: int
    admin_port: int
    provider: OidcProvider
    ztauthz_log: Path
    restart_provider: Callable[[], None] = field(repr=False)
    stop_provider: Callable[[], None] = field(repr=False)

    def get(self, path: str, token: str) -> Reply:
        return http_request(self.envoy_port, "GET", path, {"Authorization": f"Bearer {token}"})

    def opaque_token(self, scope: str = "invoices:read") -> str:
        token = self.provider.get_token(self.provider.opaque_resource, scope)
        assert "." not in token, "the provider's opaque resource should issue opaque tokens"
        return token

    def introspections(self, outcome: str) -> float:
        """ztauthz_introspections_total for ``outcome`` (scraped from the admin listener)."""
        text = httpx.get(f"http://{LOOPBACK}:{self.admin_port}/metrics", timeout=5.0).text
        pattern = rf'^ztauthz_introspections_total\{{[^}}]*outcome="{outcome}"[^}}]*\}} (\S+)$'
        found = re.search(pattern, text, re.MULTILINE)
        assert found is not None, f"no introspection series for {outcome}"
        return float(found.group(1))


def ztauthz_config(
    provider: OidcProvider, ports: Ports, method: str, workdir: Path
) -> dict[str, object]:
    if method == "client_secret_basic":
        secret_file = workdir / "introspection-secret"
        secret_file.write_text(BASIC_SECRET + "\n", encoding="utf-8")
        credentials: dict[str, object] = {
            "client_id": INTROSPECTOR_BASIC,
            "auth": "client_secret_basic",
            "client_secret_file": str(secret_file),
        }
    else:
        credentials = {
            "client_id": INTROSPECTOR_JWT,
            "auth": "private_key_jwt",
            "private_key_file": str(workdir / "introspection-key.pem"),
            "signing_alg": "ES256",
            "key_id": KEY_ID,
        }
    return {
        "server": {
            "check": {"host": LOOPBACK, "port": ports.check, "path_prefix": "/check"},
            "admin": {"host": LOOPBACK, "port": ports.admin},
        },
        "issuers": [
            {
                "issuer": provider.issuer,
                "discovery": True,  # the introspection endpoint comes from discovery too
                "audiences": [provider.opaque_resource, provider.resources["ES256"]],
                "algorithms": ["RS256", "ES256"],
                "max_token_lifetime": "15m",
                "claims": {"groups": "groups", "scopes": "scope"},
                "introspection": {
                    **credentials,
                    # oidc-provider's client-credentials answers carry no sub (RFC 9068 §2.2).
                    "subject_from_client_id": True,
                    "cache_ttl": f"{CACHE_TTL:g}s",
                    "high_risk_max_age": "0s",
                    "timeout": f"{TIMEOUT:g}s",
                },
            }
        ],
        "policies": str(POLICIES),
        "log_level": "info",
    }


@pytest.fixture(scope="module", params=["client_secret_basic", "private_key_jwt"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js (`node`) is not installed; the oidc-provider interop tests need it")
    method: str = request.param
    workdir = tmp_path_factory.mktemp(f"introspection-{method}")
    key = jwk.ECKey.generate_key("P-256")
    (workdir / "introspection-key.pem").write_bytes(key.as_pem(private=True))
    public = {**key.as_dict(private=False), "kid": KEY_ID, "use": "sig", "alg": "ES256"}
    introspector_jwks = json.dumps({"keys": [public]})
    provider, provider_process = start_oidc_provider(
        node,
        workdir / "provider.log",
        introspector_secret=BASIC_SECRET,
        introspector_jwks=introspector_jwks,
    )
    port = int(provider.issuer.rsplit(":", 1)[1])
    processes = {"provider": provider_process}

    def stop_provider() -> None:
        processes["provider"].stop()

    def restart_provider() -> None:
        processes["provider"].stop()
        _, processes["provider"] = start_oidc_provider(
            node,
            workdir / "provider-again.log",
            port=port,
            secret=provider.client_secret,
            introspector_secret=BASIC_SECRET,
            introspector_jwks=introspector_jwks,
        )

    ports = Ports.ephemeral()
    config_path = workdir / "ztauthz.yaml"
    config = ztauthz_config(provider, ports, method, workdir)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    envoy_config = write_envoy_config(
        workdir / "envoy.yaml",
        listen_port=ports.envoy,
        admin_port=ports.envoy_admin,
        authz_port=ports.check,
        upstream_port=ports.upstream,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZTAUTHZ_")}
    env["PYTHONUNBUFFERED"] = "1"
    ztauthz = ztauthz_command()

    def process(name: str, argv: list[str], ready: str) -> ManagedProcess:
        return ManagedProcess(
            name,
            argv,
            log_path=workdir / f"{name}.log",
            ready=HttpReady(ready),
            env=env,
            ready_timeout=READY_TIMEOUT,
        )

    try:
        with ProcessGroup() as group:
            group.start(
                process(
                    "upstream",
                    [
                        *ztauthz,
                        "dev",
                        "upstream",
                        "--host",
                        LOOPBACK,
                        "--port",
                        str(ports.upstream),
                    ],
                    f"http://{LOOPBACK}:{ports.upstream}/",
                )
            )
            group.start(
                process(
                    "envoy",
                    envoy_command(envoy_config),
                    f"http://{LOOPBACK}:{ports.envoy_admin}/ready",
                )
            )
            group.start(
                process(
                    "ztauthz",
                    [*ztauthz, "serve", "--config", str(config_path)],
                    f"http://{LOOPBACK}:{ports.admin}/readyz",
                )
            )
            yield Stack(
                method=method,
                envoy_port=ports.envoy,
                admin_port=ports.admin,
                provider=provider,
                ztauthz_log=workdir / "ztauthz.log",
                restart_provider=restart_provider,
                stop_provider=stop_provider,
            )
    finally:
        processes["provider"].stop()


def wait_for_status(stack: Stack, path: str, token: str, status: int, within: float) -> float:
    """Seconds until a request with ``token`` gets ``status`` (polling); fail after ``within``."""
    started = time.monotonic()
    while True:
        reply = stack.get(path, token)
        elapsed = time.monotonic() - started
        if reply.status == status:
            return elapsed
        assert elapsed < within, f"still {reply.status} after {elapsed:.1f}s: {reply.body!r}"
        time.sleep(0.1)


def test_an_opaque_token_is_allowed_after_introspection(stack: Stack) -> None:
    token = stack.opaque_token()
    asked = stack.introspections("active")

    reply = stack.get("/invoices/42", token)

    assert reply.status == 200, reply.body
    seen = reply.json()["headers"]
    client = stack.provider.client_ids[0]
    # The identity a JWT of the same provider would give: the client is the subject.
    assert seen["x-auth-subject"] == client and seen["x-auth-client-id"] == client
    assert seen["x-auth-issuer"] == stack.provider.issuer
    assert seen["x-auth-scopes"] == "invoices:read"
    assert seen["x-auth-rule"] == "read"
    assert stack.introspections("active") == asked + 1


def test_the_scopes_of_the_answer_decide(stack: Stack) -> None:
    reply = stack.get("/invoices/42", stack.opaque_token("invoices:write"))
    assert reply.status == 403
    assert reply.json()["reason"] == "no_matching_rule"


def test_a_token_the_provider_does_not_know_is_unauthenticated(stack: Stack) -> None:
    reply = stack.get("/invoices/42", "x" * 43)
    assert reply.status == 401
    assert reply.json()["reason"] == "token_inactive"
    assert reply.headers["www-authenticate"].startswith(
        'Bearer realm="ztauthz", error="invalid_token"'
    )


def test_a_revoked_token_is_refused_within_the_cache_bound(stack: Stack) -> None:
    token = stack.opaque_token()
    assert stack.get("/invoices/1", token).status == 200  # introspected, remembered
    revoked_at = time.monotonic()
    assert stack.provider.revoke(token).status_code == 200  # RFC 7009 at the provider

    wait_for_status(stack, "/invoices/1", token, 401, within=CACHE_TTL + SLACK)

    assert time.monotonic() - revoked_at <= CACHE_TTL + SLACK
    assert stack.get("/invoices/1", token).json()["reason"] == "token_inactive"


def test_a_high_risk_route_sees_a_revocation_at_once(stack: Stack) -> None:
    token = stack.opaque_token()
    assert stack.get("/invoices/2", token).status == 200  # the answer is now cached
    assert stack.get("/payouts/2", token).status == 200  # asked again: high_risk_max_age 0
    assert stack.provider.revoke(token).status_code == 200

    # Within the cache bound the plain route may still allow; the high-risk one refuses now.
    reply = stack.get("/payouts/2", token)
    assert reply.status == 401
    assert reply.json()["reason"] == "token_inactive"


def test_a_jwt_on_a_high_risk_route_needs_an_issuer_that_introspects_jwts(stack: Stack) -> None:
    # oidc-provider refuses to introspect its JWTs, so high_risk_jwts is off: a JWT of the same
    # provider is allowed on plain routes and refused, never sent to the provider, on high-risk
    # ones.
    provider = stack.provider
    asked = stack.introspections("active") + stack.introspections("error")
    jwt_token = provider.get_token(provider.resources["ES256"], "invoices:read")
    assert stack.get("/invoices/4", jwt_token).status == 200
    reply = stack.get("/payouts/4", jwt_token)
    assert reply.status == 403
    assert reply.json()["reason"] == "introspection_required"
    assert stack.introspections("active") + stack.introspections("error") == asked


def test_with_the_provider_down_tokens_are_refused_at_once(stack: Stack) -> None:
    seen = stack.opaque_token()
    unseen = stack.opaque_token()
    assert stack.get("/invoices/3", seen).status == 200
    stack.stop_provider()
    try:
        started = time.monotonic()
        reply = stack.get("/invoices/3", unseen)
        # Envoy's status_on_error for ztauthz's 503 introspection_unavailable: never an allow,
        # and no waiting for the introspection timeout (the provider refuses connections).
        assert reply.status == 503 and reply.body == b""
        assert time.monotonic() - started < TIMEOUT
        # The answer for the token seen before runs out within the cache bound: then 503 too.
        wait_for_status(stack, "/invoices/3", seen, 503, within=CACHE_TTL + SLACK)
        assert stack.introspections("error") >= 2
        log = stack.ztauthz_log.read_text(encoding="utf-8")
        assert "introspection_failing" in log
        assert seen not in log and unseen not in log and BASIC_SECRET not in log
    finally:
        stack.restart_provider()
