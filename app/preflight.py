"""Start-up checks that must run before ``serve`` imports or opens anything.

Each failure is a ``PreflightError`` whose message is the one line ``ztauthz serve`` prints
before exiting 2 (docs/cli.md):

- ``OTEL_PROPAGATORS``: OpenTelemetry reads it while its ``opentelemetry.propagate`` module is
  first imported (FastAPI's instrumentation imports it) and raises from deep inside that import
  for a name it cannot load (``jaeger`` without its package). So the names are checked here,
  against the ones ztauthz supports, from the environment alone: this module imports nothing
  of OpenTelemetry.
- The listening ports: every configured port (check, gRPC, admin, the SSF receiver's own) is
  bound once, all of them together, and released, before any listener starts. A port in use,
  or the same port given to two listeners, is named with its setting instead of surfacing as
  a log line from one server after another has already started.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from app.settings import Settings

# The OTEL_PROPAGATORS names ztauthz supports (app/telemetry/tracing.py builds each).
PROPAGATORS: Final = ("tracecontext", "baggage", "b3", "b3multi")


class PreflightError(Exception):
    """A start-up problem, described in one line."""


def propagator_names(environ: Mapping[str, str]) -> list[str]:
    """The names in ``OTEL_PROPAGATORS`` (lower-cased, blanks dropped); ``[]``: the default set.

    Raises ``PreflightError`` for a name ztauthz does not support (``none`` only alone)."""
    names = [n.strip().lower() for n in environ.get("OTEL_PROPAGATORS", "").split(",")]
    names = [n for n in names if n]
    if names == ["none"]:
        return names
    unknown = sorted(set(names) - set(PROPAGATORS))
    if unknown:
        raise PreflightError(
            f"OTEL_PROPAGATORS: unsupported {', '.join(unknown)}; "
            f"use any of {', '.join(PROPAGATORS)}, or none alone"
        )
    return names


@dataclass(frozen=True, slots=True)
class Listener:
    """One address ``serve`` will listen on, and the setting that names its port."""

    setting: str  # e.g. "server.grpc.port"
    host: str
    port: int


def probe_ports(listeners: Iterable[Listener]) -> None:
    """Bind every listener's address (all at once, as the servers will), then release them.

    Port 0 (any free port) is not probed. Raises ``PreflightError`` naming the first listener
    whose address is taken, is given twice, or cannot be bound."""
    with contextlib.ExitStack() as held:
        for listener in listeners:
            if listener.port == 0:
                continue
            try:
                addresses = socket.getaddrinfo(
                    listener.host or None,
                    listener.port,
                    type=socket.SOCK_STREAM,
                    flags=socket.AI_PASSIVE,
                )
            except socket.gaierror as exc:
                raise PreflightError(
                    f"{listener.setting}: cannot resolve host {listener.host!r}: {exc.strerror}"
                ) from None
            for family, kind, proto, _, address in addresses:
                sock = held.enter_context(socket.socket(family, kind, proto))
                # As the servers do: a port whose old connections linger in TIME_WAIT is free.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    sock.bind(address)
                    sock.listen(1)  # two bound but idle sockets may share a port; listening not
                except OSError as exc:
                    where = f"{listener.host}:{listener.port}"
                    if exc.errno == errno.EADDRINUSE:
                        raise PreflightError(
                            f"{listener.setting}: port {listener.port} is already in use "
                            f"({where}: another process, or another ztauthz listener)"
                        ) from None
                    raise PreflightError(
                        f"{listener.setting}: cannot listen on {where}: {exc.strerror}"
                    ) from None


def serve_listeners(settings: Settings) -> list[Listener]:
    """The addresses ``serve`` listens on with these settings."""
    server = settings.server
    listeners = [Listener("server.admin.port", server.admin.host, server.admin.port)]
    if server.check.enabled:
        listeners.append(Listener("server.check.port", server.check.host, server.check.port))
    if server.grpc.enabled:
        listeners.append(Listener("server.grpc.port", server.grpc.host, server.grpc.port))
    receiver = settings.signals.receiver
    if settings.signals.own_listener:
        listeners.append(Listener("signals.receiver.port", receiver.host, receiver.port))
    return listeners
