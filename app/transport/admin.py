"""Admin listener: liveness, readiness and Prometheus metrics; the assertion's JWKS; the kill
switch (``POST /admin/v1/revocations``, its own bearer token) and, with
``signals.receiver.listener: admin``, the SSF push receiver. Never on the check port."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.signals.admin import RevokeRequest, add_admin_routes
from app.signals.receiver import add_receiver_routes
from app.signals.service import Revocation
from app.state import Runtime
from app.telemetry.logging import iso_time

JWKS_PATH = "/.well-known/jwks.json"
JWKS_MEDIA_TYPE = "application/jwk-set+json"  # RFC 7517 §8.5.1


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 §13.1.2: ``*`` or any listed entity tag equal to ``etag`` by weak comparison."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


def create_admin_app(runtime: Runtime) -> FastAPI:
    app = FastAPI(title="ztauthz admin", openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "alive"})

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        state = runtime.state
        ready = runtime.is_ready()
        store = runtime.store_health.status()
        body = {
            "status": "ready" if ready else "not_ready",
            "keys_loaded": state.verifier.is_ready(runtime.now()),
            # The shared store (DPoP replay cache): readiness fails once it has been down for
            # store.unready_after; checks that need it are refused from the first failure.
            "store": {
                "backend": store.backend,
                "up": store.up,
                "down_since": store.down_since,
                "error": store.last_error,
            },
            "policies_loaded": True,
            "policy_version": state.policies.version,
            "rules": state.policies.rule_count,
            # Reload outcome: a rejected change shows here while the last good policies serve.
            "policy_reload": dict(runtime.reload_status),
            # Continuous access evaluation: the shared store and the transmitters' streams.
            "signals": runtime.signals.status(),
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get(JWKS_PATH)
    async def jwks(request: Request) -> Response:
        """The public keys that verify the signed identity assertion (every key in force, the
        signing one and those still published for rotation); 404 when the assertion is off."""
        signer = runtime.assertions
        if signer is None:
            return JSONResponse({"error": "the signed identity assertion is off"}, 404)
        body, etag = signer.jwks()
        max_age = int(signer.settings.jwks_max_age.total_seconds())
        headers = {"etag": etag, "cache-control": f"public, max-age={max_age}"}
        if etag_matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=JWKS_MEDIA_TYPE, headers=headers)

    def audit(revocation: Revocation, request: RevokeRequest) -> None:
        telemetry = runtime.telemetry
        telemetry.decision_log.record_line(
            {
                "kind": "revocation",
                "schema": 1,
                "time": iso_time(runtime.now()),
                "action": revocation.id,
                "subject": None if request.subject is None else telemetry.subject(request.subject),
                "issuer": request.issuer,
                "session": request.session is not None,
                "device_id": request.device,
                "reason": request.reason,
                "records": len(revocation.records),
                "shared": revocation.shared,
            }
        )

    add_admin_routes(app, runtime.signals, audit)  # only with signals.admin.token_file
    if runtime.signals.settings.receiver.listener == "admin":
        add_receiver_routes(app, runtime.signals)

    registry = runtime.telemetry.metrics.registry

    @app.get("/metrics")
    async def metrics() -> Response:
        # The Prometheus text format (version 0.0.4) of this runtime's own registry.
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
