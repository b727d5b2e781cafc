"""The demo upstream: answers every method and path with 200 and a JSON echo of the request.

The echo shows exactly what reached the upstream, notably which ``x-auth-*`` identity headers
Envoy forwarded (and whether a client managed to smuggle its own):

    {"method", "path", "raw_path", "query", "headers": {lower-cased name: value},
     "header_list": [[name, value], ...], "body_length"}

``headers`` joins repeated headers with ", "; ``header_list`` keeps every one, in order.
"""

from __future__ import annotations

import sys
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from app.dev.issuer import listen, run_on

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8081


async def upstream_app(scope: Scope, receive: Receive, send: Send) -> None:
    """ASGI app: echo any HTTP request; accept lifespan events; ignore anything else."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    body_length = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body_length += len(message.get("body", b""))
        more = message.get("more_body", False)
    response = JSONResponse(echo(scope, body_length))
    await response(scope, receive, send)


def echo(scope: Scope, body_length: int = 0) -> dict[str, Any]:
    """The JSON body describing one HTTP request scope."""
    pairs = [[k.decode("latin-1").lower(), v.decode("latin-1")] for k, v in scope["headers"]]
    headers: dict[str, str] = {}
    for name, value in pairs:
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    raw_path = scope.get("raw_path") or scope["path"].encode()
    return {
        "method": scope["method"],
        "path": scope["path"],
        "raw_path": raw_path.decode("latin-1"),
        "query": scope.get("query_string", b"").decode("latin-1"),
        "headers": headers,
        "header_list": pairs,
        "body_length": body_length,
    }


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def serve_upstream(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Run the echo upstream until interrupted; prints its base URL (alone, on stdout)."""
    sock, url = listen(host, port)
    print("ztauthz dev upstream: DEVELOPMENT ONLY (echoes every request)", file=sys.stderr)
    run_on(upstream_app, sock, url)
