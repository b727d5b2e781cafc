"""The push receiver, RFC 8935: ``POST <path_prefix>/<stream>`` with one SET.

Per request, in order (nothing changes before the last step succeeds):

1. the stream exists and takes pushes, and ``Authorization: Bearer <token>`` carries its push
   token (SSF §6.1.1: the ``authorization_header`` the receiver gives the transmitter for
   its stream; compared in constant time), else
   400 ``authentication_failed`` (the same answer for an unknown stream: names are not probed);
2. ``Content-Type: application/secevent+jwt`` (RFC 8935 §2.1), else 400 ``invalid_request``;
3. the body no larger than ``max_body_bytes``, else 413;
4. the SET accepted (app/signals/intake.py): 202 with no body (§2.2), or 400 with
   ``{"err": <code>, "description": ...}`` as ``application/json`` (§2.3), or 503 with
   ``Retry-After`` when it cannot be decided now (the transmitter delivers it again).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from app.signals.credentials import SecretUnavailable, bearer_matches, read_secret
from app.signals.errors import SetError, SetErrorCode, SetUnavailable
from app.signals.service import Signals

log = logging.getLogger("ztauthz.signals")
SET_MEDIA_TYPE = "application/secevent+jwt"
RETRY_AFTER_SECONDS = 5


def refusal(code: SetErrorCode, description: str) -> JSONResponse:
    return JSONResponse(
        {"err": code.value, "description": description},
        status_code=400,
        headers={"cache-control": "no-store"},
    )


def unavailable(description: str) -> JSONResponse:
    return JSONResponse(
        {"description": description},
        status_code=503,
        headers={"retry-after": str(RETRY_AFTER_SECONDS), "cache-control": "no-store"},
    )


def add_receiver_routes(app: FastAPI, signals: Signals) -> None:
    prefix = signals.settings.receiver.path_prefix
    limit = signals.settings.receiver.max_body_bytes

    @app.post(prefix + "/{stream}", include_in_schema=False)
    async def push(stream: str, request: Request) -> Response:
        found = signals.streams.get(stream)
        push = None if found is None else found.transmitter.push
        if push is None:
            return refusal(SetErrorCode.AUTHENTICATION_FAILED, "unknown stream or credentials")
        try:
            expected = read_secret(push)
        except SecretUnavailable as exc:
            log.error("signals: push token of stream %s: %s", stream, exc)
            return unavailable("the receiver cannot check credentials now")
        if not bearer_matches(request.headers.get("authorization"), expected):
            return refusal(SetErrorCode.AUTHENTICATION_FAILED, "unknown stream or credentials")
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != SET_MEDIA_TYPE:
            return refusal(SetErrorCode.INVALID_REQUEST, f"Content-Type must be {SET_MEDIA_TYPE}")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return JSONResponse({"description": "the SET is too large"}, status_code=413)
        try:
            await signals.intake.accept(stream, bytes(body), "push")
        except SetError as exc:
            return refusal(exc.code, exc.description)
        except SetUnavailable as exc:
            return unavailable(str(exc))
        return Response(status_code=202)


def create_receiver_app(signals: Signals) -> FastAPI:
    """The receiver on a listener of its own (``signals.receiver.listener: own``)."""
    app = FastAPI(title="ztauthz SSF receiver", openapi_url=None, docs_url=None, redoc_url=None)
    add_receiver_routes(app, signals)
    return app
