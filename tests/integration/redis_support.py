"""A real ``redis-server`` (Debian's; ``make redis`` installs it) on a loopback port, for the
shared-store tests: started per test or per module, always stopped, killable mid-test.

The server requires a password (written to a file the store reads, as in production), keeps
nothing on disk, and listens on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.dev.ports import free_port
from app.dev.procs import ManagedProcess, TcpReady
from app.settings.store import RedisStoreSettings


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        pytest.fail("redis-server is not installed: run `make redis` (Debian package redis-server)")
    return found


@dataclass
class RedisServer:
    """One running redis-server and the settings a store needs to reach it."""

    process: ManagedProcess
    port: int
    password_file: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def settings(self, **overrides: object) -> RedisStoreSettings:
        values: dict[str, object] = {"url": self.url, "password_file": self.password_file}
        values.update(overrides)
        return RedisStoreSettings.model_validate(values)

    def kill(self) -> None:
        """SIGKILL: the server is gone at once, as in a crash."""
        pid = self.process.pid
        assert pid is not None
        os.killpg(pid, signal.SIGKILL)  # its own session: the whole process group
        self.process.stop()

    def restart(self) -> None:
        """A fresh, empty server on the same port and password (after ``kill``)."""
        self.process = start_redis_process(
            self.process.log_path.parent, self.port, self.password_file
        )


def start_redis_process(workdir: Path, port: int, password_file: Path) -> ManagedProcess:
    conf = workdir / f"redis-{port}.conf"
    password = password_file.read_text(encoding="utf-8").strip()
    # The password goes in a file of the test's own, not on the command line (ps would show it).
    conf.write_text(
        "\n".join(
            [
                "bind 127.0.0.1",
                f"port {port}",
                "protected-mode yes",
                f"requirepass {password}",
                'save ""',
                "appendonly no",
                f"dir {workdir}",
                "loglevel warning",
                "",
            ]
        ),
        encoding="utf-8",
    )
    conf.chmod(0o600)
    process = ManagedProcess(
        f"redis-{port}",
        [redis_server_binary(), str(conf)],
        log_path=workdir / f"redis-{port}.log",
        ready=TcpReady("127.0.0.1", port),
        ready_timeout=10.0,
    )
    process.start()
    return process


def start_redis(workdir: Path) -> RedisServer:
    workdir.mkdir(parents=True, exist_ok=True)
    password_file = workdir / "redis-password"
    password_file.write_text(secrets.token_urlsafe(24) + "\n", encoding="utf-8")
    password_file.chmod(0o600)
    port = free_port()
    return RedisServer(start_redis_process(workdir, port, password_file), port, password_file)
