"""End to end: oidc-provider tokens through real Envoy and ``ztauthz serve`` to the echo upstream.

ztauthz trusts only the oidc-provider issuer (keys by discovery), for the audiences of its two
invoice resources; the policy (policies/interop.yaml) allows any GET by a token with
``invoices:read``. Envoy runs the shipped bootstrap, re-ported by app/dev/envoy.py; processes are
run by app/dev/procs.py, with the same commands as ``ztauthz dev stack``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from app.dev.envoy import envoy_command, write_envoy_config
from app.dev.procs import HttpReady, ManagedProcess, ProcessGroup
from app.dev.stack import Reply, http_request, ztauthz_command
from app.dev.stack_config import LOOPBACK, Ports, bind_config
from tests.interop.oidc_provider_support import OidcProvider

pytestmark = pytest.mark.interop

HERE = Path(__file__).resolve().parent
POLICIES = HERE / "policies"
READY_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Proxy:
    """Envoy in front of ztauthz and the echo upstream."""

    envoy_port: int
    provider: OidcProvider

    def get(self, path: str, token: str | None) -> Reply:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return http_request(self.envoy_port, "GET", path, headers)


def ztauthz_config(provider: OidcProvider, ports: Ports) -> dict[str, object]:
    base = {
        "issuers": [
            {
                "issuer": provider.issuer,
                "discovery": True,
                "audiences": [provider.resources["RS256"], provider.resources["ES256"]],
                "algorithms": ["RS256", "ES256"],
                "max_token_lifetime": "15m",
                "claims": {"groups": "groups", "scopes": "scope"},
            }
        ],
        "log_level": "info",
    }
    return bind_config(base, ports=ports, issuer_url=provider.issuer, policies=POLICIES)


@pytest.fixture(scope="module")
def proxy(oidc_provider: OidcProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    workdir = tmp_path_factory.mktemp("interop-envoy")
    ports = Ports.ephemeral()  # its issuer port is unused: the issuer is oidc-provider
    config_path = workdir / "ztauthz.yaml"
    config_path.write_text(
        yaml.safe_dump(ztauthz_config(oidc_provider, ports), sort_keys=False), encoding="utf-8"
    )
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

    with ProcessGroup() as group:
        group.start(
            process(
                "upstream",
                [*ztauthz, "dev", "upstream", "--host", LOOPBACK, "--port", str(ports.upstream)],
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
        # Ready only once the oidc-provider JWKS is loaded (by discovery).
        group.start(
            process(
                "ztauthz",
                [*ztauthz, "serve", "--config", str(config_path)],
                f"http://{LOOPBACK}:{ports.admin}/readyz",
            )
        )
        yield Proxy(envoy_port=ports.envoy, provider=oidc_provider)


@pytest.mark.parametrize(("alg", "client"), [("RS256", 0), ("ES256", 1)])
def test_provider_token_reaches_the_upstream_as_its_client(
    proxy: Proxy, alg: str, client: int
) -> None:
    provider = proxy.provider
    client_id = provider.client_ids[client]
    token = provider.get_token(provider.resources[alg], "invoices:read", client_id)

    reply = proxy.get("/invoices/42", token)

    assert reply.status == 200, reply.body
    echoed = reply.json()
    assert echoed["path"] == "/invoices/42"
    seen = echoed["headers"]
    assert seen["x-auth-subject"] == client_id
    assert seen["x-auth-client-id"] == client_id
    assert seen["x-auth-issuer"] == provider.issuer
    assert seen["x-auth-scopes"] == "invoices:read"
    assert seen["x-auth-rule"] == "read"
    assert "authorization" in seen  # Envoy forwards the request itself unchanged


def test_token_for_another_resource_is_unauthenticated(proxy: Proxy) -> None:
    provider = proxy.provider
    token = provider.get_token(provider.unrelated_resource, "invoices:read")

    reply = proxy.get("/invoices/42", token)

    assert reply.status == 401
    assert reply.headers["www-authenticate"].startswith(
        'Bearer realm="ztauthz", error="invalid_token"'
    )
    assert reply.json()["reason"] == "token_audience_invalid"


def test_token_without_the_required_scope_is_forbidden(proxy: Proxy) -> None:
    provider = proxy.provider
    token = provider.get_token(provider.resources["RS256"], "invoices:write")

    reply = proxy.get("/invoices/42", token)

    assert reply.status == 403
    assert reply.json()["reason"] == "no_matching_rule"
