"""Scenario (1), the ceiling of the server stack: a bare ASGI endpoint answering 200.

Run by uvicorn exactly as ztauthz is (uvloop, httptools, no access log): whatever the check
endpoint costs beyond this is ztauthz's own work. It is also the upstream of every Envoy
scenario, so those differ only in what sits in front of it.
"""

from __future__ import annotations

from typing import Any

_START = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]}
_BODY = {"type": "http.response.body", "body": b""}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    await send(_START)
    await send(_BODY)
