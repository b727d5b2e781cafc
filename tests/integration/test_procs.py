"""The process supervisor behind the demo stack and these tests, with real child processes."""

from __future__ import annotations

import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from app.dev.ports import free_port
from app.dev.procs import (
    HttpReady,
    ManagedProcess,
    ProcessError,
    ProcessGroup,
    TcpReady,
)

pytestmark = pytest.mark.integration

# A child that listens on a port, and on SIGTERM appends its name to a file and exits.
LISTENER = """
import signal, socket, sys, time
name, port, record = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def stop(*_):
    with open(record, "a") as f:
        f.write(name + "\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
server = socket.create_server(("127.0.0.1", port))
print("listening", flush=True)
while True:
    time.sleep(0.05)
"""


def _listener(tmp_path: Path, name: str, record: Path) -> ManagedProcess:
    port = free_port()
    return ManagedProcess(
        name,
        [sys.executable, "-c", LISTENER, name, str(port), str(record)],
        log_path=tmp_path / f"{name}.log",
        ready=TcpReady("127.0.0.1", port),
        ready_timeout=10,
    )


def test_group_stops_in_reverse_order_even_on_error(tmp_path: Path) -> None:
    record = tmp_path / "stopped.txt"
    processes = [_listener(tmp_path, name, record) for name in ("first", "second", "third")]
    with pytest.raises(RuntimeError, match="boom"), ProcessGroup() as group:
        group.start(processes[0])
        group.start(processes[1], processes[2])
        assert all(p.running for p in processes)
        raise RuntimeError("boom")
    assert record.read_text().split() == ["third", "second", "first"]
    assert not any(p.running for p in processes)


def test_early_exit_is_reported_with_the_log_tail(tmp_path: Path) -> None:
    process = ManagedProcess(
        "crasher",
        [sys.executable, "-c", "print('config is broken: line 3'); raise SystemExit(3)"],
        log_path=tmp_path / "crasher.log",
        ready=TcpReady("127.0.0.1", free_port()),
    )
    with pytest.raises(ProcessError) as caught:
        process.start()
    message = str(caught.value)
    assert "crasher: exited with status 3 before it was ready" in message
    assert "config is broken: line 3" in message


# Aborts (SIGABRT) on its first start, as Envoy rarely does inside its gRPC poller; on the
# next start it listens. ``always`` aborts every time.
ABORTS_ONCE = """
import os, signal, socket, sys, time
marker, port, always = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "always"
if always or not os.path.exists(marker):
    open(marker, "w").close()
    print("aborting", flush=True)
    os.kill(os.getpid(), signal.SIGABRT)
server = socket.create_server(("127.0.0.1", port))
while True:
    time.sleep(0.05)
"""


def _aborter(tmp_path: Path, how: str) -> ManagedProcess:
    port = free_port()
    return ManagedProcess(
        "aborter",
        [sys.executable, "-c", ABORTS_ONCE, str(tmp_path / "marker"), str(port), how],
        log_path=tmp_path / "aborter.log",
        ready=TcpReady("127.0.0.1", port),
        ready_timeout=10,
    )


def test_a_crash_before_ready_is_started_once_more_and_noted(tmp_path: Path) -> None:
    process = _aborter(tmp_path, "once")
    with ProcessGroup() as group:
        group.start(process)
        assert process.running
    log = (tmp_path / "aborter.log").read_text()
    assert "aborting" in log and "SIGABRT before ready; started again" in log


def test_a_crash_that_repeats_fails_the_start(tmp_path: Path) -> None:
    process = _aborter(tmp_path, "always")
    with pytest.raises(ProcessError, match=r"aborter: exited with status -6 before it was ready"):
        process.start()
    assert (tmp_path / "aborter.log").read_text().count("aborting") == 2


def test_readiness_timeout_stops_the_process(tmp_path: Path) -> None:
    port = free_port()
    process = ManagedProcess(
        "sleeper",
        [sys.executable, "-c", "import time; time.sleep(60)"],
        log_path=tmp_path / "sleeper.log",
        ready=HttpReady(f"http://127.0.0.1:{port}/ready"),
        ready_timeout=0.5,
    )
    with pytest.raises(ProcessError, match=r"sleeper: not ready after 0.5s"):
        process.start()
    assert not process.running


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    process = ManagedProcess(
        "stubborn",
        [sys.executable, "-c", stubborn],
        log_path=tmp_path / "stubborn.log",
        stop_timeout=0.5,
    )
    process.start()
    deadline = time.monotonic() + 10
    while "ready" not in process.log_tail() and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    process.stop()
    assert process.returncode == -signal.SIGKILL
    assert time.monotonic() - started < 5


def test_refuses_a_port_someone_else_already_serves(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as other:
        port = other.getsockname()[1]
        process = ManagedProcess(
            "late",
            [sys.executable, "-c", "pass"],
            log_path=tmp_path / "late.log",
            ready=TcpReady("127.0.0.1", port),
        )
        with pytest.raises(ProcessError, match="something already answers"):
            process.start()
    assert process.pid is None
