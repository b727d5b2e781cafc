"""The HTTP check listener: uvicorn's own HTTP/1.1 serving one lean ASGI callable.

Every request to this listener is a check, so the check is answered at the ASGI level
(``CheckEndpoint``): no routing, no Request or Response objects, no middleware. The Envoy
contract (request mapping, response rendering) is ``http_wire.py``; this module only connects
it to uvicorn. The same path serves every configuration: with tracing on, the pipeline's
``ztauthz.check`` span is the server span (``Telemetry.begin_check``), so no second stack is
needed. FastAPI serves the admin listener only (``admin.py``).

HTTP/1.1 itself (parsing, pipelining, keep-alive, flow control, graceful shutdown) is
uvicorn's, with httptools; ``BoundedHead`` adds the one thing uvicorn's httptools protocol does
not have: a bound on the request head, answered 431. An exception that escapes the endpoint
becomes uvicorn's 500, which Envoy turns into a refusal: the check fails closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.types import Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.check import Checker
from app.transport import http_wire
from app.transport.render import render

# Request line and headers together. Envoy's own limit on a request's headers is 60 KiB by
# default (max_request_headers_kb), and the check request carries a subset of them.
MAX_HEAD_BYTES = 96 * 1024

# Idle connections on the check listener are closed by Envoy, the client, never first by
# ztauthz: a server-side close racing a request Envoy has just sent on that connection fails
# the request (with status_on_error: a spurious 503). Envoy's upstream idle timeout is one hour
# unless its cluster sets common_http_protocol_options.idle_timeout; this is longer.
CHECK_KEEP_ALIVE_SECONDS = 3_900

_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-length: 0\r\nconnection: close\r\n\r\n"
)
_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
# After a refusal: how long what the client still sends is read and dropped before closing.
LINGER_SECONDS = 2.0


_CANNOT_DECIDE: http_wire.RawHeaders = [(b"content-length", b"0"), (b"connection", b"close")]


class CheckEndpoint:
    """ASGI app answering one HTTP request with one check."""

    def __init__(self, checker: Checker) -> None:
        self.checker = checker
        settings = checker.runtime.state.settings  # fixed for the runtime; reloads swap policies
        self.prefix = settings.server.check.path_prefix
        self._response = settings.response

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off and upgrades are not served
            return
        ctx = http_wire.request_context(
            scope["method"],
            scope.get("raw_path") or scope["path"].encode(),
            scope.get("query_string", b""),
            scope["headers"],
            self.prefix,
        )
        try:
            decision = await self.checker.check(ctx)
        except asyncio.CancelledError:
            # The shutdown grace ran out while this check waited (for keys): it is decided
            # and logged as cancelled by the Checker; the answer is "cannot decide".
            await send(_start(503, _CANNOT_DECIDE))
            await send({"type": "http.response.body", "body": b""})
            raise
        rendered = render(decision, self._response)
        await send(_start(rendered.status, http_wire.response_head(rendered)))
        await send({"type": "http.response.body", "body": rendered.body})


def _start(status: int, headers: http_wire.RawHeaders) -> Message:
    return {"type": "http.response.start", "status": status, "headers": headers}


class BoundedHead(HttpToolsProtocol):
    """uvicorn's httptools protocol with a few refusals of its own, each answered after the
    requests before it and followed by a close, before any check runs:

    - a request head over ``MAX_HEAD_BYTES``: 431. httptools accepts a head of any size and
      calls back only for complete headers, so a header that never ends would grow memory
      without bound. Every read that arrives while a head is open from an earlier read counts
      (a lower bound of that head's size), so an unfinished head is refused at most one read
      after the limit; a completed head is measured exactly, but only when the reads it came
      in could hold that much (one comparison per request otherwise).
    - an upgrade (WebSocket, h2c): 400. Envoy's check requests never ask for one, and uvicorn
      would stop parsing the connection after it.
    - a malformed request: 400, as uvicorn answers it, but after the answers to the requests
      pipelined before it (uvicorn would drop them), and closed gracefully: our side first,
      then what the client still sends is read and dropped for ``LINGER_SECONDS``, so that the
      refusal is not lost to a connection reset.
    """

    _head_open = False  # a request has begun and its head is not complete
    _head_began_in_this_read = False
    _head_reads = 0  # bytes of the reads that arrived while the open head was open before
    _read = 0  # bytes of the current read
    _refusal = b""  # the answer that ends this connection, once what precedes it is answered
    _refused = False  # the refusal was written: everything else is dropped

    def data_received(self, data: bytes) -> None:
        if self._refusal:
            return  # nothing after a refusal is parsed
        self._read = len(data)
        self._head_began_in_this_read = False
        if self._head_open:
            self._head_reads += self._read
        super().data_received(data)
        # Counted above when the head was open before this read; it is a lower bound of the
        # head's size only if that same head is still open after it.
        open_before = self._head_open and not self._head_began_in_this_read
        if open_before and not self._refusal and self._head_reads > MAX_HEAD_BYTES:
            self._refuse(_TOO_LARGE)

    def on_message_begin(self) -> None:
        self._head_open = self._head_began_in_this_read = True
        self._head_reads = 0
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._head_open = False
        if self._head_reads + self._read > MAX_HEAD_BYTES and self._head_size() > MAX_HEAD_BYTES:
            self._stop(_TOO_LARGE)
        if self.parser.should_upgrade():
            self._stop(_BAD_REQUEST)
        super().on_headers_complete()

    def _head_size(self) -> int:
        """The request line and headers, as parsed (without the whitespace around values)."""
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def _stop(self, refusal: bytes) -> None:
        """Refuse from inside a parser callback: the exception stops the parser, which makes
        uvicorn answer 400 (``send_400_response``), here replaced by ``refusal``."""
        self._refusal = refusal
        raise ValueError("request refused")

    def send_400_response(self, msg: str) -> None:
        self._refuse(self._refusal or _BAD_REQUEST)

    def _refuse(self, refusal: bytes) -> None:
        self._refusal = refusal
        self.flow.pause_reading()
        self._refuse_when_idle()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._refusal:
            self.flow.pause_reading()  # uvicorn resumes reading after each answer
            self._refuse_when_idle()

    def _refuse_when_idle(self) -> None:
        busy = self.cycle is not None and not self.cycle.response_complete
        if busy or self.pipeline or self._refused or self.transport.is_closing():
            return
        self._refused = True
        self._unset_keepalive_if_required()
        self.transport.write(self._refusal)
        if not self.transport.can_write_eof():  # pragma: no cover - TCP always can
            self.transport.close()
            return
        self.transport.write_eof()
        self.flow.resume_reading()  # read and drop until the client closes, or the linger ends
        self.loop.call_later(LINGER_SECONDS, self.transport.close)


class ListenerServer(uvicorn.Server):
    """uvicorn without signal handlers of its own: ``serve`` stops every listener together.

    ``listening`` is set once the listener accepts connections."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.listening.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def listener_config(app: Any, host: str, port: int, log_level: str, grace: float) -> uvicorn.Config:
    """uvicorn's configuration for one of ztauthz's listeners (check or admin)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=BoundedHead,
        ws="none",  # no upgrades on either listener
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
    )


def check_config(checker: Checker, log_level: str, grace: float) -> uvicorn.Config:
    """The HTTP check listener, as ``server.check`` says."""
    listener = checker.runtime.state.settings.server.check
    config = listener_config(CheckEndpoint(checker), listener.host, listener.port, log_level, grace)
    config.timeout_keep_alive = CHECK_KEEP_ALIVE_SECONDS
    return config
