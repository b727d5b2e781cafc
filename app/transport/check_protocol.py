"""The check listener's HTTP/1.1, spoken directly: httptools parses, the Checker decides, one
write answers.

uvicorn still runs the listener (sockets, graceful shutdown, the ``server.shutdown_grace``
wait); this protocol class replaces only its ASGI machinery. Every request on this listener is
a check, so nothing here needs a scope, message dicts, a receive channel or a per-header
validation of our own response: those cost several times the decision itself (measured in
bench/, see README "Performance"). The ASGI path (``app/transport/http.py``) is still used when
tracing is on, where ``opentelemetry-instrumentation-fastapi`` wraps each check in its server
span.

Per connection, requests are answered strictly in order (HTTP/1.1 pipelining), one check at a
time. A malformed request gets 400, a request head over ``MAX_HEAD_BYTES`` 431, and the
connection is closed; nothing reaches the Checker that it would not get through uvicorn.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import types
from collections import deque
from collections.abc import Coroutine, Generator
from typing import Any

import httptools

from app.check import Checker
from app.decision import Decision
from app.identity.principal import Principal
from app.transport.http import ALL_METHODS, CheckEndpoint, RawHeaders, head_context
from app.transport.render import DECISION_ID, HEADERS_TO_REMOVE, Rendered, removed_value

log = logging.getLogger("ztauthz.transport.http")

# Request line and headers together. Envoy's own limit on a request's headers is 60 KiB by
# default (max_request_headers_kb), and the check request carries a subset of them.
MAX_HEAD_BYTES = 96 * 1024
_METHODS = frozenset(ALL_METHODS)
_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    405: b"Method Not Allowed",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}
_REMOVE = HEADERS_TO_REMOVE.encode() + b": "
_ALLOW_START = b"HTTP/1.1 200 OK\r\n" + DECISION_ID.encode() + b": "
_KEEP_END = b"content-length: 0\r\n\r\n"
_CLOSE_END = b"content-length: 0\r\nconnection: close\r\n\r\n"
_NOT_ALLOWED = b"allow: " + ", ".join(ALL_METHODS).encode() + b"\r\ncontent-length: 0\r\n\r\n"
_HEAD_METHOD = b"HEAD"
# After a refusal: how long what the client still sends is read and dropped before closing.
LINGER_SECONDS = 2.0


def status_line(status: int) -> bytes:
    reason = _REASONS.get(status, b"")
    return b"HTTP/1.1 %d %s\r\n" % (status, reason)


_STATUS_LINES = {status: status_line(status) for status in _REASONS}


def encode_response(rendered: Rendered, head_only: bool, close: bool) -> bytes:
    """The whole HTTP/1.1 response for ``rendered``: status line, headers (with
    ``x-envoy-auth-headers-to-remove`` and the content-length), and the body unless HEAD."""
    body = rendered.body
    head = _status(rendered.status) + _header_lines(rendered, skip=None)
    head += b"content-length: %d\r\n" % len(body)
    if close:
        head += b"connection: close\r\n"
    return head + b"\r\n" if head_only else head + b"\r\n" + body


def _status(status: int) -> bytes:
    return _STATUS_LINES.get(status) or status_line(status)


def _header_lines(rendered: Rendered, skip: str | None) -> bytes:
    """``rendered``'s headers (but ``skip``) and the headers to remove, as header lines.

    Defence in depth: rendered values are percent-encoded claim values or fixed strings, but
    a CR, LF or NUL inside one must never reach the wire (it would split the response)."""
    parts: list[bytes] = []
    newlines = 0
    for name, value in rendered.headers.items():
        if name != skip:
            parts += (name.encode("latin-1"), b": ", value.encode("latin-1"), b"\r\n")
            newlines += 1
    if rendered.headers_to_remove:
        parts += (_REMOVE, removed_value(rendered.headers_to_remove), b"\r\n")
        newlines += 1
    lines = b"".join(parts)
    if lines.count(b"\n") != newlines or lines.count(b"\r") != newlines or b"\0" in lines:
        raise ValueError("a response header holds CR, LF or NUL")
    return lines


class Answers:
    """Turns the checks of one listener into HTTP/1.1 responses (shared by its connections).

    An allow answer's headers are a function of the principal, the rule and the policy
    version, except the decision id; a verified token found in the token cache comes with the
    same Principal object each time. So the encoded header lines of recent allow answers are
    kept, by (principal, rule, policy version), and only the decision id is written afresh.
    The Principal is compared by identity, never by ``id()`` alone, and answers that carry
    evidence (device, country, workload) are always rendered afresh.
    """

    MAX_HEADS = 4096

    def __init__(self, endpoint: CheckEndpoint) -> None:
        self.endpoint = endpoint
        self.checker: Checker = endpoint.checker
        self.prefix = endpoint.prefix
        self._heads: dict[tuple[int, str | None, str], tuple[Principal, bytes]] = {}

    def encode(self, decision: Decision, head_only: bool, close: bool) -> bytes:
        principal = decision.principal
        if not decision.allow or principal is None or decision.evidence is not None:
            return encode_response(self.endpoint.rendered(decision), head_only, close)
        key = (id(principal), decision.rule_id, decision.policy_version)
        known = self._heads.get(key)
        if known is not None and known[0] is principal:
            lines = known[1]
        else:
            lines = _header_lines(self.endpoint.rendered(decision), skip=DECISION_ID)
            if len(self._heads) >= self.MAX_HEADS:
                self._heads.clear()
            self._heads[key] = (principal, lines)
        return b"".join(
            (
                _ALLOW_START,
                decision.decision_id.encode("ascii"),  # 32 hex digits, made here
                b"\r\n",
                lines,
                _CLOSE_END if close else _KEEP_END,
            )
        )


def _plain(status: int) -> bytes:
    return _STATUS_LINES[status] + b"content-length: 0\r\nconnection: close\r\n\r\n"


_PAUSED_FOR_WRITING = 1
_PAUSED_FOR_CHECK = 2


class _HeadTooLarge(Exception):
    """Raised from a parser callback when a request head passes MAX_HEAD_BYTES."""


class _Request:
    """One parsed request head, waiting for its turn on the connection."""

    __slots__ = ("head_only", "headers", "keep_alive", "method", "target")

    def __init__(
        self, method: str, target: bytes, headers: RawHeaders, keep_alive: bool, head_only: bool
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.keep_alive = keep_alive
        self.head_only = head_only


class CheckProtocol(asyncio.Protocol):
    """One client connection (in practice: one of Envoy's connections to its authz cluster).

    Built by uvicorn's server for each connection (``functools.partial(CheckProtocol,
    answers)`` as ``uvicorn.Config(http=...)``), and registered in its ``server_state`` so
    a shutdown waits for in-flight checks.
    """

    def __init__(
        self,
        answers: Answers,
        config: Any,
        server_state: Any,
        app_state: Any = None,
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._answers = answers
        self._loop = _loop or asyncio.get_event_loop()
        self._connections: set[Any] = server_state.connections
        self._tasks: set[asyncio.Task[None]] = server_state.tasks
        self._keep_alive_timeout: float = config.timeout_keep_alive
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._pending: deque[_Request | bytes] = deque()  # bytes: a last refusal
        self._busy = False
        self._closing = False  # connection lost, or the server shutting down
        self._refused = False  # a request was refused: nothing more is read
        self._draining = False
        self._idle: asyncio.TimerHandle | None = None
        self._idle_since = 0.0
        # the request head being parsed
        self._target = b""
        self._headers: RawHeaders = []
        self._in_head = False  # between the start of a request and the end of its headers
        self._begun = 0  # requests begun on this connection
        self._head_bytes = 0  # its request target and headers, as parsed
        self._head_raw = 0  # bytes received while it was still incomplete
        self._paused = 0  # reasons reading is paused: _PAUSED_FOR_WRITING | _PAUSED_FOR_CHECK

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._connections.add(self)
        self._transport = transport  # type: ignore[assignment]
        self._idle_since = self._loop.time()
        self._idle = self._loop.call_later(self._keep_alive_timeout, self._check_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        self._closing = True
        self._pending.clear()
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def data_received(self, data: bytes) -> None:
        if self._closing or self._refused:
            return
        self._idle_since = self._loop.time()
        # A head still arriving is bounded even while none of its headers completes: every
        # byte received since it began counts (for the read it began in: the whole read).
        begun = self._begun
        if self._in_head:
            self._head_raw += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # No upgrades (WebSocket, h2c, CONNECT tunnels) here: the request head itself was
            # parsed and is answered like any other; what follows it is not HTTP/1.1.
            self._refuse(None)
        except httptools.HttpParserError:  # also _HeadTooLarge, raised from a callback
            self._refuse(431 if self._head_bytes > MAX_HEAD_BYTES else 400)
        else:
            if self._in_head and self._begun != begun:
                self._head_raw = len(data)
            if self._in_head and self._head_raw > MAX_HEAD_BYTES:
                self._refuse(431)

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def pause_writing(self) -> None:
        self._pause(_PAUSED_FOR_WRITING)

    def resume_writing(self) -> None:
        self._resume(_PAUSED_FOR_WRITING)

    def _pause(self, reason: int) -> None:
        if not self._paused and self._transport is not None:
            self._transport.pause_reading()
        self._paused |= reason

    def _resume(self, reason: int) -> None:
        self._paused &= ~reason
        transport = self._transport
        if not self._paused and transport is not None and not transport.is_closing():
            transport.resume_reading()

    # -- uvicorn's server ------------------------------------------------------------------

    def shutdown(self) -> None:
        """Close at once when idle; otherwise answer the check in progress (with
        ``connection: close``) and close: requests pipelined behind it get no answer."""
        self._closing = True
        if not self._busy and self._transport is not None:
            self._transport.close()

    # -- httptools callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._begun += 1
        self._target = b""
        self._headers = []
        self._in_head = True
        self._head_bytes = self._head_raw = 0

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        if self._head_bytes > MAX_HEAD_BYTES:
            self._too_long()
        self._target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > MAX_HEAD_BYTES:
            self._too_long()
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False

    def _too_long(self) -> None:
        raise _HeadTooLarge  # stops the parser: data_received refuses with 431

    def on_message_complete(self) -> None:
        parser = self._parser
        method = parser.get_method()
        request = _Request(
            method.decode("ascii"),
            self._target,
            self._headers,
            parser.should_keep_alive(),
            method == _HEAD_METHOD,
        )
        self._pending.append(request)
        if self._busy:
            # A check is waiting (for keys): read no further until it is answered, as
            # uvicorn does, so a client cannot queue requests without bound meanwhile.
            self._pause(_PAUSED_FOR_CHECK)
        self._drain()

    # -- answering -------------------------------------------------------------------------

    def _drain(self) -> None:
        """Answer the waiting requests in order, while each is answered at once. A check that
        has to wait (keys being fetched) continues as a task, which drains again when done."""
        if self._draining:
            return
        self._draining = True
        try:
            pending = self._pending
            while pending and not self._busy:
                following = pending.popleft()
                if isinstance(following, bytes):  # a refusal: the last answer on this connection
                    self._send_refusal(following)
                else:
                    self._start(following)
        finally:
            self._draining = False
        if not self._busy and not pending:
            self._idle_since = self._loop.time()

    def _start(self, request: _Request) -> None:
        """Run the check at once, in a context of its own. Almost every check completes without
        waiting (keys and the verified token are cached): no task, no extra turn of the event
        loop. One that waits continues as a task in the same context."""
        self._busy = True
        coro = self._answer(request)
        context = contextvars.copy_context()
        try:
            waiting_on = context.run(coro.send, None)
        except StopIteration:
            return  # answered
        task = self._loop.create_task(_resume(coro, waiting_on), context=context)
        self._tasks.add(task)
        task.add_done_callback(self._continue)

    def _continue(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a check task failed", exc_info=task.exception())
        # Only a task that did not finish cancelled or failed before it answered (the shutdown
        # grace ran out): a finished one answered already, and ``_busy`` may now belong to the
        # next request, started before this callback ran (uvloop reads a socket before it runs
        # callbacks scheduled earlier): answering 503 for that one was a race.
        if self._busy and (task.cancelled() or task.exception() is not None):
            self._busy = False
            self._pending.clear()
            self._send(_plain(503), close=True)
        self._drain()
        if not self._busy and not self._refused:
            self._resume(_PAUSED_FOR_CHECK)

    async def _answer(self, request: _Request) -> None:
        close = not request.keep_alive or self._closing
        try:
            if request.method not in _METHODS:
                response = _STATUS_LINES[405] + _NOT_ALLOWED
            else:
                answers = self._answers
                raw_path, _, query = request.target.partition(b"?")
                ctx = head_context(request.method, raw_path, query, request.headers, answers.prefix)
                decision = await answers.checker.check(ctx)
                close = close or self._closing
                response = answers.encode(decision, request.head_only, close)
        except Exception:
            # The check itself never raises (the pipeline fails closed); this is the
            # transport failing. Envoy turns a 500 into a refusal (status_on_error).
            log.exception("could not answer a check")
            response, close = _plain(500), True
        self._busy = False
        self._send(response, close)

    def _send(self, response: bytes, close: bool) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if response:
            transport.write(response)
        if close or (self._closing and not self._pending):
            self._closing = True
            self._pending.clear()
            transport.close()

    def _send_refusal(self, refusal: bytes) -> None:
        """Write the refusal, then close gracefully: the client may still be sending what was
        refused, and closing with unread data would reset the connection (and could destroy
        the refusal before it is read). So only our side is closed; what arrives is read and
        dropped until the client closes too, or LINGER_SECONDS pass."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self._closing = True
        self._pending.clear()
        if refusal:
            transport.write(refusal)
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._loop.call_later(LINGER_SECONDS, transport.close)
        self._paused = 0
        transport.resume_reading()  # data_received drops it; EOF closes the connection

    def _refuse(self, status: int | None) -> None:
        """Answer what cannot be parsed with ``status`` (None: nothing) and close, after the
        requests before it on this connection are answered. Nothing more is parsed."""
        self._refused = True
        self._pause(_PAUSED_FOR_CHECK)
        self._pending.append(b"" if status is None else _plain(status))
        self._drain()

    # -- keep-alive ------------------------------------------------------------------------

    def _check_idle(self) -> None:
        """Close a connection idle for the keep-alive timeout (one timer per connection,
        re-armed from the last activity: nothing to cancel or re-arm per request)."""
        self._idle = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        idle_for = self._loop.time() - self._idle_since
        if self._busy or self._pending or idle_for < self._keep_alive_timeout:
            wait = self._keep_alive_timeout - (0.0 if self._busy else idle_for)
            self._idle = self._loop.call_later(max(wait, 0.1), self._check_idle)
        else:
            transport.close()


@types.coroutine
def _resume(coro: Coroutine[Any, Any, None], waiting_on: Any) -> Generator[Any, Any, None]:
    """Continue, inside a task, a coroutine that suspended while run by hand: what it awaits
    is handed to the task, and what the task sends or throws (cancellation) is passed on,
    exactly as ``yield from`` would."""
    while True:
        try:
            sent = yield waiting_on
        except BaseException as exc:
            try:
                waiting_on = coro.throw(exc)
            except StopIteration:
                return
        else:
            try:
                waiting_on = coro.send(sent)
            except StopIteration:
                return
