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
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    registry = runtime.telemetry.metrics.registry

    @app.get("/metrics")
    async def metrics() -> Response:
        # The Prometheus text format (version 0.0.4) of this runtime's own registry.
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
