"""The HTTP check listener (app/transport/http.py: uvicorn's HTTP/1.1 serving the check
endpoint), on a real socket.

Each test runs the listener as ``serve`` does: uvicorn with the listener's configuration
(``listener_config``, ``BoundedHead``) over a real Runtime and Checker, whose keys come from the
dev issuer on a loopback port. The client writes raw bytes over a TCP connection and reads the
responses strictly (status line, lower-case ``name: value`` header lines, content-length body),
so pipelining, refusals and closes are seen exactly as Envoy would see them.

The issuer can hold its JWKS answer back (``Gate``): a check then has to wait for the keys and
continues as a task, which is how the tests reach the listener's asynchronous path without
reaching into it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import uvicorn

from app.check import Checker
from app.dev.issuer import JWKS_PATH, create_issuer_app
from app.http_facts import METHOD_ORDER
from app.policy.loader import load_policy_dir
from app.reasons import Reason
from app.settings import Settings
from app.state import Runtime
from app.telemetry.decision_log import DecisionLog
from app.telemetry.hub import Telemetry
from app.telemetry.logging import Correlation, current
from app.transport.http import (
    CHECK_KEEP_ALIVE_SECONDS,
    MAX_HEAD_BYTES,
    CheckEndpoint,
    ListenerServer,
    listener_config,
)
from tests.unit.dev.dev_helpers import reader_token, serving, shared_keys

POLICIES = Path(__file__).resolve().parents[2] / "integration" / "policies"
AUDIENCE = "https://api.example.com"
HOST = "api.example.com"
INVOICE = "/check/invoices/42"
WAIT = 5.0  # seconds any single read may take before the test fails
DECISION_ID = re.compile(r"[0-9a-f]{32}")


# --- the issuer, whose JWKS answers can be held back --------------------------------------------


class Gate:
    """While closed, the issuer's JWKS requests wait (up to 10 s)."""

    def __init__(self) -> None:
        self._open = threading.Event()
        self._open.set()

    def wrap(self, app: Any) -> Callable[..., Any]:
        async def gated(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["path"] == JWKS_PATH:
                await asyncio.to_thread(self._open.wait, 10)
            await app(scope, receive, send)

        return gated

    @contextlib.contextmanager
    def closed(self) -> Iterator[Gate]:
        self._open.clear()
        try:
            yield self
        finally:
            self._open.set()

    def open(self) -> None:
        self._open.set()


@dataclass(frozen=True)
class Issuer:
    url: str
    gate: Gate

    def token(self, subject: str = "alice", **overrides: Any) -> str:
        return reader_token(self.url, subject, **overrides)


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    gate = Gate()
    with serving(lambda url: gate.wrap(create_issuer_app(shared_keys(), url))) as url:
        yield Issuer(url, gate)


# --- the listener -------------------------------------------------------------------------------


@dataclass
class Listener:
    port: int
    runtime: Runtime
    server: uvicorn.Server
    serving: asyncio.Task[None]
    log: io.StringIO
    app: Any

    async def connect(self, first: bytes = b"") -> Connection:
        """A connection; ``first`` is sent before the listener runs again, so that it reads
        all of it at once (one ``data_received``, however large)."""
        if not first:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            return Connection(reader, writer)
        sock = socket.create_connection(("127.0.0.1", self.port))
        try:
            sock.sendall(first)  # blocking: the event loop (and the listener) waits
            reader, writer = await asyncio.open_connection(sock=sock)
        except BaseException:
            sock.close()
            raise
        return Connection(reader, writer)

    def decision_lines(self) -> dict[str, dict[str, Any]]:
        """The decision log's lines by decision id."""
        lines = [json.loads(line) for line in self.log.getvalue().splitlines() if line]
        return {line["decision_id"]: line for line in lines}


@asynccontextmanager
async def listening(
    issuer: Issuer,
    *,
    ready: bool = True,
    grace: float = 1.0,
    realm: str = "ztauthz",
    wrap: Callable[[Any], Any] = lambda app: app,
    keep_alive: float | None = None,
) -> AsyncIterator[Listener]:
    """A Runtime (keys loaded when ``ready``) and its check listener on a free port."""
    settings = Settings.model_validate(
        {"issuers": [{"issuer": issuer.url, "audiences": [AUDIENCE]}], "policies": POLICIES}
    )
    if realm != settings.response.realm:
        # Unvalidated on purpose: a value the settings refuse (see the realm tests) must
        # still never reach the wire.
        response = settings.response.model_construct(
            **{**settings.response.__dict__, "realm": realm}
        )
        settings = settings.model_copy(update={"response": response})
    log = io.StringIO()
    telemetry = Telemetry.create(settings, stream=io.StringIO())
    async with Runtime(settings, telemetry=telemetry) as runtime:
        if ready:
            deadline = time.monotonic() + WAIT
            while not runtime.is_ready():
                assert time.monotonic() < deadline, "the runtime did not load the keys"
                await asyncio.sleep(0.005)
        app = CheckEndpoint(Checker(runtime, decision_log=DecisionLog(log)))
        config = listener_config(wrap(app), "127.0.0.1", 0, "warning", grace)
        # uvicorn types it as whole seconds; its protocol takes any number of seconds.
        config.timeout_keep_alive = cast(int, keep_alive or CHECK_KEEP_ALIVE_SECONDS)
        server = ListenerServer(config)
        sock = socket.create_server(("127.0.0.1", 0))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            deadline = time.monotonic() + WAIT
            while not server.started:
                assert not task.done() and time.monotonic() < deadline, "no listener"
                await asyncio.sleep(0.005)
            yield Listener(sock.getsockname()[1], runtime, server, task, log, app)
        finally:
            issuer.gate.open()  # a held-back key fetch ends, so nothing waits on it
            server.should_exit = True
            await asyncio.wait_for(task, WAIT)
            sock.close()


# --- the client ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes = field(repr=False)

    def get(self, name: str) -> str | None:
        values = [value for key, value in self.headers if key == name]
        assert len(values) <= 1, f"{name} repeated"
        return values[0] if values else None

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        assert value is not None, f"no {name} header in {self.headers}"
        return value

    def json(self) -> Any:
        assert self["content-type"] == "application/json"
        return json.loads(self.body)

    def without(self, *names: str) -> list[tuple[str, str]]:
        return [(key, value) for key, value in self.headers if key not in names]


_STATUS_LINE = re.compile(r"HTTP/1\.1 (\d{3}) [A-Za-z ]+")
_HEADER_LINE = re.compile(r"([a-z0-9-]+): ([\x20-\x7e]*)")


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, *requests: bytes) -> None:
        """All ``requests`` in one write (pipelined)."""
        self.writer.write(b"".join(requests))
        await self.writer.drain()

    async def reply(self, head_only: bool = False, within: float = WAIT) -> Reply:
        """The next response; ``head_only`` for the answer to a HEAD request (no body)."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), within)
        status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
        status = _STATUS_LINE.fullmatch(status_line)
        assert status is not None, status_line
        headers = []
        for line in lines:
            header = _HEADER_LINE.fullmatch(line)
            assert header is not None, f"not a header line: {line!r}"
            headers.append((header[1], header[2]))
        reply = Reply(int(status[1]), headers, b"")
        length = int(reply["content-length"])
        if head_only or not length:
            return reply
        body = await asyncio.wait_for(self.reader.readexactly(length), WAIT)
        return Reply(reply.status, headers, body)

    async def replies(self, count: int) -> list[Reply]:
        return [await self.reply() for _ in range(count)]

    async def closed(self) -> bool:
        """Did the server close the connection (cleanly, after everything it sent was read)?"""
        rest = await asyncio.wait_for(self.reader.read(), WAIT)
        assert rest == b"", f"more bytes before the close: {rest[:200]!r}"
        return True

    async def silent(self, seconds: float = 0.2) -> bool:
        """Nothing arrives for ``seconds`` (and the connection stays open)."""
        try:
            data = await asyncio.wait_for(self.reader.read(1), seconds)
        except TimeoutError:
            return True
        raise AssertionError(f"unexpected bytes: {data!r}")

    def close(self) -> None:
        self.writer.close()


@asynccontextmanager
async def connected(listener: Listener, first: bytes = b"") -> AsyncIterator[Connection]:
    connection = await listener.connect(first)
    try:
        yield connection
    finally:
        connection.close()


def request(
    method: str = "GET",
    target: str = INVOICE,
    token: str | None = None,
    *,
    version: str = "HTTP/1.1",
    headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    lines = [f"{method} {target} {version}", f"host: {HOST}"]
    if token is not None:
        lines.append(f"authorization: Bearer {token}")
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def assert_allow(reply: Reply, subject: str = "alice") -> None:
    assert reply.status == 200
    assert reply["x-auth-subject"] == subject
    assert DECISION_ID.fullmatch(reply["x-auth-decision-id"])
    assert reply["content-length"] == "0"
    assert reply.body == b""
    removed = reply["x-envoy-auth-headers-to-remove"].split(",")
    assert removed and all(name.startswith("x-auth-") for name in removed)
    assert not set(removed) & {name for name, _ in reply.headers}


def assert_deny(reply: Reply, status: int, reason: Reason) -> None:
    assert reply.status == status
    body = reply.json()
    assert (body["decision"], body["reason"]) == ("deny", reason.value)
    assert body["decision_id"] == reply["x-auth-decision-id"]
    assert reply["cache-control"] == "no-store"
    assert int(reply["content-length"]) == len(reply.body)


# --- answers ------------------------------------------------------------------------------------


async def test_allow_answers_carry_identity_headers_and_a_fresh_decision_id(
    issuer: Issuer,
) -> None:
    alice, bob = issuer.token(), issuer.token("bob", groups=["finance", "auditors"])
    async with listening(issuer) as listener, connected(listener) as client:
        await client.send(request(token=alice))
        first = await client.reply()
        await client.send(request(token=alice))
        second = await client.reply()  # the same Principal object: the remembered headers
        await client.send(request(token=alice), request(token=bob))
        third, for_bob = await client.replies(2)
        await client.send(request(token=issuer.token()))  # another token: rendered afresh
        other = await client.reply()
        # The ASGI endpoint (used with tracing on) answers the same on the same runtime.
        transport = httpx.ASGITransport(app=listener.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://z") as http:
            asgi = await http.get(
                INVOICE, headers={"host": HOST, "authorization": f"Bearer {alice}"}
            )
    for reply in (first, second, third, other):
        assert_allow(reply)
        assert reply.without("x-auth-decision-id") == first.without("x-auth-decision-id")
    ids = {r["x-auth-decision-id"] for r in (first, second, third, other, for_bob)}
    assert len(ids) == 5
    assert first["x-auth-rule"] == "invoices-read"
    assert first["x-auth-groups"] == "finance"
    assert_allow(for_bob, "bob")
    assert for_bob["x-auth-groups"] == "auditors,finance"
    assert asgi.status_code == 200
    drop = {"x-auth-decision-id"}
    assert {k: v for k, v in asgi.headers.items() if k not in drop} == dict(first.without(*drop))
    # Each answer is the decision logged under its id.
    lines = listener.decision_lines()
    assert all(lines[i]["decision"] == "allow" for i in ids)
    assert lines[for_bob["x-auth-decision-id"]]["subject"] == "bob"


async def test_a_reload_changes_the_allow_headers(issuer: Issuer, tmp_path: Path) -> None:
    token = issuer.token()
    reloaded = tmp_path / "policies"
    reloaded.mkdir()
    text = (POLICIES / "integration.yaml").read_text(encoding="utf-8")
    (reloaded / "integration.yaml").write_text(
        text.replace("id: invoices-read", "id: invoices-read-v2"), encoding="utf-8"
    )
    async with listening(issuer) as listener, connected(listener) as client:
        await client.send(request(token=token), request(token=token))
        before = (await client.replies(2))[1]
        listener.runtime.replace_policies(load_policy_dir(reloaded), None)
        await client.send(request(token=token))
        after = await client.reply()
    assert_allow(before)
    assert_allow(after)
    assert (before["x-auth-rule"], after["x-auth-rule"]) == ("invoices-read", "invoices-read-v2")
    assert before["x-auth-policy-version"] != after["x-auth-policy-version"]


async def test_denials_are_401_with_a_challenge_and_403_with_a_json_reason(
    issuer: Issuer,
) -> None:
    async with listening(issuer) as listener, connected(listener) as client:
        await client.send(request())
        missing = await client.reply()
        await client.send(request(token="not.a.token"))
        invalid = await client.reply()
        await client.send(request("POST", token=issuer.token()))
        forbidden = await client.reply()
    assert_deny(missing, 401, Reason.TOKEN_MISSING)
    assert missing["www-authenticate"] == 'Bearer realm="ztauthz"'
    assert_deny(invalid, 401, Reason.TOKEN_MALFORMED)
    assert invalid["www-authenticate"].startswith('Bearer realm="ztauthz", error="invalid_token"')
    assert_deny(forbidden, 403, Reason.NO_MATCHING_RULE)
    assert forbidden.get("www-authenticate") is None
    assert forbidden.get("connection") is None  # kept open


async def test_pipelined_requests_are_answered_in_order(issuer: Issuer) -> None:
    token = issuer.token()
    async with listening(issuer) as listener, connected(listener) as client:
        await client.send(
            request(token=token),
            request(),
            request("POST", token=token, headers=[("content-length", "5")]) + b"hello",
            request("PROPFIND"),
            request(token=token),
            request("GET", "/check/internal/x", token=token),
            request("PUT", token=token, headers=[("transfer-encoding", "chunked")])
            + b"5\r\nhello\r\n0\r\n\r\n",
            request("GET", "/check/public/x"),
        )
        replies = await client.replies(8)
        lines = listener.decision_lines()
        assert await client.silent(0.05)  # nothing more, and still open
        await client.send(request(token=token))
        assert_allow(await client.reply())
    assert [r.status for r in replies] == [200, 401, 403, 405, 200, 403, 403, 200]
    assert replies[2].json()["reason"] == "no_matching_rule"
    assert replies[5].json()["reason"] == "denied_by_rule"
    anonymous = replies[7]  # allowed without a principal: every identity header removed
    assert anonymous["x-auth-rule"] == "public-read"
    assert anonymous.get("x-auth-subject") is None
    assert "x-auth-subject" in anonymous["x-envoy-auth-headers-to-remove"].split(",")
    assert len(lines) == len(replies)  # every answer a decision, the 405 too
    for reply in replies:
        assert lines[reply["x-auth-decision-id"]]["status"] == reply.status


async def test_methods_no_check_uses_are_refused_with_405(issuer: Issuer) -> None:
    """A method no policy can name is denied 405 with an Allow header, as a decision: logged
    with its reason like every other denial (gRPC decides it the same way)."""
    async with listening(issuer) as listener, connected(listener) as client:
        token = issuer.token()
        await client.send(request("PROPFIND", token=token), request("MKCOL"))
        propfind, mkcol = await client.replies(2)
    lines = listener.decision_lines()
    for reply in (propfind, mkcol):
        assert reply.status == 405
        assert reply["allow"] == ", ".join(METHOD_ORDER)
        assert reply.json()["reason"] == "method_not_allowed"
        assert reply.get("connection") is None
        line = lines[reply["x-auth-decision-id"]]
        assert (line["status"], line["reason"], line["decision"]) == (
            405,
            "method_not_allowed",
            "deny",
        )
    assert len(lines) == 2


async def test_head_is_answered_without_body(issuer: Issuer) -> None:
    token = issuer.token()
    async with listening(issuer) as listener, connected(listener) as client:
        await client.send(request("HEAD", token=token), request(token=token), request("HEAD"))
        head = await client.reply(head_only=True)
        after = await client.reply()  # right behind the head: no body was sent
        anonymous = await client.reply(head_only=True)
        await client.send(request("GET", token=token))
        assert_allow(await client.reply())
        lines = listener.decision_lines()
    assert head.status == 403
    assert int(head["content-length"]) > 0  # the length the body would have
    assert lines[head["x-auth-decision-id"]]["reason"] == "no_matching_rule"
    assert_allow(after)
    assert anonymous.status == 401
    assert anonymous["www-authenticate"] == 'Bearer realm="ztauthz"'


# --- refusals and closes ------------------------------------------------------------------------

MALFORMED = {
    "garbage": b"\x00\x01\x02 not http\r\n\r\n",
    "unknown method": b"BREW /check/x HTTP/1.1\r\nhost: a\r\n\r\n",
    "header without colon": b"GET /check/x HTTP/1.1\r\nhost: a\r\nbroken\r\n\r\n",
    "bad content-length": b"GET /check/x HTTP/1.1\r\nhost: a\r\ncontent-length: x\r\n\r\n",
    "smuggling": (
        b"POST /check/x HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n"
        b"content-length: 3\r\n\r\n0\r\n\r\n"
    ),
    "bad version": b"GET /check/x HTTP/7.1\r\nhost: a\r\n\r\n",
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_malformed_request_gets_400_and_the_connection_closes(
    issuer: Issuer, data: bytes
) -> None:
    async with listening(issuer) as listener, connected(listener) as client:
        await client.send(data)
        reply = await client.reply()
        assert await client.closed()
    assert reply.status == 400
    assert reply["connection"] == "close"  # uvicorn's refusal, with its own short text


async def test_requests_before_garbage_are_answered_then_400_and_close(issuer: Issuer) -> None:
    token = issuer.token()
    async with listening(issuer) as listener, connected(listener) as client:
        await client.send(request(token=token), request(), b"NOT HTTP AT ALL\r\n\r\n", request())
        allowed, missing, refused = await client.replies(3)
        assert await client.closed()  # the request after the garbage is never read
    assert_allow(allowed)
    assert missing.status == 401
    assert refused.status == 400
    assert refused["connection"] == "close"


def big_headers(total: int, size: int = 1000) -> list[tuple[str, str]]:
    return [(f"x-filler-{n}", "v" * size) for n in range(total // (size + 16) + 1)]


OVERSIZE: dict[str, bytes] = {
    "many headers": request(headers=big_headers(MAX_HEAD_BYTES + 1000)),
    "one long header": request(headers=[("x-long", "v" * (MAX_HEAD_BYTES + 1))]),
    "long target": request(target="/check/" + "a" * (MAX_HEAD_BYTES + 1)),
}


@pytest.mark.parametrize("data", OVERSIZE.values(), ids=OVERSIZE.keys())
async def test_a_request_head_over_the_limit_gets_431_and_the_connection_closes(
    issuer: Issuer, data: bytes
) -> None:
    token = issuer.token()
    async with listening(issuer) as listener:
        for first in (request(token=token) + data, b""):  # read at once, and in pieces
            async with connected(listener, first) as client:
                if not first:
                    await client.send(request(token=token), data)
                allowed, refused = await client.replies(2)
                assert await client.closed()
            assert_allow(allowed)
            assert refused.status == 431
            assert (refused["connection"], refused["content-length"]) == ("close", "0")
    assert len(listener.decision_lines()) == 2  # the oversize requests were never checked


@pytest.mark.parametrize("data", OVERSIZE.values(), ids=OVERSIZE.keys())
async def test_an_oversize_request_followed_by_another_still_gets_431(
    issuer: Issuer, data: bytes
) -> None:
    # Were the oversize request dropped, the allow of the request behind it would arrive
    # first, and a pipelining client would take that 200 for the oversize request's answer.
    first = data + request(token=issuer.token())
    async with listening(issuer) as listener, connected(listener, first) as client:
        reply = await client.reply()
        assert reply.status == 431
        assert await client.closed()


async def test_a_request_head_just_under_the_limit_is_checked(issuer: Issuer) -> None:
    token = issuer.token()
    head = request(token=token, headers=big_headers(MAX_HEAD_BYTES - 8000))
    assert MAX_HEAD_BYTES - 8000 < len(head) < MAX_HEAD_BYTES
    async with listening(issuer) as listener, connected(listener) as client:
        await client.send(head)
        assert_allow(await client.reply())


async def test_an_unfinished_header_over_the_limit_gets_431(issuer: Issuer) -> None:
    chunk = b"v" * (MAX_HEAD_BYTES // 8)
    async with listening(issuer) as listener, connected(listener) as client:
        await client.send(b"GET /check/x HTTP/1.1\r\nhost: a\r\nx-endless: ")
        with contextlib.suppress(ConnectionError):
            # Refused at most one read after the limit: the listener reads what it was sent
            # in pieces, so the refusal comes well before 3x the limit.
            for _ in range(24):
                await client.send(chunk)
                await asyncio.sleep(0.01)
        reply = await client.reply()
        assert await client.closed()
    assert reply.status == 431


@pytest.mark.parametrize(
    "head",
    [
        request(headers=[("connection", "close")]),
        request(version="HTTP/1.0"),
        request(headers=[("connection", "keep-alive, close")]),
    ],
    ids=["connection close", "HTTP/1.0", "close among options"],
)
async def test_the_connection_closes_after_the_answer_when_asked(
    issuer: Issuer, head: bytes
) -> None:
    async with listening(issuer) as listener, connected(listener) as client:
        await client.send(head, request())  # the second is never answered
        reply = await client.reply()
        assert await client.closed()
    assert reply.status == 401
    assert reply["connection"] == "close"


async def test_http_1_0_is_answered_and_the_connection_closes(issuer: Issuer) -> None:
    # uvicorn keeps no HTTP/1.0 connection open, keep-alive asked or not (Envoy speaks 1.1).
    async with listening(issuer) as listener, connected(listener) as client:
        await client.send(request(version="HTTP/1.0", headers=[("connection", "keep-alive")]))
        first = await client.reply()
        assert await client.closed()
    assert first.status == 401


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (request(headers=[("connection", "upgrade"), ("upgrade", "websocket")]), 400),
        (request(headers=[("connection", "upgrade"), ("upgrade", "h2c")]), 400),
        (b"CONNECT api.example.com:443 HTTP/1.1\r\nhost: api.example.com:443\r\n\r\n", 400),
    ],
    ids=["websocket", "h2c", "CONNECT"],
)
async def test_an_upgrade_request_is_refused_and_the_connection_closes(
    issuer: Issuer, head: bytes, status: int
) -> None:
    async with listening(issuer) as listener, connected(listener) as client:
        await client.send(head + b"\x81\x05hello" + request())
        reply = await client.reply()
        assert await client.closed()
    assert reply.status == status
    assert listener.decision_lines() == {}  # refused before any check


async def test_a_header_value_with_cr_lf_never_reaches_the_wire(issuer: Issuer) -> None:
    # The realm is configuration, written into the challenge unencoded: the one rendered value
    # a newline could reach. The settings refuse it (test_settings); were one to slip
    # through, it must still never split the response: uvicorn refuses to write the header
    # and closes the connection, which Envoy answers with a refusal (status_on_error).
    realm = "ztauthz\r\nx-injected: yes"
    async with listening(issuer, realm=realm) as listener, connected(listener) as client:
        await client.send(request(), request(token=issuer.token()))
        rest = await asyncio.wait_for(client.reader.read(), WAIT)
        async with connected(listener) as other:  # the listener itself carries on
            await other.send(request(token=issuer.token()))
            assert_allow(await other.reply())
    assert b"x-injected" not in rest
    assert not rest.startswith(b"HTTP/1.1 2")  # the allowed request behind it is not answered


# --- checks that wait for keys ------------------------------------------------------------------


def probing(seen: list[Correlation | None]) -> Callable[[Any], Any]:
    """The endpoint, recording the correlation left in its context after each check: what
    the rest of the request's task would run with."""

    def wrap(app: Any) -> Any:
        async def probe(scope: Any, receive: Any, send: Any) -> None:
            await app(scope, receive, send)
            seen.append(current())

        return probe

    return wrap


async def test_a_check_waiting_for_keys_answers_in_order_in_its_own_context(
    issuer: Issuer,
) -> None:
    seen: list[Correlation | None] = []
    token = issuer.token()
    with issuer.gate.closed() as gate:
        async with listening(issuer, ready=False, wrap=probing(seen)) as listener:
            assert not listener.runtime.is_ready()
            async with connected(listener) as waiting, connected(listener) as other:
                await waiting.send(
                    request(token=token),
                    request(),
                    request("POST", token=token),
                    b"GARBAGE\r\n\r\n",
                )
                # Another connection is not held up by the waiting check.
                await other.send(request(), request("PROPFIND"))
                assert [r.status for r in await other.replies(2)] == [401, 405]
                # Behind the waiting check, nothing is answered, not even what needs no keys.
                assert await waiting.silent(0.2)
                gate.open()
                replies = await waiting.replies(4)
                assert await waiting.closed()
                # The waiting check's correlation never leaked into the connection's context.
                assert seen and all(correlation is None for correlation in seen)
                await other.send(request(token=token))
                cached = await other.reply()
    assert_allow(replies[0])
    assert [r.status for r in replies] == [200, 401, 403, 400]
    assert replies[2].json()["reason"] == "no_matching_rule"
    assert cached.without("x-auth-decision-id") == replies[0].without("x-auth-decision-id")
    lines = listener.decision_lines()
    for reply in replies[:3]:
        assert lines[reply["x-auth-decision-id"]]["status"] == reply.status


async def test_reading_pauses_while_a_check_waits(issuer: Issuer) -> None:
    pipelined = request(headers=[("x-pad", "v" * 1000)]) * 1000  # about 1 MB
    sent = 0
    with issuer.gate.closed():
        async with listening(issuer, ready=False) as listener, connected(listener) as client:
            await client.send(request(token=issuer.token()))
            with contextlib.suppress(TimeoutError):
                while sent < 16 * len(pipelined):  # beyond what the kernel buffers when paused
                    await asyncio.wait_for(client.send(pipelined), 0.3)
                    sent += len(pipelined)
    assert sent < 16 * len(pipelined)


async def test_checks_waiting_on_several_connections_all_answer(issuer: Issuer) -> None:
    tokens = [issuer.token(f"user{n}") for n in range(4)]
    with issuer.gate.closed() as gate:
        async with listening(issuer, ready=False) as listener:
            clients = [await listener.connect() for _ in tokens]
            try:
                for client, token in zip(clients, tokens, strict=True):
                    await client.send(request(token=token), request("POST", token=token))
                assert await clients[0].silent(0.1)
                gate.open()
                answers = [await client.replies(2) for client in clients]
            finally:
                for client in clients:
                    client.close()
    for n, (allowed, forbidden) in enumerate(answers):
        assert_allow(allowed, f"user{n}")
        assert forbidden.status == 403


# --- keep-alive and shutdown --------------------------------------------------------------------


async def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(issuer: Issuer) -> None:
    async with listening(issuer, keep_alive=0.3) as listener, connected(listener) as client:
        loop = asyncio.get_running_loop()
        for _ in range(4):  # active for longer than the timeout: kept open
            await client.send(request())
            assert (await client.reply()).status == 401
            last = loop.time()
            await asyncio.sleep(0.1)
        assert await client.closed()
        assert loop.time() - last >= 0.25  # idle for the timeout, counted from the last request


async def test_shutdown_closes_idle_connections_and_busy_ones_after_their_answer(
    issuer: Issuer,
) -> None:
    token = issuer.token()
    with issuer.gate.closed() as gate:
        async with (
            listening(issuer, ready=False, grace=2.0) as listener,
            connected(listener) as busy,
            connected(listener) as idle,
        ):
            await idle.send(request())
            assert (await idle.reply()).status == 401
            await busy.send(request(token=token))
            assert await busy.silent(0.1)
            listener.server.should_exit = True
            assert await idle.closed()  # at once, though a check is still running
            assert not listener.serving.done()  # the server waits for the busy one
            gate.open()
            answer = await busy.reply()
            assert await busy.closed()
            await asyncio.wait_for(listener.serving, WAIT)
    assert_allow(answer)
    assert answer["connection"] == "close"


async def test_a_check_cancelled_by_the_shutdown_grace_gets_503(issuer: Issuer) -> None:
    with issuer.gate.closed():
        async with (
            listening(issuer, ready=False, grace=0.0) as listener,
            connected(listener) as busy,
        ):
            await busy.send(request(token=issuer.token()), request())
            assert await busy.silent(0.1)
            listener.server.should_exit = True
            reply = await busy.reply()
            assert await busy.closed()
    assert reply.status == 503
    assert (reply["connection"], reply["content-length"]) == ("close", "0")
