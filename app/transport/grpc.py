"""Envoy gRPC ext_authz transport: ``envoy.service.auth.v3.Authorization/Check``.

The method is served under Envoy's path with ztauthz's own message classes (app/protos: the same
fields and numbers as Envoy's, so the bytes are the same), registered by hand
(``add_authorization``) because no generated service code names Envoy's path; clients (the
tests) call it through ``check_method``.

The servicer maps the CheckRequest to a RequestContext, calls ``Checker.check`` (the same call,
pipeline and telemetry as the HTTP transport) and renders the Decision with the same renderer.
It holds no authorization logic. One rule is gRPC's own: when ztauthz cannot decide (a 5xx
decision such as ``keys_unavailable``) the RPC fails with UNAVAILABLE, because that is what
Envoy treats as an error, exactly as it treats a 5xx over HTTP: the request is refused with
``status_on_error`` and nothing is ever allowed.

``GrpcServer`` runs the servicer on a ``grpc.aio`` server in the service's event loop, beside
``grpc.health.v1`` health checking that follows readiness (signing keys loaded): SERVING or
NOT_SERVING for the whole server (``""``) and for ``envoy.service.auth.v3.Authorization``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from app import tasks
from app.check import Checker
from app.settings import GrpcListener
from app.transport import grpc_wire
from app.transport.render import render

log = logging.getLogger("ztauthz.grpc")

AUTHORIZATION_SERVICE = "envoy.service.auth.v3.Authorization"
CHECK = "Check"
CHECK_PATH = f"/{AUTHORIZATION_SERVICE}/{CHECK}"
HEALTH_SERVICES = ("", AUTHORIZATION_SERVICE)
READINESS_POLL_SECONDS = 0.5
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


CheckHandler = Callable[
    [grpc_wire.CheckRequest, grpc.aio.ServicerContext[Any, Any]],
    Awaitable[grpc_wire.CheckResponse | bytes],
]


def _serialize(response: grpc_wire.CheckResponse | bytes) -> bytes:
    """A CheckResponse's bytes; a handler may answer with them already encoded."""
    return response if isinstance(response, bytes) else response.SerializeToString()


def add_authorization(server: grpc.aio.Server, check: CheckHandler) -> None:
    """Serve ``check`` as Envoy's ``Authorization/Check`` on ``server`` (before it starts)."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        CHECK: grpc.unary_unary_rpc_method_handler(
            check,
            request_deserializer=grpc_wire.CheckRequest.FromString,
            response_serializer=_serialize,
        )
    }
    # As protoc's service code does: the generic handler, and the same handlers pre-registered
    # (looked up once by grpc core instead of on every call).
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(AUTHORIZATION_SERVICE, handlers),)
    )
    server.add_registered_method_handlers(AUTHORIZATION_SERVICE, handlers)


def check_method(
    channel: grpc.Channel,
) -> grpc.UnaryUnaryMultiCallable[grpc_wire.CheckRequest, grpc_wire.CheckResponse]:
    """Envoy's ``Authorization/Check`` on ``channel``, as Envoy calls it (for tests)."""
    return channel.unary_unary(
        CHECK_PATH,
        request_serializer=grpc_wire.CheckRequest.SerializeToString,
        response_deserializer=grpc_wire.CheckResponse.FromString,
    )


def check_method_aio(
    channel: grpc.aio.Channel,
) -> grpc.aio.UnaryUnaryMultiCallable[grpc_wire.CheckRequest, grpc_wire.CheckResponse]:
    """``check_method`` on an asyncio channel."""
    return channel.unary_unary(
        CHECK_PATH,
        request_serializer=grpc_wire.CheckRequest.SerializeToString,
        response_deserializer=grpc_wire.CheckResponse.FromString,
    )


class AuthorizationServicer:
    """``Authorization/Check``: CheckRequest -> RequestContext -> Checker -> CheckResponse."""

    def __init__(self, checker: Checker) -> None:
        self._checker = checker

    async def check(
        self, request: grpc_wire.CheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bytes:
        try:
            ctx = grpc_wire.to_context(request, context.invocation_metadata() or ())
        except Exception:
            # Not expected (the mapping reads fields only), but never fatal: an empty request
            # is decided, logged and denied like any other malformed one.
            log.exception("unreadable CheckRequest; deciding on an empty request")
            ctx = grpc_wire.EMPTY_CONTEXT
        decision = await self._checker.check(ctx)
        rendered = render(decision, self._checker.runtime.state.settings.response)
        if rendered.status >= 500:
            await context.abort(grpc.StatusCode.UNAVAILABLE, decision.reason.value)
        return grpc_wire.encode_response(rendered, decision.reason.value)


class ReadinessHealth(health_aio.HealthServicer):
    """grpc.health.v1 whose status follows ``ready()``: refreshed on every Check and Watch, and
    by a poll loop that keeps Watch streams current; NOT_SERVING for good once graceful shutdown
    starts."""

    def __init__(self, ready: Callable[[], bool]) -> None:
        super().__init__()
        self._ready = ready

    async def refresh(self) -> None:
        status = SERVING if self._ready() else NOT_SERVING
        for service in HEALTH_SERVICES:
            await self.set(service, status)  # ignored once shutting down

    async def Check(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await self.refresh()
        return await super().Check(request, context)

    async def Watch(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await self.refresh()  # the first status a watcher gets is current, too
        await super().Watch(request, context)


class GrpcServer:
    """The gRPC check listener and its health service, started and stopped as one."""

    def __init__(self, checker: Checker, listener: GrpcListener) -> None:
        self._listener = listener
        self.health = ReadinessHealth(checker.runtime.is_ready)
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", listener.max_message_bytes),
                ("grpc.max_send_message_length", listener.max_message_bytes),
                # A second process on the same port must fail to start, not share the port.
                ("grpc.so_reuseport", 0),
            ]
        )
        add_authorization(self._server, AuthorizationServicer(checker).check)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        self._poller: asyncio.Task[None] | None = None
        self.port: int | None = None

    async def start(self) -> int:
        """Bind and start serving; returns the bound port (useful with port 0)."""
        address = f"{self._listener.host}:{self._listener.port}"
        if ":" in self._listener.host:
            address = f"[{self._listener.host}]:{self._listener.port}"
        try:
            self.port = self._server.add_insecure_port(address)
        except RuntimeError as exc:  # grpcio raises RuntimeError when it cannot bind
            raise OSError(f"cannot listen for gRPC on {address}: {exc}") from None
        if self.port == 0:  # older grpcio reports a failed bind as port 0
            raise OSError(f"cannot listen for gRPC on {address}")
        await self.health.refresh()
        await self._server.start()
        self._poller = asyncio.create_task(self._poll(), name="grpc-readiness")
        log.info("gRPC ext_authz listening on %s:%d", self._listener.host, self.port)
        return self.port

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(READINESS_POLL_SECONDS)
            await self.health.refresh()

    async def stop(self, grace: float | None) -> None:
        """Report NOT_SERVING, refuse new RPCs and give in-flight ones ``grace`` seconds."""
        await tasks.stop(self._poller)
        self._poller = None
        await self.health.enter_graceful_shutdown()
        await self._server.stop(grace)
