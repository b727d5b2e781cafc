"""``ztauthz serve`` with the gRPC listener beside the HTTP one: both answer alike, gRPC health
follows readiness, and SIGTERM stops every listener gracefully (exit status 0)."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from app.dev.ports import free_port
from app.dev.procs import HttpReady, ManagedProcess, ProcessGroup
from app.dev.stack import Stack, ztauthz_command
from app.dev.tokens import mint
from app.transport.grpc import AUTHORIZATION_SERVICE
from tests.integration.transport_support import direct_check

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(frozen=True, slots=True)
class Beside:
    process: ManagedProcess
    http: int
    grpc: int
    admin: int


def _config(path: Path, stack: Stack, http: int, grpc_port: int, admin: int) -> Path:
    path.write_text(
        f"""
server:
  check: {{port: {http}}}
  grpc: {{enabled: true, port: {grpc_port}}}
  admin: {{port: {admin}}}
  shutdown_grace: 2s
issuers:
  - issuer: {stack.issuer_url}
    audiences: [{stack.audience}]
policies: {stack.policies}
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def beside(http_stack: Stack, tmp_path: Path, child_env: dict[str, str]) -> Iterator[Beside]:
    http, grpc_port, admin = free_port(), free_port(), free_port()
    config = _config(tmp_path / "ztauthz.yaml", http_stack, http, grpc_port, admin)
    process = ManagedProcess(
        "ztauthz-beside",
        [*ztauthz_command(), "serve", "--config", str(config)],
        log_path=tmp_path / "ztauthz.log",
        ready=HttpReady(f"http://127.0.0.1:{admin}/readyz"),
        env=child_env,
    )
    with ProcessGroup() as group:
        group.start(process)
        yield Beside(process, http, grpc_port, admin)


def _stub(channel: grpc.Channel) -> Any:
    return health_pb2_grpc.HealthStub(channel)  # typeshed's HealthStub declares no methods


def _health(port: int, service: str) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        response = _stub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    status: int = response.status
    return status


def test_both_listeners_give_the_same_decisions(http_stack: Stack, beside: Beside) -> None:
    token = mint(
        http_stack.keys,
        issuer=http_stack.issuer_url,
        audience=http_stack.audience,
        subject="alice",
        groups=["finance"],
        scopes=["invoices:read"],
    )
    for path, headers in [
        ("/invoices", {"Authorization": f"Bearer {token}"}),
        ("/invoices", {}),
        ("/internal/x", {"Authorization": f"Bearer {token}"}),
        ("/public/page", {"x-auth-subject": "admin"}),
    ]:
        over_http = direct_check("http", beside.http, "GET", path, headers)
        over_grpc = direct_check("grpc", beside.grpc, "GET", path, headers)
        assert over_http.status == over_grpc.status, path
        assert over_http.reason == over_grpc.reason, path
        assert over_http.headers_to_remove == over_grpc.headers_to_remove, path
        for name in ("x-auth-subject", "www-authenticate", "content-type"):
            assert over_http.headers.get(name) == over_grpc.headers.get(name), (path, name)


def test_grpc_health_reports_serving_when_ready(beside: Beside) -> None:
    assert _health(beside.grpc, "") == SERVING
    assert _health(beside.grpc, AUTHORIZATION_SERVICE) == SERVING


def test_sigterm_turns_health_not_serving_and_exits_cleanly(beside: Beside) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{beside.grpc}")
    try:
        watch = _stub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=15)
        assert next(watch).status == SERVING
        pid = beside.process.pid
        assert pid is not None
        os.kill(pid, signal.SIGTERM)
        # Watchers learn that the service is going away before the stream ends.
        assert next(watch).status == NOT_SERVING
        deadline = time.monotonic() + 10
        while beside.process.returncode is None:
            assert time.monotonic() < deadline, "ztauthz did not stop after SIGTERM"
            time.sleep(0.05)
    finally:
        channel.close()
    assert beside.process.returncode == 0
    for port in (beside.http, beside.grpc, beside.admin):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
