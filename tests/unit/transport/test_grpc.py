"""The gRPC ext_authz server, driven by a real grpc.aio client on loopback.

Each test runs the real pipeline (Runtime with keys from an in-process dev issuer, the
integration policies, Checker) behind ``GrpcServer`` on an ephemeral port, and the HTTP check app
on the same Checker where both transports are compared.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import json_format
from google.rpc import code_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from app.check import Checker
from app.dev.issuer import create_issuer_app
from app.protos import envoy_ext_authz_pb2 as pb
from app.settings import Settings
from app.state import Runtime
from app.telemetry.fields import CLIENT_ADDRESS_HEADER
from app.telemetry.hub import Telemetry
from app.transport.grpc import AUTHORIZATION_SERVICE, GrpcServer, check_method_aio
from app.transport.http import CheckEndpoint
from app.transport.render import HEADERS_TO_REMOVE, IDENTITY_HEADERS
from tests.unit.dev.dev_helpers import reader_token, serving, shared_keys

POLICIES = Path(__file__).resolve().parents[2] / "integration" / "policies"
AUDIENCE = "https://api.example.com"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def issuer() -> Iterator[str]:
    with serving(lambda url: create_issuer_app(shared_keys(), url)) as url:
        yield url


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class Service:
    issuer: str
    checker: Checker
    server: GrpcServer
    channel: grpc.aio.Channel
    log: io.StringIO

    @property
    def authz(self) -> grpc.aio.UnaryUnaryMultiCallable[pb.CheckRequest, pb.CheckResponse]:
        return check_method_aio(self.channel)

    @property
    def health(self) -> Any:  # typeshed's HealthStub declares no methods
        return health_pb2_grpc.HealthStub(self.channel)

    def token(self, **overrides: Any) -> str:
        return reader_token(self.issuer, **overrides)

    async def check(self, method: str, path: str, headers: dict[str, str] | None = None) -> Any:
        return await self.authz(check_request(method, path, headers or {}), timeout=5)

    def decisions(self) -> list[dict[str, Any]]:
        """The decision-log lines written so far."""
        self.checker.runtime.telemetry.decision_log.flush()
        lines = [json.loads(line) for line in self.log.getvalue().splitlines() if line]
        return [line for line in lines if line.get("kind") == "decision"]


def check_request(
    method: str, path: str, headers: dict[str, str], host: str = "api.example.com"
) -> Any:
    return json_format.ParseDict(
        {
            "attributes": {
                "source": {"address": {"socket_address": {"address": "192.0.2.7"}}},
                "request": {
                    "http": {"method": method, "host": host, "path": path, "headers": headers}
                },
            }
        },
        pb.CheckRequest(),
    )


@asynccontextmanager
async def service(issuer: str) -> AsyncIterator[Service]:
    settings = Settings.model_validate(
        {
            "issuers": [
                {"issuer": issuer, "audiences": [AUDIENCE], "jwks": {"fetch_timeout": "1s"}}
            ],
            "policies": POLICIES,
            "server": {"grpc": {"enabled": True, "port": 0}},
        }
    )
    log = io.StringIO()
    telemetry = Telemetry.create(settings, stream=log)
    async with Runtime(settings, telemetry=telemetry) as runtime:
        checker = Checker(runtime)
        server = GrpcServer(checker, settings.server.grpc)
        port = await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                yield Service(issuer, checker, server, channel, log)
        finally:
            await server.stop(0)


def ok_headers(response: Any) -> dict[str, str]:
    return {o.header.key: o.header.value for o in response.ok_response.headers}


# --- decisions over gRPC ----------------------------------------------------------------------


async def test_valid_token_is_allowed_with_identity_headers(issuer: str) -> None:
    async with service(issuer) as svc:
        response = await svc.check("GET", "/invoices", {"authorization": f"Bearer {svc.token()}"})
    assert response.status.code == code_pb2.OK
    headers = ok_headers(response)
    assert headers["x-auth-subject"] == "alice"
    assert headers["x-auth-issuer"] == issuer
    assert headers["x-auth-groups"] == "finance"
    assert headers["x-auth-rule"] == "invoices-read"
    assert set(headers) | set(response.ok_response.headers_to_remove) == set(IDENTITY_HEADERS)


async def test_forged_identity_headers_are_named_for_removal(issuer: str) -> None:
    forged = {"x-auth-subject": "admin", "x-auth-groups": "admins", "x-auth-decision-id": "f"}
    async with service(issuer) as svc:
        response = await svc.check("GET", "/public/page", forged)
    assert response.status.code == code_pb2.OK
    headers = ok_headers(response)
    removed = set(response.ok_response.headers_to_remove)
    assert {"x-auth-subject", "x-auth-groups"} <= removed
    assert headers["x-auth-decision-id"] != "f"
    assert not {"x-auth-subject", "x-auth-groups"} & set(headers)


@pytest.mark.parametrize(
    ("method", "path", "auth", "http_status", "code", "reason"),
    [
        ("GET", "/invoices", None, 401, code_pb2.UNAUTHENTICATED, "token_missing"),
        ("GET", "/invoices", "garbage", 401, code_pb2.UNAUTHENTICATED, "token_malformed"),
        ("GET", "/internal/x", "token", 403, code_pb2.PERMISSION_DENIED, "denied_by_rule"),
        ("POST", "/invoices", "token", 403, code_pb2.PERMISSION_DENIED, "no_matching_rule"),
        ("GET", "/public/%ff", None, 400, code_pb2.INVALID_ARGUMENT, "path_rejected"),
        ("PROPFIND", "/invoices", "token", 405, code_pb2.PERMISSION_DENIED, "method_not_allowed"),
    ],
)
async def test_denials_carry_status_challenge_and_json_reason(
    issuer: str,
    method: str,
    path: str,
    auth: str | None,
    http_status: int,
    code: int,
    reason: str,
) -> None:
    async with service(issuer) as svc:
        headers = {}
        if auth is not None:
            headers["authorization"] = "Bearer " + (svc.token() if auth == "token" else auth)
        response = await svc.check(method, path, headers)
    assert response.status.code == code
    denied = response.denied_response
    assert denied.status.code == http_status
    body = json.loads(denied.body)
    assert body["reason"] == reason
    sent = {o.header.key: o.header.value for o in denied.headers}
    assert sent["content-type"] == "application/json"
    assert sent["x-auth-decision-id"] == body["decision_id"]
    assert ("www-authenticate" in sent) == (http_status == 401)
    assert ("allow" in sent) == (http_status == 405)  # the methods a policy can name


@pytest.mark.parametrize(
    "request_",
    [
        pb.CheckRequest(),
        json_format.ParseDict(
            {"attributes": {"request": {"http": {"method": "GET", "host": "h"}}}},
            pb.CheckRequest(),
        ),
    ],
    ids=["empty", "no-path"],
)
async def test_a_malformed_check_request_is_denied_and_logged(issuer: str, request_: Any) -> None:
    async with service(issuer) as svc:
        response = await svc.authz(request_, timeout=5)
        logged = svc.decisions()
    assert response.status.code == code_pb2.INVALID_ARGUMENT
    assert response.denied_response.status.code == 400
    assert json.loads(response.denied_response.body)["reason"] == "path_rejected"
    assert [(d["transport"], d["reason"]) for d in logged] == [("grpc", "path_rejected")]


async def test_cannot_decide_fails_the_rpc_so_envoy_refuses(issuer: str) -> None:
    # An issuer whose keys cannot be fetched: ztauthz cannot decide (503 over HTTP). Over gRPC
    # the RPC fails with UNAVAILABLE, which Envoy treats as an error: status_on_error, never OK.
    async with service(f"http://127.0.0.1:{closed_port()}") as svc:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await svc.check("GET", "/invoices", {"authorization": f"Bearer {svc.token()}"})
        logged = svc.decisions()
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert failed.value.details() == "keys_unavailable"
    assert [d["status"] for d in logged] == [503]


async def test_the_check_is_served_under_envoys_method_path(issuer: str) -> None:
    """Envoy calls this path with bytes of its own messages; ztauthz's messages are a
    wire-compatible subset, declared in a package of ztauthz's own."""
    request = check_request("GET", "/public/page", {}).SerializeToString()
    async with service(issuer) as svc:
        envoys: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = svc.channel.unary_unary(
            "/envoy.service.auth.v3.Authorization/Check"
        )
        answer = pb.CheckResponse.FromString(await envoys(request, timeout=5))
        ours: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = svc.channel.unary_unary(
            "/ztauthz.envoy.auth.v3.Authorization/Check"
        )
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await ours(request, timeout=5)
    assert answer.status.code == code_pb2.OK
    assert answer.WhichOneof("http_response") == "ok_response"
    assert failed.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_the_trace_context_of_envoys_call_parents_the_check(issuer: str) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    async with service(issuer) as svc:
        await svc.authz(
            check_request("GET", "/public/page", {}),
            metadata=(("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01"),),
            timeout=5,
        )
        logged = svc.decisions()
    assert [d["trace_id"] for d in logged] == [trace_id]


# --- both transports, one pipeline ------------------------------------------------------------

CASES = [
    ("GET", "/invoices", "token", {}),
    ("GET", "/invoices/7?page=2", "token", {}),
    ("GET", "/public/page", None, {"x-auth-subject": "admin", "x-auth-groups": "admins"}),
    ("GET", "/invoices", None, {}),
    ("GET", "/invoices", "expired", {}),
    ("DELETE", "/invoices/42", "contractor", {}),
    ("GET", "/invoices", "engineering", {}),
    ("GET", "/public/%252e%252e/invoices", None, {}),
]


def _without_ids(headers: dict[str, str], body: bytes) -> tuple[dict[str, str], Any]:
    stable = {k: v for k, v in headers.items() if k != "x-auth-decision-id"}
    parsed = json.loads(body) if body else None
    if isinstance(parsed, dict):
        parsed.pop("decision_id", None)
    return stable, parsed


@pytest.mark.parametrize(("method", "path", "who", "extra"), CASES)
async def test_http_and_grpc_give_the_same_answer(
    issuer: str, method: str, path: str, who: str | None, extra: dict[str, str]
) -> None:
    async with service(issuer) as svc:
        tokens = {
            "token": svc.token(),
            "expired": svc.token(now=time.time() - 3600),
            "contractor": svc.token(groups=["finance", "contractors"]),
            "engineering": svc.token(groups=["engineering"]),
        }
        headers = dict(extra)
        if who is not None:
            headers["authorization"] = f"Bearer {tokens[who]}"
        app = CheckEndpoint(svc.checker)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://ztauthz"
        ) as client:
            over_http = await client.request(
                method,
                "/check" + path,
                # What the shipped envoy.yaml adds for the decision log's client_ip; over gRPC
                # the same address arrives as attributes.source.address (check_request).
                headers={"host": "api.example.com", CLIENT_ADDRESS_HEADER: "192.0.2.7", **headers},
            )
        over_grpc = await svc.check(method, path, headers)
        logged = svc.decisions()

    http_headers = {
        k: v
        for k, v in over_http.headers.items()
        if k.startswith("x-auth-") or k in {"www-authenticate", "content-type", "cache-control"}
    }
    removed = over_http.headers.get(HEADERS_TO_REMOVE, "")
    if over_grpc.status.code == code_pb2.OK:
        assert over_http.status_code == 200
        grpc_headers = ok_headers(over_grpc)
        grpc_body = b""
        assert ",".join(over_grpc.ok_response.headers_to_remove) == removed
    else:
        denied = over_grpc.denied_response
        assert over_http.status_code == denied.status.code
        grpc_headers = {o.header.key: o.header.value for o in denied.headers}
        grpc_body = denied.body.encode()
    assert _without_ids(grpc_headers, grpc_body) == _without_ids(
        http_headers, over_http.content if over_http.status_code != 200 else b""
    )
    # One decision per transport, logged alike but for the transport.
    assert [d["transport"] for d in logged] == ["http", "grpc"]
    per_check = {"decision_id", "time", "latency_us", "transport", "trace_id", "span_id"}
    stable = [{k: v for k, v in d.items() if k not in per_check} for d in logged]
    assert stable[0] == stable[1]


# --- health and lifecycle ---------------------------------------------------------------------


async def health_of(svc: Service, name: str = "") -> int:
    response = await svc.health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
    status: int = response.status
    return status


async def until_serving(svc: Service, name: str = "") -> None:
    """Keys are fetched in the background after start: wait for readiness (at most 5 s)."""
    deadline = time.monotonic() + 5
    while await health_of(svc, name) != SERVING:
        assert time.monotonic() < deadline, "never became SERVING"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("name", ["", AUTHORIZATION_SERVICE])
async def test_health_follows_readiness(issuer: str, name: str) -> None:
    async with service(issuer) as svc:
        await until_serving(svc, name)
        assert svc.checker.runtime.is_ready()
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await health_of(svc, "no.such.Service")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    async with service(f"http://127.0.0.1:{closed_port()}") as keyless:
        await asyncio.sleep(0.2)
        assert not keyless.checker.runtime.is_ready()
        assert await health_of(keyless, name) == NOT_SERVING


async def test_stopping_reports_not_serving_to_watchers_then_refuses(issuer: str) -> None:
    async with service(issuer) as svc:
        await until_serving(svc)
        watch = svc.health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        first = await watch.read()
        stopping = asyncio.create_task(svc.server.stop(5))
        last = await watch.read()
        watch.cancel()  # the stream ends; the graceful stop need not wait for it
        await stopping
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await svc.check("GET", "/public/page")
    assert (first.status, last.status) == (SERVING, NOT_SERVING)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_busy_port_fails_the_start(issuer: str) -> None:
    async with service(issuer) as svc:
        settings = svc.checker.runtime.state.settings
        busy = settings.server.grpc.model_copy(update={"port": svc.server.port})
        second = GrpcServer(svc.checker, busy)
        with pytest.raises(OSError, match="cannot listen for gRPC"):
            await second.start()
        await second.stop(0)
