"""The webhook's HTTPS server: two review paths, one health path. No decisions here.

- ``POST /inject/namespace``  the webhook entry for namespaces labelled
  ``ztauthz.dev/injection=enabled``: inject unless the pod opts out,
- ``POST /inject/pod``        the entry for pods that opt in themselves,
- ``GET /healthz``            liveness and readiness.

A body that is not JSON (or nests deeper than any Pod: ``mutate.MAX_DEPTH``), or not an
AdmissionReview with a request uid, is answered 400 with a JSON ``{"error": ...}`` (the API
server then refuses the pod: failure policy ``Fail``). Any
other problem is answered inside the AdmissionReview (``allowed: false`` and a message), which
the client sees verbatim. Pod objects are never logged: they may carry secrets in env values.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.injector.config import InjectorConfig
from app.injector.mutate import MalformedReview, answer, mutate, read_request, read_review
from app.injector.tls import ReloadingContext

log = logging.getLogger("ztauthz.injector")

# The API server caps objects at 1.5 MiB; a review carries the object once for CREATE.
MAX_BODY_BYTES = 4 * 1024 * 1024


class _TooLarge(Exception):
    pass


async def _body(request: Request) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _describe(review: dict[str, Any]) -> str:
    """uid and namespace/name of the pod under review, for the log (never the pod itself)."""

    def mapping(value: Any) -> dict[str, Any]:
        return value if isinstance(value, dict) else {}

    request = mapping(review.get("request"))
    meta = mapping(mapping(request.get("object")).get("metadata"))
    name = meta.get("name") or f"{meta.get('generateName', '')}*"
    return f"uid={request.get('uid')} pod={request.get('namespace')}/{name}"


def create_injector_app(config: InjectorConfig) -> Starlette:
    async def review(request: Request, namespace_opted_in: bool) -> JSONResponse:
        try:
            body = await _body(request)
        except _TooLarge:
            return _error(413, f"the review is larger than {MAX_BODY_BYTES} bytes")
        try:
            data = read_review(body)
        except MalformedReview as exc:
            return _error(400, f"malformed AdmissionReview: {exc}")
        try:
            uid, _ = read_request(data)
            out = mutate(data, config, namespace_opted_in=namespace_opted_in)
        except MalformedReview as exc:
            log.warning("refused a malformed review: %s", exc)
            return _error(400, f"malformed AdmissionReview: {exc}")
        except Exception:
            # Fail closed, and say so in the review the API server shows to the client.
            log.exception("injection failed: %s", _describe(data))
            out = answer(uid, allowed=False, code=500, message="internal error, see its log")
        response = out["response"]
        outcome = (
            "injected"
            if "patch" in response
            else ("refused" if not response["allowed"] else "unchanged")
        )
        detail = response.get("status", {}).get("message", "")
        log.info("%s %s %s", outcome, _describe(data), detail)
        return JSONResponse(out)

    async def namespace_entry(request: Request) -> JSONResponse:
        return await review(request, namespace_opted_in=True)

    async def pod_entry(request: Request) -> JSONResponse:
        return await review(request, namespace_opted_in=False)

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "alive"})

    return Starlette(
        routes=[
            Route("/inject/namespace", namespace_entry, methods=["POST"]),
            Route("/inject/pod", pod_entry, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


def serve_injector(
    config: InjectorConfig, *, cert: Path, key: Path, host: str, port: int, log_level: str
) -> None:
    """Serve the webhook over TLS until SIGTERM/SIGINT. Prints the base URL once listening."""
    tls = ReloadingContext(cert, key)  # raises (OSError, ssl.SSLError) before any port opens
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family)
    bound = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_injector_app(config),
            log_level=log_level,
            access_log=False,
            server_header=False,
            lifespan="off",
            ssl_context_factory=lambda _config, _default: tls.context,
        )
    )
    shown = f"[{host}]" if ":" in host else host
    print(f"https://{shown}:{bound}", flush=True)
    server.run(sockets=[sock])
