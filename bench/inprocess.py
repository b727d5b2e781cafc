"""ztauthz in this process: a real Runtime (keys fetched from a real dev issuer process,
compiled policies, telemetry on) and its check endpoint driven through ASGI without sockets.

The micro-benchmarks (bench/micro.py) and the profiler entry point (bench/profile.py) use it,
so what they time is the code every check runs, minus the HTTP server.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from app.check import Checker
from app.dev.keys import DevKeys
from app.dev.ports import free_port
from app.dev.procs import HttpReady, ManagedProcess, ProcessGroup
from app.dev.stack import ztauthz_command
from app.dev.stack_config import AUDIENCE, LOOPBACK
from app.dev.tokens import mint
from app.request import RequestContext, make_context
from app.settings import Issuer, Settings
from app.state import Runtime
from app.telemetry.hub import Telemetry
from app.telemetry.tracing import Tracing
from app.transport.http import CheckEndpoint, listener_config
from bench import policies

TOKEN_TTL = 600.0  # within the issuer's max_token_lifetime (15m)
PREFIX = "/check"
# What Envoy's HTTP ext_authz sends besides the allow-listed client headers.
ENVOY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"host", b"api.example.com"),
    (b"x-request-id", b"5f0d1c4e-2b7a-4f7e-9c1d-6a3b8e2f4d10"),
    (b"x-ztauthz-client-address", b"192.0.2.10"),
    (b"x-envoy-expected-rq-timeout-ms", b"1000"),
    (b"content-length", b"0"),
)


@dataclass(frozen=True, slots=True)
class DevIssuer:
    url: str
    keys: DevKeys

    def token(
        self,
        alg: str = "RS256",
        subject: str = policies.SUBJECT,
        extra_claims: dict[str, Any] | None = None,
    ) -> str:
        """A token for the benchmark request (a fresh ``jti``: every call a distinct token)."""
        return mint(
            self.keys,
            issuer=self.url,
            audience=AUDIENCE,
            subject=subject,
            groups=list(policies.GROUPS),
            scopes=list(policies.SCOPES),
            alg=alg,
            ttl=TOKEN_TTL,
            extra_claims=extra_claims,
        )

    def tokens(self, count: int, alg: str = "RS256") -> list[str]:
        return [self.token(alg) for _ in range(count)]


@contextlib.contextmanager
def dev_issuer(workdir: Path) -> Iterator[DevIssuer]:
    """The dev OIDC issuer (discovery + JWKS) as a process on a free loopback port."""
    keys_dir = workdir / "keys"
    keys = DevKeys.load_or_create(keys_dir)
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    argv = [*ztauthz_command(), "dev", "issuer", "--keys", str(keys_dir), "--port", str(port)]
    process = ManagedProcess(
        "issuer",
        argv,
        log_path=workdir / "logs" / "issuer-inprocess.log",
        ready=HttpReady(f"{url}/.well-known/openid-configuration"),
    )
    with ProcessGroup() as group:
        group.start(process)
        yield DevIssuer(url, keys)


def issuer_config(issuer_url: str) -> Issuer:
    return Issuer(
        issuer=issuer_url,
        discovery=True,
        audiences=[AUDIENCE],
        algorithms=["RS256", "ES256"],
        max_token_lifetime=timedelta(minutes=15),
        leeway=timedelta(seconds=30),
    )


def settings_for(issuer_url: str, policy_dir: Path, **overrides: Any) -> Settings:
    return Settings(
        issuers=[issuer_config(issuer_url)],
        policies=policy_dir,
        log_level="warning",
        **overrides,
    )


class _Discard(io.StringIO):
    """Where the decision lines go in-process: formatted and queued as always, then dropped."""

    def write(self, text: str) -> int:
        return len(text)


def traced() -> Tracing:
    """Tracing as ``serve`` runs it (batched export), every span sampled, exported nowhere:
    what tracing costs a check in-process, minus the network."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class _Nowhere(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_Nowhere()))
    return Tracing(provider)


@contextlib.asynccontextmanager
async def running(settings: Settings, tracing: bool = False) -> AsyncIterator[Runtime]:
    """A started Runtime whose keys are loaded; its decision log runs as in production (each
    line formatted and queued for the writer thread), only the lines are then discarded.
    ``tracing``: every check traced as ``serve`` would with an OTLP endpoint (``traced``)."""
    telemetry = Telemetry.create(settings, stream=_Discard(), tracing=traced() if tracing else None)
    runtime = Runtime(settings, telemetry=telemetry)
    async with runtime:
        deadline = time.monotonic() + 10
        while not runtime.is_ready():
            if time.monotonic() > deadline:
                raise RuntimeError("the runtime did not load the issuer's keys in 10s")
            await asyncio.sleep(0.01)
        yield runtime


def context(token: str) -> RequestContext:
    headers = {k.decode(): v.decode() for k, v in ENVOY_HEADERS}
    headers["authorization"] = f"Bearer {token}"
    return make_context(policies.METHOD, "api.example.com", policies.PATH, headers)


def dpop_context(token: str, proof: str) -> RequestContext:
    """The benchmark request with a DPoP-bound token and its proof, over https as Envoy saw it
    (``x-forwarded-proto``: the proof's ``htu`` scheme)."""
    headers = {k.decode(): v.decode() for k, v in ENVOY_HEADERS}
    headers["authorization"] = f"DPoP {token}"
    headers["dpop"] = proof
    headers["x-forwarded-proto"] = "https"
    return make_context(policies.METHOD, "api.example.com", policies.PATH, headers)


def scope(token: str) -> dict[str, Any]:
    path = (PREFIX + policies.PATH).encode()
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": policies.METHOD,
        "scheme": "http",
        "path": path.decode(),
        "raw_path": path,
        "query_string": b"",
        "root_path": "",
        "headers": [*ENVOY_HEADERS, (b"authorization", f"Bearer {token}".encode())],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 9000),
    }


class AsgiDriver:
    """Calls the check app as uvicorn would, one request at a time, and keeps the statuses."""

    def __init__(self, runtime: Runtime) -> None:
        self.app = CheckEndpoint(Checker(runtime))
        self.statuses: dict[int, int] = {}

    async def _receive(self) -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def _send(self, message: Any) -> None:
        if message["type"] == "http.response.start":
            status = message["status"]
            self.statuses[status] = self.statuses.get(status, 0) + 1

    async def run(self, tokens: Sequence[str], repeat: int = 1) -> float:
        """Seconds for ``repeat`` passes over ``tokens``, one request each."""
        scopes = [scope(token) for token in tokens]
        app, receive, send = self.app, self._receive, self._send
        started = time.perf_counter()
        for _ in range(repeat):
            for one in scopes:
                await app(dict(one), receive, send)
        return time.perf_counter() - started


class _Transport(asyncio.Transport):
    """Collects nothing: what the listener writes is counted by the protocol driver."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 9000), "peername": ("127.0.0.1", 40000)}.get(
            name, default
        )

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class ProtocolDriver:
    """Feeds HTTP/1.1 check requests to the check listener's protocol (uvicorn's, as ``serve``
    runs it: app/transport/http.py) over a fake transport, one at a time, and keeps the
    statuses."""

    def __init__(self, runtime: Runtime) -> None:
        from uvicorn.server import ServerState

        from app.transport.http import BoundedHead

        config = listener_config(CheckEndpoint(Checker(runtime)), "127.0.0.1", 9000, "warning", 1)
        config.load()
        driver = self

        class Timed(BoundedHead):
            def on_response_complete(self) -> None:
                super().on_response_complete()
                if driver.answered is not None and not driver.answered.done():
                    driver.answered.set_result(None)

        self.answered: asyncio.Future[None] | None = None
        self.protocol = Timed(config, ServerState(), {})
        self.transport = _Transport()
        self.protocol.connection_made(self.transport)
        self.statuses: dict[int, int] = {}

    async def run(self, tokens: Sequence[str], repeat: int = 1) -> float:
        """Seconds for ``repeat`` passes over ``tokens``, one request each."""
        heads = [request_bytes(token) for token in tokens]
        loop = asyncio.get_running_loop()
        protocol, transport = self.protocol, self.transport
        started = time.perf_counter()
        for _ in range(repeat):
            for head in heads:
                self.answered = loop.create_future()
                transport.written.clear()
                protocol.data_received(head)
                await self.answered
                status = int(transport.written[0][9:12])
                self.statuses[status] = self.statuses.get(status, 0) + 1
        return time.perf_counter() - started


def request_bytes(token: str) -> bytes:
    lines = [f"{policies.METHOD} {PREFIX}{policies.PATH} HTTP/1.1".encode()]
    lines += [name + b": " + value for name, value in ENVOY_HEADERS]
    lines.append(f"authorization: Bearer {token}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n"
