"""Free TCP ports for the demo stack's and the tests' listeners, unique across processes.

``bind(("127.0.0.1", 0))`` answers a port that is free *now*; the child that is to listen on it
binds it a second or so later. Two processes that ask in that window (the two pytest workers,
or a test and a stack it starts) can be handed the same port, and then one child fails to bind
while the other child's answers pass its readiness check: a ztauthz replica that "was ready"
and is gone a second later (CI saw exactly that). Two rules close it:

- ports come from below the kernel's ephemeral range (``ip_local_port_range``), so no outgoing
  connection's source port and no other ``bind(0)`` caller on the machine takes them;
- a port handed out is reserved for ``RESERVED_FOR`` seconds by an exclusive ``flock`` on a
  file named after it in a directory shared by every process of this user, held by the process
  that asked; others skip it. The lock goes when the reservation ends or the process exits,
  by which time the child bound the port (or failed to start), and a bound port fails the
  ``bind`` test that every candidate passes first.
"""

from __future__ import annotations

import fcntl
import os
import random
import socket
import tempfile
import threading
import time
from pathlib import Path

RESERVED_FOR = 120.0  # seconds a child has to bind the port it was given
_FLOOR = 20000  # below: well-known services' habits (8080, 9090, 15000...) live there
_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_DEFAULT_EPHEMERAL_LOW = 32768  # Linux's default, and below macOS's 49152
_ATTEMPTS = 200

_clock = time.monotonic  # a module attribute, so that tests can move time on
_lock = threading.Lock()
_held: list[tuple[float, int]] = []  # (reserved until, lock file descriptor)


def _ephemeral_low() -> int:
    try:
        return int(_RANGE_FILE.read_text(encoding="ascii").split()[0])
    except (OSError, ValueError, IndexError):
        return _DEFAULT_EPHEMERAL_LOW


def _reservations() -> Path:
    path = Path(tempfile.gettempdir()) / f"ztauthz-ports-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def _release_expired(now: float) -> None:
    while _held and _held[0][0] <= now:
        os.close(_held.pop(0)[1])


def _reserve(directory: Path, port: int, until: float) -> bool:
    fd = os.open(directory / str(port), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    _held.append((until, fd))
    return True


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free and that no other process is handed for a while.

    Falls back to the kernel's choice (``bind(0)``) only if the range below the ephemeral
    ports is too small to search (a machine configured with ephemeral ports from 1024 up).
    """
    low = _ephemeral_low()
    if low - _FLOOR < 1000:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            chosen: int = sock.getsockname()[1]
            return chosen
    directory = _reservations()
    with _lock:
        now = _clock()
        _release_expired(now)
        for _ in range(_ATTEMPTS):
            port = random.randrange(_FLOOR, low)  # noqa: S311 - spreading, not secrecy
            if not _reserve(directory, port, now + RESERVED_FOR):
                continue
            if _bindable(host, port):
                return port
            os.close(_held.pop()[1])  # in use: give the reservation back
    raise OSError(f"no free TCP port on {host} in {_FLOOR}-{low - 1} after {_ATTEMPTS} tries")
