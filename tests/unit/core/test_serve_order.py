"""``serve`` opens the admin listener (``/readyz``) last: a replica that answers there has bound
its check and SSF receiver ports, so a readiness probe never passes a moment before a port
that cannot be bound ends the process (the preflight's probe and the real bind are apart)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import pytest

from app import main
from app.dev.ports import free_port
from app.settings import Settings
from app.transport.http import ListenerServer

POLICIES = Path(__file__).resolve().parents[2] / "integration" / "policies"


async def _accepts(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


@pytest.mark.parametrize("held_back", ["check", "receiver"])
async def test_admin_listens_only_once_every_other_listener_does(
    held_back: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ports = {name: free_port() for name in ("check", "admin", "receiver")}
    token = tmp_path / "push-token"
    token.write_text("a-push-token-of-enough-length\n", encoding="utf-8")
    issuer = "http://127.0.0.1:9"
    settings = Settings.model_validate(
        {
            "server": {
                "check": {"host": "127.0.0.1", "port": ports["check"]},
                "admin": {"host": "127.0.0.1", "port": ports["admin"]},
            },
            "issuers": [
                {"issuer": issuer, "audiences": ["x"], "jwks_uri": issuer + "/jwks"},
            ],
            "policies": str(POLICIES),
            "signals": {
                "receiver": {"host": "127.0.0.1", "port": ports["receiver"]},
                "transmitters": [
                    {
                        "name": "idp",
                        "issuer": issuer,
                        "audiences": ["urn:ztauthz:ssf-receiver"],
                        "push": {"token_file": str(token)},
                    }
                ],
            },
        }
    )
    monkeypatch.setattr(main, "_settle", lambda: None)  # no gc.freeze of the test process
    reached, gate = asyncio.Event(), asyncio.Event()
    started: list[ListenerServer] = []
    startup = ListenerServer.startup

    async def gated(self: ListenerServer, sockets: list[socket.socket] | None = None) -> None:
        started.append(self)
        if self.config.port == ports[held_back]:
            reached.set()
            await gate.wait()  # this listener is slow to bind
        await startup(self, sockets)

    monkeypatch.setattr(ListenerServer, "startup", gated)
    serving = asyncio.create_task(main.serve(settings))
    try:
        await asyncio.wait_for(reached.wait(), 30)
        others = [name for name in ports if name not in ("admin", held_back)]
        for _ in range(200):  # until the listener that is not held back accepts
            if all([await _accepts(ports[name]) for name in others]):
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # time enough for the admin listener, were it not waiting
        assert not await _accepts(ports["admin"])
        gate.set()
        for _ in range(500):
            if await _accepts(ports["admin"]):
                break
            await asyncio.sleep(0.01)
        assert await _accepts(ports["admin"])
        assert await _accepts(ports[held_back])
    finally:
        gate.set()
        for server in started:
            server.should_exit = True
        await asyncio.wait_for(serving, 30)
