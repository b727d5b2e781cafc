"""The listeners: HTTP check, gRPC check and admin, and how the service stops."""

from __future__ import annotations

from datetime import timedelta
from typing import Final

from pydantic import Field, field_validator, model_validator

from app.durations import Duration
from app.settings.base import Model

# Defaults of the three listeners: the deployment files, the local stack and the injector use
# these too.
CHECK_PORT: Final = 9000
GRPC_PORT: Final = 9001
ADMIN_PORT: Final = 9100


class Listener(Model):
    host: str = "127.0.0.1"
    port: int = Field(ge=0, le=65535)


class CheckListener(Listener):
    """Envoy's HTTP ext_authz (``http_service``). Disable it to serve gRPC only."""

    enabled: bool = True
    port: int = Field(default=CHECK_PORT, ge=0, le=65535)
    path_prefix: str = "/check"

    @field_validator("path_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if value == "":
            return value
        if not value.startswith("/") or value.endswith("/") or "?" in value:
            raise ValueError("must start with '/', not end with '/', and hold no query")
        return value


class AdminListener(Listener):
    port: int = Field(default=ADMIN_PORT, ge=0, le=65535)


class GrpcListener(Listener):
    """Envoy's gRPC ext_authz (``envoy.service.auth.v3.Authorization``), beside or instead of
    the HTTP check listener, on its own port."""

    enabled: bool = False
    port: int = Field(default=GRPC_PORT, ge=0, le=65535)
    # A CheckRequest carries headers (Envoy caps them with max_request_headers_kb) and, with
    # include_peer_certificate, the client certificate: far below this bound.
    max_message_bytes: int = Field(default=1024 * 1024, ge=64 * 1024, le=64 * 1024 * 1024)


class Server(Model):
    check: CheckListener = CheckListener()
    admin: AdminListener = AdminListener()
    grpc: GrpcListener = GrpcListener()
    # How long in-flight checks may finish after SIGTERM before the listeners close.
    shutdown_grace: Duration = timedelta(seconds=5)

    @model_validator(mode="after")
    def _listeners(self) -> Server:
        if not (self.check.enabled or self.grpc.enabled):
            raise ValueError("enable at least one check listener: server.check or server.grpc")
        bound: list[tuple[str, Listener]] = [("check", self.check)] if self.check.enabled else []
        bound.append(("admin", self.admin))
        if self.grpc.enabled:
            bound.append(("grpc", self.grpc))
        seen: dict[tuple[str, int], str] = {}
        for name, listener in bound:
            key = (listener.host, listener.port)
            if listener.port and key in seen:
                raise ValueError(f"server.{name} and server.{seen[key]} use the same address")
            seen[key] = name
        return self
