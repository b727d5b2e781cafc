"""Ports handed out by app.dev.ports: below the ephemeral range, never twice at once."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.dev import ports


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The candidates free_port draws next, in order (random ones once they run out)."""
    draws: list[int] = []
    randrange = random.randrange
    monkeypatch.setattr(
        random, "randrange", lambda low, high: draws.pop(0) if draws else randrange(low, high)
    )
    yield draws


def _some_candidate() -> int:
    return ports.free_port()  # a port this process now holds; the test reuses its number


def test_ports_come_from_below_the_ephemeral_range() -> None:
    low = ports._ephemeral_low()
    for _ in range(20):
        assert 20000 <= ports.free_port() < low


def test_a_port_someone_listens_on_is_skipped(scripted: list[int]) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        busy = listener.getsockname()[1]
        listener.listen()
        spare = _some_candidate()
        ports._release_expired(float("inf"))  # give back spare's reservation, keep its number
        scripted.extend([busy, spare])
        assert ports.free_port() == spare


def test_a_port_reserved_by_another_process_is_skipped(scripted: list[int]) -> None:
    # Another process (as the other pytest worker would) takes a port and holds it, unbound.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import sys
                from app.dev.ports import free_port
                print(free_port(), flush=True)
                sys.stdin.read()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[3],
    )
    try:
        assert holder.stdout is not None
        held = int(holder.stdout.readline())
        spare = _some_candidate()
        ports._release_expired(float("inf"))
        scripted.extend([held, spare])
        assert ports.free_port() == spare  # free to bind, but promised to the other process
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
        assert holder.stdout is not None
        holder.stdout.close()
    scripted.append(held)  # the holder exited: its reservation went with it
    assert ports.free_port() == held


def test_a_reservation_ends_after_its_time(
    scripted: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = ports.free_port()
    scripted.append(port)
    monkeypatch.setattr(ports, "_ATTEMPTS", 1)
    with pytest.raises(OSError, match="no free TCP port"):
        ports.free_port()  # still reserved by this very process
    later = time.monotonic() + ports.RESERVED_FOR + 1
    monkeypatch.setattr(ports, "_clock", lambda: later)
    scripted.append(port)
    assert ports.free_port() == port


def test_no_room_below_the_ephemeral_range_falls_back_to_the_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    range_file = tmp_path / "ip_local_port_range"
    range_file.write_text("1024\t65535\n", encoding="ascii")
    monkeypatch.setattr(ports, "_RANGE_FILE", range_file)
    port = ports.free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # free indeed


def test_an_unreadable_range_file_means_the_usual_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ports, "_RANGE_FILE", tmp_path / "missing")
    assert ports._ephemeral_low() == 32768
    assert 20000 <= ports.free_port() < 32768
