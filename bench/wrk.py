"""Drive one load run with wrk (Debian package ``wrk``) and read its result.

Every run uses the same Lua script (bench/lua/bench.lua), so every scenario pays the same
client-side cost per request; the script prints one ``BENCH_JSON`` line that is all we parse.
Runs are bounded in time (``-d``) and go to loopback URLs only.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

LUA = Path(__file__).resolve().parent / "lua" / "bench.lua"
_MARK = "BENCH_JSON "
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed no result."""


@dataclass(frozen=True, slots=True)
class RunResult:
    connections: int
    seconds: float
    requests: int
    errors: int  # connect, read, write, timeout and non-2xx/3xx statuses together
    non_2xx: int
    wrapped: int  # requests that reused a token of the pool (0 for a truly cold run)
    mean_us: float
    p50_us: int
    p90_us: int
    p99_us: int
    p999_us: int
    max_us: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "seconds": round(self.seconds, 3),
            "requests": self.requests,
            "rps": round(self.rps, 1),
            "errors": self.errors,
            "non_2xx": self.non_2xx,
            "wrapped": self.wrapped,
            "latency_us": {
                "mean": self.mean_us,
                "p50": self.p50_us,
                "p90": self.p90_us,
                "p99": self.p99_us,
                "p999": self.p999_us,
                "max": self.max_us,
            },
        }


def find_wrk() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise WrkError("wrk is not installed: `apt-get install -y wrk` (make bench does this)")
    return found


def parse(output: str, connections: int) -> RunResult:
    """The result of one run from wrk's output (the script's BENCH_JSON line)."""
    lines = [line for line in output.splitlines() if line.startswith(_MARK)]
    if not lines:
        raise WrkError(f"wrk printed no result:\n{output[-2000:]}")
    data = json.loads(lines[-1][len(_MARK) :])
    errors = data["errors"]
    latency = data["latency_us"]
    return RunResult(
        connections=connections,
        seconds=data["duration_us"] / 1e6,
        requests=data["requests"],
        errors=sum(int(v) for v in errors.values()),
        non_2xx=int(errors["status"]),
        wrapped=int(data["wrapped"]),
        mean_us=float(latency["mean"]),
        p50_us=int(latency["p50"]),
        p90_us=int(latency["p90"]),
        p99_us=int(latency["p99"]),
        p999_us=int(latency["p999"]),
        max_us=int(latency["max"]),
    )


def run(
    url: str,
    *,
    connections: int,
    seconds: int,
    tokens: Path | None = None,
    first_token: int = 0,
    threads: int = 1,
    timeout: float = 2.0,
) -> RunResult:
    """One bounded wrk run of ``seconds`` (whole: wrk takes no fractions) against ``url``
    (which must be on loopback)."""
    if seconds < 1:
        raise WrkError("a run lasts at least one second")
    parts = urlsplit(url)
    if parts.hostname not in _LOOPBACK:
        raise WrkError(f"refusing to load a non-loopback address: {parts.hostname}")
    path = parts.path or "/"
    argv = [
        find_wrk(),
        f"-t{threads}",
        f"-c{max(connections, threads)}",
        f"-d{seconds}s",
        f"--timeout={timeout:g}s",
        "-s",
        str(LUA),
        f"{parts.scheme}://{parts.netloc}",
        "--",
        path,
        str(tokens) if tokens is not None else "-",
        str(first_token),
        str(threads),
    ]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + 30, check=False
        )
    except subprocess.TimeoutExpired:
        raise WrkError(f"wrk did not finish within {seconds + 30:g}s") from None
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-2000:]
        raise WrkError(f"wrk failed ({done.returncode}):\n{output}")
    return parse(done.stdout, connections)
