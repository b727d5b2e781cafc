"""Envoy HTTP ext_authz transport (``http_service`` mode).

Envoy sends the original method, ``path_prefix`` + original path, the original Host and the
allow-listed headers, without a body. This module maps that to a RequestContext, runs the
pipeline and renders the Decision. It holds no authorization logic.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response

from app.check import Checker
from app.request import RequestContext, make_context
from app.transport.render import HEADERS_TO_REMOVE, Rendered, render

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"]


def to_context(request: Request, path_prefix: str) -> RequestContext:
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    path = raw_path.decode("latin-1")
    query = request.scope.get("query_string", b"")
    if query:
        path = f"{path}?{query.decode('latin-1')}"
    # A path outside the prefix is not a check Envoy would send: it becomes "" and is rejected.
    original = path[len(path_prefix) :] if path.startswith(path_prefix + "/") else ""
    return make_context(
        method=request.method,
        host=request.headers.get("host", ""),
        path=original,
        headers=request.headers,
        transport="http",
    )


def response_headers(rendered: Rendered) -> dict[str, str]:
    """The rendered headers, plus the headers to remove in Envoy's HTTP-mode header."""
    headers = dict(rendered.headers)
    if rendered.headers_to_remove:
        headers[HEADERS_TO_REMOVE] = ",".join(rendered.headers_to_remove)
    return headers


def create_check_app(checker: Checker) -> FastAPI:
    app = FastAPI(title="ztauthz check", openapi_url=None, docs_url=None, redoc_url=None)
    runtime = checker.runtime
    prefix = runtime.state.settings.server.check.path_prefix

    @app.api_route("/{_path:path}", methods=ALL_METHODS, include_in_schema=False)
    async def check(request: Request) -> Response:
        decision = await checker.check(to_context(request, prefix))
        rendered = render(decision, runtime.state.settings.response)
        return Response(rendered.body, rendered.status, response_headers(rendered))

    return app
