"""The shipped gRPC bootstrap's own guard: whatever an authorization server answers, Envoy lets it
touch only ``x-auth-*`` headers (``decoder_header_mutation_rules``), as ``allowed_upstream_headers``
does over HTTP. A deliberately misbehaving Authorization server stands in for ztauthz here: the
thing under test is the Envoy configuration we ship.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest

from app.dev.envoy import SHIPPED_ENVOY_GRPC_CONFIG, envoy_command, write_envoy_config
from app.dev.ports import free_port
from app.dev.procs import HttpReady, ManagedProcess, ProcessGroup
from app.dev.stack import Stack, http_request
from app.protos import envoy_ext_authz_pb2 as pb
from app.transport.grpc import add_authorization

pytestmark = pytest.mark.integration

OVERWRITE = pb.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


class Answering:
    """Allows every request, with whatever header changes the test sets."""

    def __init__(self) -> None:
        self.set: dict[str, str] = {}
        self.remove: list[str] = []

    async def check(
        self, request: pb.CheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CheckResponse:
        return pb.CheckResponse(
            status={"code": 0},
            ok_response=pb.OkHttpResponse(
                headers=[
                    pb.HeaderValueOption(
                        header=pb.HeaderValue(key=k, value=v), append_action=OVERWRITE
                    )
                    for k, v in self.set.items()
                ],
                headers_to_remove=self.remove,
            ),
        )


@pytest.mark.parametrize(
    ("set_", "remove", "status"),
    [
        ({"x-auth-subject": "alice"}, ["x-auth-groups"], 200),
        ({"x-user": "alice"}, [], 500),
        ({}, ["authorization"], 500),
        ({"x-auth-subject": "alice", "x-forwarded-for": "10.0.0.1"}, [], 500),
    ],
    ids=["identity-headers", "other-header", "remove-other-header", "mixed"],
)
async def test_only_identity_headers_may_change(
    grpc_stack: Stack, tmp_path: Path, set_: dict[str, str], remove: list[str], status: int
) -> None:
    servicer = Answering()
    servicer.set, servicer.remove = set_, remove
    server = grpc.aio.server()
    add_authorization(server, servicer.check)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        listen, admin = free_port(), free_port()
        config = write_envoy_config(
            tmp_path / "envoy.yaml",
            template=SHIPPED_ENVOY_GRPC_CONFIG,
            listen_port=listen,
            admin_port=admin,
            authz_port=port,
            upstream_port=grpc_stack.ports.upstream,
        )
        envoy = ManagedProcess(
            "envoy-guards",
            envoy_command(config),
            log_path=tmp_path / "envoy.log",
            ready=HttpReady(f"http://127.0.0.1:{admin}/ready"),
        )
        with ProcessGroup() as group:
            await asyncio.to_thread(group.start, envoy)
            reply = await asyncio.to_thread(
                http_request, listen, "GET", "/public/page", {"Authorization": "Bearer t"}
            )
    finally:
        await server.stop(0)
    assert reply.status == status, reply.body
    body = reply.json()
    reached = isinstance(body, dict) and "header_list" in body
    assert reached == (status == 200)
    if reached:
        assert body["headers"]["x-auth-subject"] == "alice"
        assert body["headers"]["authorization"] == "Bearer t"
