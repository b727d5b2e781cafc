"""Admin listener: liveness, readiness and Prometheus metrics; the kill switch
(``POST /admin/v1/revocations``, its own bearer token) and, with ``signals.receiver.listener:
admin``, the SSF push receiver. Never on the check port."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.signals.admin import RevokeRequest, add_admin_routes
from app.signals.receiver import add_receiver_routes
from app.signals.service import Revocation
from app.state import Runtime
from app.telemetry.logging import iso_time


def create_admin_app(runtime: Runtime) -> FastAPI:
    app = FastAPI(title="ztauthz admin", openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "alive"})

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        state = runtime.state
        keys_ready = state.verifier.is_ready(runtime.now())
        ready = runtime.is_ready()
        body = {
            "status": "ready" if ready else "not_ready",
            "keys_loaded": keys_ready,
            "policies_loaded": True,
            "policy_version": state.policies.version,
            "rules": state.policies.rule_count,
            # Reload outcome: a rejected change shows here while the last good policies serve.
            "policy_reload": dict(runtime.reload_status),
            # Continuous access evaluation: the shared store and the transmitters' streams.
            "signals": runtime.signals.status(),
        }
        return JSONResponse(body, status_code=200 if ready else 503)

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
