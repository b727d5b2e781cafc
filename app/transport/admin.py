"""Admin listener: liveness, readiness and Prometheus metrics. Never on the check port."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.state import Runtime


def create_admin_app(runtime: Runtime) -> FastAPI:
    app = FastAPI(title="ztauthz admin", openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "alive"})

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        state = runtime.state  # one snapshot: policies and reload report agree
        keys_ready = runtime.is_ready()
        body = {
            "status": "ready" if keys_ready else "not_ready",
            "keys_loaded": keys_ready,
            "policies_loaded": True,
            "policy_version": state.policies.version,
            "rules": state.policies.rule_count,
            # Reload outcome: a rejected change shows here while the last good policies serve.
            "policy_reload": dict(state.reload_status),
        }
        return JSONResponse(body, status_code=200 if keys_ready else 503)

    registry = runtime.telemetry.metrics.registry

    @app.get("/metrics")
    async def metrics() -> Response:
        # The Prometheus text format (version 0.0.4) of this runtime's own registry.
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
