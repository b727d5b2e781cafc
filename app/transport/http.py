"""Envoy HTTP ext_authz transport (``http_service`` mode).

Envoy sends the original method, ``path_prefix`` + original path, the original Host and the
allow-listed headers, without a body. This module maps that to a RequestContext, runs the
pipeline and renders the Decision. It holds no authorization logic.

Every request to this listener is a check, so the check is answered at the ASGI level
(``CheckEndpoint``): no routing, no Request or Response objects, no dependency resolution on
the path every request takes. FastAPI still owns the application (``CheckApp``); methods no
check uses are refused with 405, as a method-bound route would. This ASGI path serves checks
when tracing is on; otherwise the listener answers with its own HTTP/1.1 protocol
(``app/transport/check_protocol.py``), built on the same ``head_context`` and renderer.
"""

from __future__ import annotations

import logging
from types import MappingProxyType

from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.check import Checker
from app.decision import Decision
from app.request import RequestContext, make_context
from app.transport.render import HEADERS_TO_REMOVE, Rendered, removed_value, render

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"]
_METHODS = frozenset(ALL_METHODS)
_NOT_ALLOWED = [(b"content-length", b"0"), (b"allow", ", ".join(ALL_METHODS).encode())]

log = logging.getLogger("ztauthz.transport.http")


def original_path(raw_path: bytes, query: bytes, path_prefix: str) -> str:
    """The original request's path (and query) from the check request's; ``""`` when the
    check request is outside ``path_prefix`` (not a check Envoy would send: it is rejected)."""
    path = raw_path.decode("latin-1")
    if query:
        path = f"{path}?{query.decode('latin-1')}"
    return path[len(path_prefix) :] if path.startswith(path_prefix + "/") else ""


RawHeaders = list[tuple[bytes, bytes]]


def scope_context(scope: Scope, path_prefix: str) -> RequestContext:
    """The RequestContext of an ASGI HTTP scope."""
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
    query: bytes = scope.get("query_string", b"")
    return head_context(scope["method"], raw_path, query, scope["headers"], path_prefix)


def head_context(
    method: str, raw_path: bytes, query: bytes, raw: RawHeaders, path_prefix: str
) -> RequestContext:
    """The RequestContext of a check request's head: its method, path and query (as sent) and
    headers. Header names are lower-cased; the last of repeated headers wins, except
    ``host``, where the first counts."""
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in raw}
    host = headers.get("host", "")
    if len(headers) < len(raw):  # a repeated header: the first Host counts
        host = next((v.decode("latin-1") for n, v in raw if n.lower() == b"host"), "")
    return RequestContext(
        method=method.upper(),
        host=host,
        path=original_path(raw_path, query, path_prefix),
        headers=MappingProxyType(headers),
        transport="http",
    )


def to_context(request: Request, path_prefix: str) -> RequestContext:
    """The RequestContext of a Starlette request (same mapping as ``scope_context``)."""
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    return make_context(
        method=request.method,
        host=request.headers.get("host", ""),
        path=original_path(raw_path, request.scope.get("query_string", b""), path_prefix),
        headers=request.headers,
        transport="http",
    )


def response_headers(rendered: Rendered) -> dict[str, str]:
    """The rendered headers, plus the headers to remove in Envoy's HTTP-mode header."""
    headers = dict(rendered.headers)
    if rendered.headers_to_remove:
        headers[HEADERS_TO_REMOVE] = ",".join(rendered.headers_to_remove)
    return headers


def raw_headers(rendered: Rendered) -> list[tuple[bytes, bytes]]:
    """``response_headers`` as ASGI wants them, with the body's content-length."""
    raw = [(b"content-length", str(len(rendered.body)).encode())]
    raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in rendered.headers.items()]
    if rendered.headers_to_remove:
        raw.append((HEADERS_TO_REMOVE.encode(), removed_value(rendered.headers_to_remove)))
    return raw


class CheckEndpoint:
    """ASGI app answering one HTTP request with one check."""

    def __init__(self, checker: Checker) -> None:
        self.checker = checker
        settings = checker.runtime.state.settings  # fixed for the runtime; reloads swap policies
        self.prefix = settings.server.check.path_prefix
        self._response = settings.response

    def rendered(self, decision: Decision) -> Rendered:
        return render(decision, self._response)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in _METHODS:
            await send(_start(405, _NOT_ALLOWED))
            await send({"type": "http.response.body", "body": b""})
            return
        decision = await self.checker.check(scope_context(scope, self.prefix))
        rendered = self.rendered(decision)
        await send(_start(rendered.status, raw_headers(rendered)))
        await send({"type": "http.response.body", "body": rendered.body})


class _Checks:
    """FastAPI middleware handing every HTTP request to the CheckEndpoint."""

    def __init__(self, app: ASGIApp, endpoint: CheckEndpoint) -> None:
        self.app = app
        self._endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._endpoint(scope, receive, send)
        else:
            await self.app(scope, receive, send)


class CheckApp(FastAPI):
    """The check listener's FastAPI app.

    With tracing on, checks run inside FastAPI's middleware stack, so the OpenTelemetry
    instrumentation (``Tracing.instrument``) puts its server span around each. With tracing
    off, HTTP requests go straight to the endpoint: FastAPI's per-request layers (error and
    body-limit middleware, its native telemetry probe) would cost more than a decision, and
    add nothing a check needs. Either way an exception that escapes becomes a 500 (uvicorn's
    or FastAPI's), which Envoy turns into a refusal: the check fails closed.
    """

    def __init__(self, checker: Checker) -> None:
        super().__init__(title="ztauthz check", openapi_url=None, docs_url=None, redoc_url=None)
        self.endpoint = CheckEndpoint(checker)
        self._direct = not checker.runtime.telemetry.tracing.enabled
        if not self._direct:
            self.add_middleware(_Checks, endpoint=self.endpoint)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._direct and scope["type"] == "http":
            await self.endpoint(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def _start(status: int, headers: list[tuple[bytes, bytes]]) -> Message:
    return {"type": "http.response.start", "status": status, "headers": headers}


def create_check_app(checker: Checker) -> CheckApp:
    return CheckApp(checker)
