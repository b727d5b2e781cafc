"""The lean HTTP check endpoint (app/transport/http.py): the same answers with tracing on (its
``ztauthz.check`` span is the server span) and off, methods no check uses refused with 405, and
the request mapped by the Envoy HTTP contract (app/transport/http_wire.py)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from app.check import Checker
from app.dev.issuer import create_issuer_app
from app.settings import Settings
from app.state import Runtime
from app.telemetry.hub import Telemetry
from app.telemetry.tracing import Tracing
from app.transport.http import CheckEndpoint
from app.transport.http_wire import request_context
from tests.unit.dev.dev_helpers import reader_token, serving, shared_keys

POLICIES = Path(__file__).resolve().parents[2] / "integration" / "policies"
AUDIENCE = "https://api.example.com"


@pytest.fixture(scope="module")
def issuer() -> Iterator[str]:
    with serving(lambda url: create_issuer_app(shared_keys(), url)) as url:
        yield url


@asynccontextmanager
async def client(issuer: str, tracing: Tracing | None = None) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings.model_validate(
        {"issuers": [{"issuer": issuer, "audiences": [AUDIENCE]}], "policies": POLICIES}
    )
    telemetry = Telemetry.create(settings, stream=io.StringIO(), tracing=tracing)
    async with Runtime(settings, telemetry=telemetry) as runtime:
        app = CheckEndpoint(Checker(runtime))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ztauthz") as http:
            yield http


CASES: list[tuple[str, str, str | None, int, str | None]] = [
    ("GET", "/check/invoices/42", "alice", 200, None),
    ("GET", "/check/invoices/42", None, 401, "token_missing"),
    ("POST", "/check/invoices/42", "alice", 403, "no_matching_rule"),
    ("GET", "/check/invoices/%2e%2e/admin", "alice", 400, "path_rejected"),
    ("GET", "/elsewhere/invoices", "alice", 400, "path_rejected"),  # outside the prefix
    ("HEAD", "/check/invoices/42", "alice", 403, None),
]


@pytest.mark.parametrize(("method", "path", "who", "status", "reason"), CASES)
async def test_traced_and_untraced_endpoints_answer_alike(
    issuer: str, method: str, path: str, who: str | None, status: int, reason: str | None
) -> None:
    headers = {"host": "api.example.com"}
    if who is not None:
        headers["authorization"] = f"Bearer {reader_token(issuer)}"
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    answers = []
    for tracing in (None, Tracing(provider)):
        async with client(issuer, tracing) as http:
            answers.append(await http.request(method, path, headers=headers))
    plain, traced = answers
    assert plain.status_code == traced.status_code == status
    if reason is not None and method != "HEAD":
        assert plain.json()["reason"] == traced.json()["reason"] == reason
    drop = {"x-auth-decision-id", "content-length"}
    assert {k: v for k, v in plain.headers.items() if k not in drop} == {
        k: v for k, v in traced.headers.items() if k not in drop
    }
    spans = exporter.get_finished_spans()
    (check,) = [span for span in spans if span.name == "ztauthz.check"]
    assert check.kind is SpanKind.SERVER  # one stack: the check span is the server span


async def test_allow_sets_identity_headers_and_names_the_others_for_removal(issuer: str) -> None:
    async with client(issuer) as http:
        reply = await http.get(
            "/check/invoices/42",
            headers={"host": "api.example.com", "authorization": f"Bearer {reader_token(issuer)}"},
        )
    assert reply.status_code == 200
    assert reply.headers["x-auth-subject"] == "alice"
    assert reply.headers["content-length"] == "0"
    removed = reply.headers["x-envoy-auth-headers-to-remove"].split(",")
    assert removed and all(name.startswith("x-auth-") for name in removed)
    assert not set(removed) & set(reply.headers)


@pytest.mark.parametrize("method", ["PROPFIND", "BREW"])
async def test_methods_no_check_uses_are_refused(issuer: str, method: str) -> None:
    async with client(issuer) as http:
        reply = await http.request(method, "/check/invoices/42")
    assert reply.status_code == 405
    assert "GET" in reply.headers["allow"]
    assert reply.json()["reason"] == "method_not_allowed"


def test_request_context_maps_the_check_request() -> None:
    ctx = request_context(
        "get",
        b"/check/a%2Fb",
        b"x=1",
        [
            (b"Host", b"first.example"),
            (b"host", b"second.example"),
            (b"X-Thing", b"1"),
            (b"x-thing", b"2"),
        ],
        "/check",
    )
    assert ctx.method == "GET"
    assert ctx.host == "first.example"  # the first Host counts
    assert ctx.headers["x-thing"] == "2"  # other repeated headers: the last one
    assert ctx.path == "/a%2Fb?x=1"  # raw, undecoded, with the query
    assert ctx.transport == "http"
    with pytest.raises(TypeError):
        ctx.headers["host"] = "evil"  # type: ignore[index]


def test_repeated_credentials_are_joined_so_that_two_are_refused_not_one_picked() -> None:
    ctx = request_context(
        "GET",
        b"/check/x",
        b"",
        [(b"DPoP", b"proof-1"), (b"dpop", b"proof-2"), (b"Authorization", b"DPoP t")],
        "/check",
    )
    assert ctx.headers["dpop"] == "proof-1,proof-2"
    assert ctx.headers["authorization"] == "DPoP t"
