"""mTLS through real Envoy: a TLS listener that requires client certificates from a test CA, in
front of ztauthz over each transport, with a workload certificate whose URI SAN is a SPIFFE ID.

Decisions, statuses, reasons and upstream headers are the same over HTTP and gRPC for everything
both can express (the token decides; the certificate only gets the client in). The workload
identity itself reaches ztauthz only over gRPC: Envoy puts the certificate's SPIFFE ID in
``attributes.source.principal`` and the certificate in ``attributes.source.certificate``
(``include_peer_certificate: true``). HTTP ext_authz has no such fields; there the identity
would travel in ``X-Forwarded-Client-Cert``, which the shipped bootstrap does not forward
(Envoy's default SANITIZE drops it) and which is issue 3's (device/workload evidence).
"""

from __future__ import annotations

import asyncio
import io
import json
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import yaml

from app.check import Checker
from app.decision import Decision
from app.dev.envoy import (
    SHIPPED_ENVOY_GRPC_CONFIG,
    DownstreamTls,
    Transport,
    envoy_command,
    render_envoy_config,
    shipped_envoy_config,
    write_envoy_config,
)
from app.dev.ports import free_port
from app.dev.procs import HttpReady, ManagedProcess, ProcessGroup
from app.dev.stack import Reply, Stack, tls_request
from app.dev.tokens import mint
from app.request import RequestContext
from app.settings import Settings
from app.state import Runtime
from app.telemetry.hub import Telemetry
from app.transport.grpc import GrpcServer
from tests.integration.pki_support import WORKLOAD_SPIFFE_ID, Pair, Pki, make_pki

pytestmark = pytest.mark.integration

Mint = Callable[..., str]
FORGED = {"x-auth-subject": "admin", "x-auth-groups": "admins", "x-auth-decision-id": "forged"}


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _tls(pki: Pki) -> DownstreamTls:
    return DownstreamTls(pki.server.certificate, pki.server.key, client_ca=pki.ca)


def _envoy(name: str, config: Path, admin_port: int, work: Path) -> ManagedProcess:
    return ManagedProcess(
        name,
        envoy_command(config),
        log_path=work / f"{name}.log",
        ready=HttpReady(f"http://127.0.0.1:{admin_port}/ready"),
    )


@pytest.fixture(scope="module")
def mtls_port(
    stack: Stack, transport: Transport, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    """An Envoy running the shipped bootstrap for ``transport`` with a TLS listener that
    requires client certificates, in front of that transport's ztauthz."""
    work = tmp_path_factory.mktemp(f"mtls-{transport}")
    listen, admin = free_port(), free_port()
    config = write_envoy_config(
        work / "envoy.yaml",
        template=shipped_envoy_config(transport),
        listen_port=listen,
        admin_port=admin,
        authz_port=stack.ports.check,
        upstream_port=stack.ports.upstream,
        tls=_tls(pki),
    )
    with ProcessGroup() as group:
        group.start(_envoy(f"envoy-mtls-{transport}", config, admin, work))
        yield listen


def https_request(
    port: int, pki: Pki, path: str, headers: dict[str, str], client: Pair | None
) -> Reply:
    pair = None if client is None else (client.certificate, client.key)
    return tls_request(port, pki.ca, "GET", path, headers, pair)


def _upstream_headers(reply: Reply) -> dict[str, str]:
    body = reply.json()
    assert isinstance(body, dict) and "header_list" in body, (reply.status, reply.body)
    headers: dict[str, str] = body["headers"]
    return headers


# --- both transports --------------------------------------------------------------------------


def test_workload_with_a_token_is_allowed_over_mtls(
    stack: Stack, token: Mint, pki: Pki, mtls_port: int
) -> None:
    bearer = token(subject="invoice-worker")
    reply = https_request(
        mtls_port, pki, "/invoices", {"Authorization": f"Bearer {bearer}"}, pki.workload
    )
    assert reply.status == 200
    seen = _upstream_headers(reply)
    assert seen["x-auth-subject"] == "invoice-worker"
    assert seen["x-auth-groups"] == "finance"
    assert seen["x-auth-rule"] == "invoices-read"


def test_workload_without_a_token_gets_the_bearer_challenge(
    stack: Stack, pki: Pki, mtls_port: int
) -> None:
    reply = https_request(mtls_port, pki, "/invoices", {}, pki.workload)
    assert reply.status == 401
    assert reply.headers["www-authenticate"] == 'Bearer realm="ztauthz"'
    assert reply.json()["reason"] == "token_missing"


def test_forged_identity_headers_never_reach_upstream_over_mtls(
    stack: Stack, pki: Pki, mtls_port: int
) -> None:
    reply = https_request(mtls_port, pki, "/public/page", dict(FORGED), pki.workload)
    assert reply.status == 200
    seen = _upstream_headers(reply)
    assert "x-auth-subject" not in seen and "x-auth-groups" not in seen
    assert seen["x-auth-decision-id"] != FORGED["x-auth-decision-id"]


@pytest.mark.parametrize("who", ["no-certificate", "untrusted-ca"])
def test_clients_without_a_trusted_certificate_never_get_in(
    stack: Stack, pki: Pki, mtls_port: int, who: str
) -> None:
    client = None if who == "no-certificate" else pki.rogue
    with pytest.raises((ssl.SSLError, ConnectionError)):
        https_request(mtls_port, pki, "/public/page", {}, client)


# --- gRPC: the workload identity reaches ztauthz -----------------------------------------------


class RecordingChecker(Checker):
    """The real Checker, remembering each RequestContext the gRPC transport built."""

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(runtime)
        self.seen: list[tuple[RequestContext, Decision]] = []

    async def check(self, ctx: RequestContext) -> Decision:
        decision = await super().check(ctx)
        self.seen.append((ctx, decision))
        return decision


def _with_route_context(config: dict[str, Any]) -> dict[str, Any]:
    """Route metadata and per-route context extensions, as an operator would set them."""
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    route = hcm["typed_config"]["route_config"]["virtual_hosts"][0]["routes"][0]
    route["metadata"] = {"filter_metadata": {"ztauthz": {"tier": "gold", "labels": ["pci"]}}}
    route["typed_per_filter_config"] = {
        "envoy.filters.http.ext_authz": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
            "check_settings": {"context_extensions": {"tenant": "acme"}},
        }
    }
    return config


async def test_the_workload_identity_reaches_ztauthz_over_grpc(
    grpc_stack: Stack, pki: Pki, tmp_path: Path
) -> None:
    settings = Settings.model_validate(
        {
            "issuers": [{"issuer": grpc_stack.issuer_url, "audiences": [grpc_stack.audience]}],
            "policies": grpc_stack.policies,
            "server": {"grpc": {"enabled": True, "port": 0}},
        }
    )
    telemetry = Telemetry.create(settings, stream=io.StringIO())
    async with Runtime(settings, telemetry=telemetry) as runtime:
        checker = RecordingChecker(runtime)
        server = GrpcServer(checker, settings.server.grpc)
        authz_port = await server.start()
        try:
            listen, admin = free_port(), free_port()
            config = render_envoy_config(
                SHIPPED_ENVOY_GRPC_CONFIG,
                listen_port=listen,
                admin_port=admin,
                authz_port=authz_port,
                upstream_port=grpc_stack.ports.upstream,
                tls=_tls(pki),
            )
            path = tmp_path / "envoy.yaml"
            path.write_text(yaml.safe_dump(_with_route_context(config)), encoding="utf-8")
            bearer = mint(
                grpc_stack.keys,
                issuer=grpc_stack.issuer_url,
                audience=grpc_stack.audience,
                subject="invoice-worker",
                groups=["finance"],
                scopes=["invoices:read"],
            )
            headers = {"Authorization": f"Bearer {bearer}", "X-Forwarded-For": "203.0.113.9"}
            with ProcessGroup() as group:
                await asyncio.to_thread(group.start, _envoy("envoy-spy", path, admin, tmp_path))
                reply = await asyncio.to_thread(
                    https_request, listen, pki, "/invoices?page=2", headers, pki.workload
                )
        finally:
            await server.stop(0)

    assert reply.status == 200, reply.body
    assert len(checker.seen) == 1
    ctx, decision = checker.seen[0]
    assert decision.allow and decision.principal is not None
    assert decision.principal.subject == "invoice-worker"
    assert ctx.transport == "grpc"
    assert (ctx.method, ctx.path) == ("GET", "/invoices?page=2")
    assert ctx.peer_principal == WORKLOAD_SPIFFE_ID
    assert ctx.peer_certificate is not None
    assert unquote(ctx.peer_certificate).strip() == pki.workload.pem().strip()
    # The socket peer, not the client's own X-Forwarded-For.
    assert ctx.source_address == "127.0.0.1"
    assert ctx.headers["x-forwarded-for"].startswith("203.0.113.9")
    assert dict(ctx.context_extensions) == {"tenant": "acme"}
    assert ctx.route_metadata["ztauthz"]["tier"] == "gold"
    assert ctx.route_metadata["ztauthz"]["labels"] == ("pci",)
    assert json.loads(reply.body)["headers"]["x-auth-subject"] == "invoice-worker"
