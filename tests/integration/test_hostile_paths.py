"""Paths an upstream reads differently, through every Envoy users run in front of ztauthz: the
shipped bootstraps and a minimal one that normalizes nothing, over HTTP and gRPC (``edge``).

The policy allows ``GET /public/**`` to anyone and denies ``/internal/**`` always. Each case
below is read as ``/internal/...`` by some common upstream (Tomcat's ``;`` parameters, IIS's
trimmed segments, NFKC-normalizing frameworks, best-fit code pages, lax UTF-8 decoders,
double decoding): none may reach the upstream. Where the shipped Envoy resolves the construct
itself (``..;`` is ``..`` to it), ztauthz is asked about the resolved path and denies that; where
it passes the construct on, and with the minimal Envoy always, ztauthz refuses it: 400
``path_ambiguous`` (or ``path_rejected`` for what is malformed outright).

Every answer is also checked against the rule of docs/security-hardening.md: a request that
reaches the upstream reaches it with the path ztauthz was asked about (its decision-log line),
which every modelled reader (tests/fuzz/readings.py) resolves to the path ztauthz matched.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass

import pytest

from app.dev.stack import Reply, http_request
from app.policy.normalize import normalize_path
from tests.fuzz.readings import distinct_readings
from tests.integration.edge_support import Edge

pytestmark = pytest.mark.integration

AMBIGUOUS = "path_ambiguous"
REJECTED = "path_rejected"
DENIED = "denied_by_rule"
ENVOY_400 = "envoy_400"  # Envoy refuses the request itself; ztauthz is never asked
ALLOWED = "allowed"


@dataclass(frozen=True, slots=True)
class Case:
    id: str
    path: str
    shipped: str  # the outcome behind the shipped bootstraps
    minimal: str = AMBIGUOUS  # the outcome behind the minimal bootstrap

    def expected(self, edge: Edge) -> str:
        return self.shipped if edge.bootstrap == "shipped" else self.minimal


CASES = [
    # Servlet path parameters: Tomcat/Jetty/Spring strip ';...' from each segment
    Case("dotdot-semicolon", "/public/..;/internal/x", DENIED),
    Case("dotdot-jsessionid", "/public/..;jsessionid=1/internal/x", DENIED),
    Case("encoded-dotdot-semicolon", "/public/%2e%2e;/internal/x", AMBIGUOUS),
    Case("dotdot-encoded-semicolon", "/public/..%3b/internal/x", AMBIGUOUS),
    Case("dotdot-encoded-semicolon-upper", "/public/..%3B/internal/x", AMBIGUOUS),
    Case("dot-semicolon", "/public/.;/internal/x", ALLOWED),  # Envoy: /public/internal/x
    Case("params-then-dotdot", "/public;x=1/..;/internal/x", DENIED),
    Case("params-on-the-target", "/public/../internal;x=1/x", AMBIGUOUS, REJECTED),
    # Unicode compatibility forms (NFKC) and look-alikes, percent-encoded UTF-8
    Case("fullwidth-dots", "/public/%EF%BC%8E%EF%BC%8E/internal/x", AMBIGUOUS),
    Case("fullwidth-solidus", "/public/%EF%BC%8F..%EF%BC%8Finternal/x", AMBIGUOUS),
    Case("two-dot-leader", "/public/%E2%80%A5/internal/x", AMBIGUOUS),
    Case("division-slash", "/public/..%E2%88%95internal/x", AMBIGUOUS),
    Case("fraction-slash", "/public/..%E2%81%84internal/x", AMBIGUOUS),
    Case("fullwidth-reverse-solidus", "/public/..%EF%BC%BCinternal/x", AMBIGUOUS),
    Case("fullwidth-letter", "/%EF%BD%89nternal/x", AMBIGUOUS),
    Case("ideographic-full-stop", "/public/%E3%80%82%E3%80%82/internal/x", AMBIGUOUS),
    # Windows/IIS trims trailing dots and spaces from a segment
    Case("dotdot-space", "/public/..%20/internal/x", AMBIGUOUS),
    Case("dotdot-spaces", "/public/..%20%20/internal/x", AMBIGUOUS),
    Case("three-dots", "/public/.../internal/x", AMBIGUOUS),
    Case("dotdot-encoded-dot", "/public/..%2e/internal/x", AMBIGUOUS),
    Case("trailing-dot-name", "/internal./x", AMBIGUOUS),
    Case("trailing-space-name", "/internal%20/x", AMBIGUOUS),
    # still refused, as before: double encoding, overlong UTF-8, %u, backslashes, controls
    Case("double-encoded-dotdot", "/public/%252e%252e/internal/x", REJECTED, REJECTED),
    Case("double-encoded-slash", "/public/..%252finternal/x", REJECTED, REJECTED),
    Case("overlong-dots", "/public/%c0%ae%c0%ae/internal/x", REJECTED, REJECTED),
    Case("overlong-slash", "/public/..%c0%afinternal/x", REJECTED, REJECTED),
    Case("percent-u", "/public/%u002e%u002e/internal/x", REJECTED, REJECTED),
    Case("backslash", "/public\\..\\internal/x", DENIED, REJECTED),
    Case("encoded-control", "/public/%01/x", REJECTED, REJECTED),
    Case("encoded-tab", "/public/..%09/internal/x", REJECTED, REJECTED),
]


def decision_log_path(edge: Edge, decision_id: str) -> str:
    deadline = time.monotonic() + 5.0
    while True:
        for line in edge.stack.log("ztauthz").read_text(encoding="utf-8").split("\n"):
            if decision_id in line and line.startswith('{"kind":"decision"'):
                return str(json.loads(line)["path"])
        if time.monotonic() > deadline:
            raise AssertionError(f"decision {decision_id} is not in the decision log")
        time.sleep(0.05)


def outcome(reply: Reply) -> str:
    body = reply.json()
    if reply.status == 200:
        return ALLOWED
    if isinstance(body, dict) and "reason" in body:
        return str(body["reason"])
    assert reply.status == 400 and "x-auth-decision-id" not in reply.headers, reply
    return ENVOY_400


def assert_no_other_reading(edge: Edge, reply: Reply) -> None:
    """An allowed request reached the upstream with a path every reader reads as the path
    ztauthz authorized."""
    body = reply.json()
    assert isinstance(body, dict) and "raw_path" in body, reply
    received = str(body["raw_path"])
    # The path ztauthz was asked about (its decision log keeps it as sent) is the one the
    # upstream received, and every reader reads it as the one path ztauthz matched.
    asked = decision_log_path(edge, body["headers"]["x-auth-decision-id"])
    assert asked == received
    assert distinct_readings(received) == {normalize_path(asked)}, (received, asked)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_no_upstream_reads_another_path(edge: Edge, case: Case) -> None:
    reply = http_request(edge.port, "GET", case.path)
    assert reply.status < 500, reply
    assert outcome(reply) == case.expected(edge), (edge.name, reply.status, reply.body[:200])
    if reply.status == 200:
        assert_no_other_reading(edge, reply)


def raw_get(port: int, target: bytes) -> int:
    """A request with raw (not percent-encoded) bytes in its target; the status answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"GET " + target + b" HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1])


@pytest.mark.parametrize(
    "target",
    [
        "/public/\uff0e\uff0e/internal/x",
        "/public/\u2025/internal/x",
        "/public/..\u2215internal/x",
        "/public/caf\u00e9",
    ],
    ids=["fullwidth-dots", "two-dot-leader", "division-slash", "latin-letter"],
)
def test_raw_non_ascii_targets_never_reach_the_upstream(edge: Edge, target: str) -> None:
    """Envoy itself refuses raw UTF-8 in the request-target (400); had it not, ztauthz refuses
    it too (path_rejected: a request-target is ASCII, RFC 3986 §2)."""
    assert raw_get(edge.port, target.encode("utf-8")) == 400


@pytest.mark.parametrize("path", ["/public/a", "/public/a;b", "/public/caf%C3%A9", "/public/a%20b"])
def test_what_is_allowed_still_is(edge: Edge, path: str) -> None:
    """The rule costs no ordinary request its answer: only constructs an upstream could read
    as another path are refused (a ';' in any segment is such a construct)."""
    reply = http_request(edge.port, "GET", path)
    if ";" in path:
        assert outcome(reply) == AMBIGUOUS
        return
    assert reply.status == 200, reply
    assert_no_other_reading(edge, reply)
