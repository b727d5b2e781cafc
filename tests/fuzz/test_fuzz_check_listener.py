"""The HTTP check listener under hostile bytes: raw requests on a socket to ``ztauthz serve``,
started as the integration tests start it (app/dev/stack.py: dev issuer, ``ztauthz serve``;
no Envoy in front, so nothing cleans the requests up first).

Whatever listener implementation serves the port (uvicorn's protocol or our own), for any
bytes sent:
- every answer is a well-formed HTTP/1.1 response, never a 5xx (the keys are loaded: no
  fail-closed state), and the connection is answered or closed within the timeout;
- an answer that carries a decision id has exactly one decision-log line saying the same
  status; an allow is one its canonical request (normalized path) gets too.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from app.dev.procs import ProcessGroup
from app.dev.stack import Stack, start_stack
from app.dev.stack_config import Ports
from app.dev.tokens import mint
from app.policy.normalize import PathRejected, normalize_path
from tests.fuzz.test_fuzz_paths import PIECES

INTEGRATION = Path(__file__).resolve().parents[1] / "integration"
STATUSES = {200, 400, 401, 403, 404, 405, 408, 413, 414, 431}


@dataclass
class Listener:
    stack: Stack
    token: str

    @property
    def port(self) -> int:
        return self.stack.ports.check

    def decision_lines(self) -> dict[str, dict[str, object]]:
        lines = {}
        for line in self.stack.log("ztauthz").read_text(encoding="utf-8").split("\n"):
            if line.startswith('{"kind":"decision"'):
                entry = json.loads(line)
                lines[str(entry["decision_id"])] = entry
        return lines


@pytest.fixture(scope="module")
def listener(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Listener]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZTAUTHZ_")}
    config = yaml.safe_load((INTEGRATION / "ztauthz.yaml").read_text(encoding="utf-8"))
    with ProcessGroup() as group:
        stack = start_stack(
            group,
            workdir=tmp_path_factory.mktemp("listener"),
            ports=Ports.ephemeral(),
            policies=INTEGRATION / "policies",
            config=config,
            env=env,
        )
        token = mint(
            stack.keys,
            issuer=stack.issuer_url,
            audience=stack.audience,
            subject="alice",
            groups=["finance"],
            scopes=["invoices:read"],
            ttl=600,  # the configuration's max_token_lifetime is 15m
        )
        yield Listener(stack, token)


def exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data``, half-close, read everything until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def responses(data: bytes, head_first: bool = False) -> list[Response]:
    """The HTTP/1.1 responses in ``data``, in order (each must be well-formed); the first one
    has no body when ``head_first`` (it answers HEAD; every request after it is a GET)."""
    out: list[Response] = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"an unterminated response head: {data[:200]!r}"
        status_line, *lines = head.split(b"\r\n")
        version, status, *_ = status_line.split(b" ", 2)
        assert version == b"HTTP/1.1", status_line
        headers = {}
        for line in lines:
            name, colon, value = line.partition(b":")
            assert colon and b"\n" not in line, line
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        length = 0 if head_first and not out else int(headers.get("content-length", "0"))
        out.append(Response(int(status), headers, rest[:length]))
        data = rest[length:]
    return out


tokens = st.sampled_from(["GET", "POST", "DELETE", "HEAD", "OPTIONS", "get", "BREW", "G\tET", ""])
targets = st.one_of(
    st.lists(st.sampled_from(PIECES), max_size=8).map(lambda parts: "/check/" + "".join(parts)),
    st.sampled_from(
        ["/check/invoices", "/check/public/x", "/check", "/elsewhere", "*", "http://x/check/a"]
    ),
    st.text(max_size=20),
).map(lambda target: target.encode("utf-8", "surrogatepass"))
versions = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 x", b""])
header_lines = st.lists(
    st.one_of(
        st.sampled_from(
            [
                b"Host: api.example.com",
                b"Host: API.example.com:8443",
                b"Host: a..b",
                b"Host: x\xff",
                b"Authorization: Bearer TOKEN",
                b"Authorization: Bearer TOKEN\r\n Authorization: Bearer junk",
                b"Authorization: Basic YTpi",
                b"Cookie: a=1; session=TOKEN",
                b"X-Forwarded-For: 1.2.3.4, ::1",
                b"Content-Length: 5",
                b"Content-Length: -1",
                b"Transfer-Encoding: chunked",
                b"Transfer-Encoding: chunked\r\nContent-Length: 3",
                b"Connection: close",
                b"Upgrade: websocket\r\nConnection: Upgrade",
                b"Expect: 100-continue",
                b"X-Long: " + b"a" * 70_000,
                b"Bad Header: x",
                b"NoColon",
                b" folded: x",
            ]
        ),
        st.binary(max_size=30),
    ),
    max_size=5,
)


@st.composite
def raw_requests(draw: st.DrawFn, token: str) -> bytes:
    request = b" ".join((draw(tokens).encode(), draw(targets), draw(versions)))
    lines = [line.replace(b"TOKEN", token.encode()) for line in draw(header_lines)]
    body = draw(
        st.sampled_from([b"", b"hello", b"0\r\n\r\n", b"GET /check/internal/x HTTP/1.1\r\n\r\n"])
    )
    data = b"\r\n".join([request, *lines]) + b"\r\n\r\n" + body
    if draw(st.booleans()):  # pipelined: a plain check behind it
        data += b"GET /check/public/y HTTP/1.1\r\nHost: api.example.com\r\n\r\n"
    return data


def canonical_decision(listener: Listener, target: str) -> int | None:
    """The status of the canonical request for ``target`` (None: ztauthz refuses its path)."""
    try:
        path = normalize_path(target.removeprefix("/check"))
    except PathRejected:
        return None
    data = (
        f"GET /check{quote(path, safe='/')} HTTP/1.1\r\nHost: api.example.com\r\n"
        f"Authorization: Bearer {listener.token}\r\nConnection: close\r\n\r\n"
    ).encode()
    (answer,) = responses(exchange(listener.port, data))
    return answer.status


@given(st.data())
def test_any_bytes_are_answered_well(listener: Listener, data: st.DataObject) -> None:
    sent = data.draw(raw_requests(listener.token))
    answered(listener, sent)


KNOWN = [
    b"GET /check/public/..;/internal/x HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
    b"GET /check/public/%2e%2e;/internal/x HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
    b"GET /check/public/\xef\xbc\x8e\xef\xbc\x8e/internal HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /check/public/x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: "
    b"chunked\r\n\r\n0\r\n\r\nGET /check/internal/x HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /check/public/x HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 200_000 + b"\r\n\r\n",
    b"GET /check/public/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",  # an HTTP/2 preface
]


@pytest.mark.parametrize("sent", KNOWN, ids=lambda b: repr(b[:40]))
def test_known_hostile_bytes(listener: Listener, sent: bytes) -> None:
    for answer in answered(listener, sent):
        assert answer.status != 200 or answer.headers.get("x-auth-rule") == "public-read"


def answered(listener: Listener, sent: bytes) -> list[Response]:
    """Send ``sent``; check every answer (see the module docstring); return them."""
    answers = responses(exchange(listener.port, sent), head_first=sent.startswith(b"HEAD "))
    lines = listener.decision_lines() if answers else {}
    for answer in answers:
        assert answer.status in STATUSES, (answer.status, sent[:300])
        decision_id = answer.headers.get("x-auth-decision-id")
        if decision_id is None:
            continue  # refused by the protocol layer, before any check
        deadline = time.monotonic() + 5
        while decision_id not in lines and time.monotonic() < deadline:
            time.sleep(0.05)
            lines = listener.decision_lines()
        assert decision_id in lines, "an answered check without its decision-log line"
        assert lines[decision_id]["status"] == answer.status
    if answers and answers[0].status == 200:
        target = sent.split(b"\r\n", 1)[0].split(b" ")[1].decode("latin-1")
        assert canonical_decision(listener, target.partition("?")[0]) == 200, target
    return answers
