"""Assembling and running the service: runtime state, the check listeners (HTTP ext_authz
and/or gRPC ext_authz) and the admin listener, in one event loop, stopped together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from app import heap
from app.check import Checker
from app.reload import reloading
from app.settings import Settings
from app.signals.receiver import create_receiver_app
from app.state import Runtime
from app.telemetry.hub import Telemetry
from app.telemetry.tracing import Tracing
from app.transport.admin import create_admin_app
from app.transport.http import ListenerServer, check_config, listener_config

if TYPE_CHECKING:
    from app.transport.grpc import GrpcServer

log = logging.getLogger("ztauthz")


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (``uvicorn[standard]`` brings it on Linux and
    macOS): its transports and scheduling cost a fraction of asyncio's on every check. None
    means asyncio's own loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - e.g. Windows
        return None
    return uvloop.new_event_loop


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
    """Run until SIGINT/SIGTERM. Policies are loaded (and refused) before any port opens; gRPC
    opens first and the admin listener (``/readyz``) last, once every other one listens.

    On the first signal every listener stops accepting, gRPC health turns NOT_SERVING, and
    in-flight checks get ``server.shutdown_grace`` to finish, then queued spans what is left of
    it (the collector cannot hold the exit); a second signal stops at once.
    """
    tracing = Tracing.from_env()  # OTEL_* only; off (nothing exported) when unconfigured
    tracing.install_propagator()
    runtime = Runtime(settings, telemetry=Telemetry.create(settings, tracing=tracing))
    async with runtime:
        checker = Checker(runtime)
        grace = settings.server.shutdown_grace.total_seconds()
        admin = create_admin_app(runtime)
        runtime.telemetry.tracing.instrument(admin)
        configs = [
            listener_config(
                admin,
                settings.server.admin.host,
                settings.server.admin.port,
                settings.log_level,
                grace,
            )
        ]
        receiver = settings.signals.receiver
        if settings.signals.own_listener:
            # The SSF push receiver (RFC 8935) on a port of its own: the one port transmitters
            # reach; the admin port (metrics, kill switch) stays internal.
            configs.append(
                listener_config(
                    create_receiver_app(runtime.signals),
                    receiver.host,
                    receiver.port,
                    settings.log_level,
                    grace,
                )
            )
        if settings.server.check.enabled:
            configs.append(check_config(checker, settings.log_level, grace))
        servers = [ListenerServer(config) for config in configs]
        grpc_server: GrpcServer | None = None
        if settings.server.grpc.enabled:
            # Imported only when used: grpcio and the Envoy protos are ~20 MB per worker.
            from app.transport.grpc import GrpcServer

            grpc_server = GrpcServer(checker, settings.server.grpc)
        stopping = asyncio.Event()
        deadline = math.inf  # the first signal's time + grace: everything ends by then

        def stop() -> None:
            nonlocal deadline
            deadline = min(deadline, time.monotonic() + grace)
            for server in servers:
                server.force_exit = stopping.is_set()  # the second signal: no more grace
                server.should_exit = True
            stopping.set()

        admin_server, others = servers[0], servers[1:]

        async def admin_once_others_listen() -> None:
            # The admin listener (/readyz) opens last: a replica that answers there has bound
            # every other port, so it never looks ready a moment before it fails to start.
            await asyncio.gather(*(s.listening.wait() for s in others))
            await admin_server.serve()

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
                await asyncio.gather(
                    admin_once_others_listen(), *(s.serve() for s in others), grpc_until_stopped()
                )
            finally:
                stop()
                if grpc_server is not None:
                    await grpc_server.stop(0)
                # Queued spans get what is left of the grace, whatever the collector does.
                runtime.telemetry.tracing.shutdown(max(0.0, deadline - time.monotonic()))
