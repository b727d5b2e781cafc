"""``ztauthz serve`` exits within ``server.shutdown_grace`` of SIGTERM whatever the OTLP collector
does: with spans queued and a collector that never answers (a listener that accepts no
connection) or refuses every connection, the spans are dropped and logged, and the exit is 0.

(Before the bound, the exit waited on the OTLP exporter's retries: 6-10 s, and ``docker compose
down`` ended ztauthz by SIGKILL.) The bound is asserted loosely, grace + 3 s, for 2 shared cores.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from app.dev.ports import free_port
from app.dev.procs import HttpReady, ManagedProcess
from app.dev.stack import ztauthz_command

pytestmark = pytest.mark.integration

GRACE = 2.0
MARGIN = 3.0
POLICIES = Path(__file__).resolve().parent / "policies"


@contextmanager
def collector(kind: str) -> Iterator[str]:
    """An OTLP endpoint that black-holes (listens, never accepts: the request is sent into the
    backlog and never answered) or refuses (nothing listens)."""
    if kind == "refuses":
        yield f"http://127.0.0.1:{free_port()}"
        return
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


@pytest.mark.parametrize("kind", ["blackholes", "refuses"])
def test_sigterm_exits_within_the_grace_with_spans_queued(
    tmp_path: Path, child_env: dict[str, str], kind: str
) -> None:
    check, admin = free_port(), free_port()
    config = tmp_path / "ztauthz.yaml"
    config.write_text(
        f"server: {{check: {{port: {check}}}, admin: {{port: {admin}}}, "
        f"shutdown_grace: {GRACE:g}s}}\n"
        "issuers: [{issuer: 'http://127.0.0.1:9', audiences: [api]}]\n"
        f"policies: {POLICIES}\n",
        encoding="utf-8",
    )
    with collector(kind) as endpoint:
        env = {k: v for k, v in child_env.items() if not k.startswith("OTEL_")}
        env |= {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "60000",  # keep the spans queued until shutdown
        }
        process = ManagedProcess(
            "ztauthz-shutdown",
            [*ztauthz_command(), "serve", "--config", str(config)],
            log_path=tmp_path / "ztauthz.log",
            ready=HttpReady(f"http://127.0.0.1:{admin}/healthz"),
            env=env,
            stop_timeout=30,
        )
        process.start()
        try:
            for _ in range(5):  # five decisions, five traced checks queued
                answer = httpx.get(f"http://127.0.0.1:{check}/check/invoices", timeout=10)
                assert answer.status_code == 401
            pid = process.pid
            assert pid is not None
            sent = time.monotonic()
            os.kill(pid, signal.SIGTERM)
            while process.returncode is None and time.monotonic() - sent < 30:
                time.sleep(0.02)
            took = time.monotonic() - sent
        finally:
            process.stop()
    print(f"{kind}: exit {took:.2f} s after SIGTERM (grace {GRACE:g} s)")
    log = process.log_tail(200)
    assert process.returncode == 0, log
    assert took < GRACE + MARGIN, f"exit took {took:.1f} s (grace {GRACE:g} s)\n{log}"
    assert "spans were not sent" in log, log
