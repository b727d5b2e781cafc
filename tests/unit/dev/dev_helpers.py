"""Helpers for the dev tooling tests: shared dev keys, loopback servers and server processes.

Context managers rather than conftest fixtures: a second ``conftest`` module would collide with
the others under mypy, and ``with`` makes the teardown visible in each test.
"""

from __future__ import annotations

import functools
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

from app.dev.keys import DevKeys
from app.dev.stack_config import AUDIENCE
from app.dev.tokens import mint

AppFactory = Callable[[str], Any]  # base URL -> ASGI app

# Runs `ztauthz dev ...` through add_dev_commands alone (independent of app/cli.py).
_RUN_DEV = (
    "import argparse, sys\n"
    "from app.dev.cli import add_dev_commands\n"
    "parser = argparse.ArgumentParser(prog='ztauthz')\n"
    "add_dev_commands(parser.add_subparsers(dest='command', required=True))\n"
    "args = parser.parse_args(['dev', *sys.argv[1:]])\n"
    "sys.exit(args.func(args))\n"
)
DEV_CLI = [sys.executable, "-c", _RUN_DEV]
"""argv prefix of a real ``ztauthz dev`` process: append the subcommand and its options."""


@functools.cache
def shared_keys() -> DevKeys:
    """One in-memory key pair for every test that does not care which keys it gets."""
    return DevKeys.generate()


def reader_token(issuer: str, subject: str = "alice", **overrides: Any) -> str:
    """A token of ``issuer`` (signed with ``shared_keys``) for a finance reader, the caller the
    test policies allow; ``overrides`` are ``mint``'s arguments."""
    claims: dict[str, Any] = {
        "issuer": issuer,
        "audience": AUDIENCE,
        "subject": subject,
        "groups": ["finance"],
        "scopes": ["invoices:read"],
        **overrides,
    }
    return mint(shared_keys(), **claims)


@contextmanager
def serving(app_for: AppFactory) -> Iterator[str]:
    """Serve ``app_for(base_url)`` with uvicorn on a free loopback port; yield the base URL."""
    sock = socket.create_server(("127.0.0.1", 0))
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app_for(base_url), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


class Running:
    """A server process; ``url`` is the first line it printed on stdout (its ready line)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.url = ""

    def stop(self) -> tuple[int, str]:
        """SIGINT (SIGKILL after 10 s); return (exit code, everything written to stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode, err or ""


@contextmanager
def running(argv: list[str], cwd: Path) -> Iterator[Running]:
    """Start a server process, wait for its ready line; always stop it on exit."""
    proc = subprocess.Popen(
        argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    server = Running(proc)
    try:
        assert proc.stdout is not None
        server.url = proc.stdout.readline().strip()
        if not server.url:
            code, err = server.stop()
            raise RuntimeError(f"server exited before it was ready (rc={code}): {err[-2000:]}")
        yield server
    finally:
        server.stop()
