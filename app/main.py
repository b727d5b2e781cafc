"""Assembling and running the service: runtime state, the check and admin apps, two listeners."""

from __future__ import annotations

import asyncio
import logging

import uvicorn

from app.check import Checker
from app.settings import Settings
from app.state import Runtime
from app.telemetry.decision_log import DecisionLog
from app.transport.admin import create_admin_app
from app.transport.http import create_check_app

log = logging.getLogger("ztauthz")


def _server(app: object, host: str, port: int, log_level: str) -> uvicorn.Server:
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,  # access logs would carry query strings; decisions are logged instead
        server_header=False,
        date_header=False,
        lifespan="off",
    )
    return uvicorn.Server(config)


async def serve(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM. Policies are loaded (and refused) before any port opens."""
    runtime = Runtime(settings)
    async with runtime:
        check = _server(
            create_check_app(Checker(runtime, DecisionLog())),
            settings.server.check.host,
            settings.server.check.port,
            settings.log_level,
        )
        admin = _server(
            create_admin_app(runtime),
            settings.server.admin.host,
            settings.server.admin.port,
            settings.log_level,
        )
        log.info("ztauthz serving")
        await asyncio.gather(check.serve(), admin.serve())
