"""Assembling and running the service: runtime state, the check listeners (HTTP ext_authz
and/or gRPC ext_authz) and the admin listener, in one event loop, stopped together."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import signal
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import uvicorn

from app import heap
from app.check import Checker
from app.reload import reloading
from app.settings import Settings
from app.signals.receiver import create_receiver_app
from app.state import Runtime
from app.telemetry.hub import Telemetry
from app.telemetry.tracing import Tracing
from app.transport.admin import create_admin_app
from app.transport.check_protocol import Answers, CheckProtocol
from app.transport.http import create_check_app

if TYPE_CHECKING:
    from app.transport.grpc import GrpcServer

log = logging.getLogger("ztauthz")

# Idle connections on the check listener are closed by Envoy, the client, never first by
# ztauthz: a server-side close racing a request Envoy has just sent on that connection fails
# the request (with status_on_error: a spurious 503). Envoy's upstream idle timeout is one hour
# unless its cluster sets common_http_protocol_options.idle_timeout; this is longer.
CHECK_KEEP_ALIVE_SECONDS = 3_900


class _Server(uvicorn.Server):
    """uvicorn without signal handlers of its own: ``serve`` stops every listener together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (``uvicorn[standard]`` brings it on Linux and
    macOS): its transports and scheduling cost a fraction of asyncio's on every check. None
    means asyncio's own loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - e.g. Windows
        return None
    return uvloop.new_event_loop


def _server(
    app: object,
    host: str,
    port: int,
    log_level: str,
    grace: float,
    http: Callable[..., asyncio.Protocol] | None = None,
    keep_alive: int = 5,
) -> uvicorn.Server:
    """uvicorn serving ``app``, or answering with the protocol ``http`` builds per connection."""
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        log_level=log_level,
        # uvicorn[standard]'s C parser, as "auto" would pick; or the check listener's own
        # protocol (app/transport/check_protocol.py), which uses the same parser.
        http=http or "httptools",  # type: ignore[arg-type]
        # Envoy is the only client: X-Forwarded-* describe the original request (policy input
        # via the headers Envoy forwards), never this connection, so uvicorn must not rewrite
        # the scope's client from them.
        proxy_headers=False,
        access_log=False,  # access logs would carry query strings; decisions are logged instead
        log_config=None,  # logging is configured once, as JSON (app/telemetry/logging.py)
        server_header=False,
        date_header=False,
        lifespan="off",
        timeout_graceful_shutdown=math.ceil(grace),
        timeout_keep_alive=keep_alive,
    )
    return _Server(config)


@contextlib.contextmanager
def _on_signals(handler: Callable[[], None]) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, handler)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread: the caller stops the servers itself
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _settle() -> None:
    settled = heap.settle()
    log.info(
        "heap settled: %d objects out of the collector's sight (%.0f ms)",
        settled.frozen,
        settled.seconds * 1e3,
        extra={"frozen_objects": settled.frozen, "collected_objects": settled.collected},
    )


async def serve(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM. Policies are loaded (and refused) before any port opens.

    On the first signal every listener stops accepting, gRPC health turns NOT_SERVING, and
    in-flight checks get ``server.shutdown_grace`` to finish; a second signal stops at once.
    """
    tracing = Tracing.from_env()  # OTEL_* only; off (nothing exported) when unconfigured
    tracing.install_propagator()
    runtime = Runtime(settings, telemetry=Telemetry.create(settings, tracing=tracing))
    async with runtime:
        checker = Checker(runtime)
        grace = settings.server.shutdown_grace.total_seconds()
        servers = [
            _server(
                create_admin_app(runtime),
                settings.server.admin.host,
                settings.server.admin.port,
                settings.log_level,
                grace,
            )
        ]
        receiver = settings.signals.receiver
        if receiver.listener == "own" and settings.signals.transmitters:
            # The SSF push receiver (RFC 8935) on a port of its own: the one port transmitters
            # reach; the admin port (metrics, kill switch) stays internal.
            servers.append(
                _server(
                    create_receiver_app(runtime.signals),
                    receiver.host,
                    receiver.port,
                    settings.log_level,
                    grace,
                )
            )
        if settings.server.check.enabled:
            check = create_check_app(checker)
            listener = settings.server.check
            protocol = None
            if runtime.telemetry.tracing.enabled:
                # opentelemetry-instrumentation-fastapi's server span around every check
                runtime.telemetry.tracing.instrument(check)
            else:
                protocol = functools.partial(CheckProtocol, Answers(check.endpoint))
            servers.append(
                _server(
                    check,
                    listener.host,
                    listener.port,
                    settings.log_level,
                    grace,
                    protocol,
                    CHECK_KEEP_ALIVE_SECONDS,
                )
            )
        grpc_server: GrpcServer | None = None
        if settings.server.grpc.enabled:
            # Imported only when used: grpcio and the Envoy protos are ~20 MB per worker.
            from app.transport.grpc import GrpcServer

            grpc_server = GrpcServer(checker, settings.server.grpc)
        stopping = asyncio.Event()

        def stop() -> None:
            for server in servers:
                server.force_exit = stopping.is_set()  # the second signal: no more grace
                server.should_exit = True
            stopping.set()

        async def grpc_until_stopped() -> None:
            if grpc_server is not None:
                await stopping.wait()
                await grpc_server.stop(0 if servers[0].force_exit else grace)

        # Everything built so far (modules, settings, compiled policies, keys) lives as long
        # as the process, or until a reload: moved out of the collector's sight (app/heap.py),
        # so the collections that short-lived check objects trigger never rescan it.
        _settle()
        with (
            _on_signals(stop),
            reloading(runtime, runtime.telemetry.events.emit, after_swap=_settle),
        ):
            try:
                if grpc_server is not None:
                    await grpc_server.start()
                log.info("ztauthz serving")
                await asyncio.gather(*(s.serve() for s in servers), grpc_until_stopped())
            finally:
                stop()
                if grpc_server is not None:
                    await grpc_server.stop(0)
