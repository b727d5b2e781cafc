"""The operator's kill switch on the admin listener: ``POST /admin/v1/revocations``.

Authenticated with its own bearer token (``signals.admin.token_file``, read at each request so
it can be rotated in place; compared in constant time); without that setting the route does
not exist. The body names what to cut off::

    {"subject": "alice", "issuer": "https://idp.example.com",   # issuer optional: all
     "session": "sid-123", "device": "laptop-7", "duration": "2h", "reason": "incident 42"}

Answers 201 with the action's id and what was applied, 400 for a body that names nothing,
401 for missing or wrong credentials, 503 when the token file cannot be read. The action is
an event (``access_revoked``) and a line in the decision log (``kind: revocation``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.durations import Duration
from app.settings.signals import Secret
from app.signals.credentials import SecretUnavailable, bearer_matches, read_secret
from app.signals.service import Revocation, RevokeError, Signals

log = logging.getLogger("ztauthz.signals")
REVOCATIONS_PATH = "/admin/v1/revocations"


class RevokeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: str | None = Field(default=None, min_length=1, max_length=1024)
    issuer: str | None = Field(default=None, min_length=1, max_length=1024)
    session: str | None = Field(default=None, min_length=1, max_length=1024)
    device: str | None = Field(default=None, min_length=1, max_length=1024)
    duration: Duration | None = None
    reason: str | None = Field(default=None, max_length=200)


def add_admin_routes(
    app: FastAPI, signals: Signals, audit: Callable[[Revocation, RevokeRequest], None]
) -> None:
    """``audit`` records the action (the decision log line)."""
    token_file = signals.settings.admin.token_file
    if token_file is None:
        return
    secret = Secret(token_file=token_file)

    @app.post(REVOCATIONS_PATH, include_in_schema=False)
    async def revoke(request: Request) -> JSONResponse:
        try:
            expected = read_secret(secret)
        except SecretUnavailable as exc:
            log.error("signals: admin token: %s", exc)
            return JSONResponse({"error": "the admin token cannot be read"}, status_code=503)
        if not bearer_matches(request.headers.get("authorization"), expected):
            return JSONResponse(
                {"error": "unauthorized"},
                status_code=401,
                headers={"www-authenticate": 'Bearer realm="ztauthz-admin"'},
            )
        try:
            body = RevokeRequest.model_validate_json(await request.body())
            revocation = await signals.revoke(
                subject=body.subject,
                issuer=body.issuer,
                session=body.session,
                device=body.device,
                duration=body.duration,
                reason=body.reason,
            )
        except ValidationError as exc:
            problems = [
                f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()
            ]
            return JSONResponse({"error": "invalid request", "problems": problems}, status_code=400)
        except RevokeError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        audit(revocation, body)
        return JSONResponse(describe(revocation), status_code=201)


def describe(revocation: Revocation) -> dict[str, Any]:
    return {
        "id": revocation.id,
        "shared": revocation.shared,
        "records": [
            {
                "effect": r.effect.value,
                "key": r.key,
                "reason": None if r.reason is None else r.reason.value,
                "at": r.at,
                "until": r.until,
            }
            for r in revocation.records
        ],
    }
