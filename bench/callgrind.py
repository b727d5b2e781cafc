"""Instructions per check, counted by callgrind: ``python -m bench.callgrind [bench.profile options]``.

Wall time on a shared two-core machine drifts by 2-3x from one hour to the next; the number of
instructions a check executes does not. This runs ``bench.profile --no-profile`` under
``valgrind --tool=callgrind --instr-atstart=no`` and switches the instrumentation on only around
the measured requests (after start-up, token minting and the warm-up), through callgrind's
client requests, which only C can issue: a helper of three lines is compiled at first use with
``cc`` against ``<valgrind/callgrind.h>`` (Debian: ``apt-get install valgrind gcc``). Every
thread's instructions inside that window count (the decision-log writer, the span exporter).

    python -m bench.callgrind --requests 1000            # warm check through uvicorn's protocol
    python -m bench.callgrind --requests 1000 --tracing  # every check traced
    python -m bench.callgrind --requests 500 --cold      # a new RS256 token per check
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Set by main() for the child it runs under valgrind: the compiled helper's path.
HELPER_ENV = "ZTAUTHZ_BENCH_CALLGRIND_HELPER"
_HELPER_C = """#include <valgrind/callgrind.h>
void measure_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void measure_stop(void) { CALLGRIND_STOP_INSTRUMENTATION; CALLGRIND_DUMP_STATS_AT("measured"); }
"""


@contextlib.contextmanager
def measured() -> Iterator[None]:
    """The instructions executed inside this block are the measurement when running under
    ``python -m bench.callgrind``; otherwise it does nothing."""
    helper = os.environ.get(HELPER_ENV)
    if not helper:
        yield
        return
    lib = ctypes.CDLL(helper)
    lib.measure_start()
    try:
        yield
    finally:
        lib.measure_stop()


def _build_helper(work: Path) -> Path:
    source, library = work / "measure.c", work / "measure.so"
    source.write_text(_HELPER_C)
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", library, source], check=True)
    return library


def _measured_total(dump: Path) -> int:
    """The ``totals:`` line of the dump made at the client request (instructions, Ir)."""
    for line in dump.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise SystemExit(f"bench.callgrind: no totals line in {dump}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Other options go to bench.profile (--cold, --alg, --rules, --asgi, --tracing).",
    )
    parser.add_argument("--requests", type=int, default=1000)
    args, profile_args = parser.parse_known_args()
    missing = [tool for tool in ("valgrind", "cc") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(
            f"bench.callgrind needs {' and '.join(missing)} (apt-get install valgrind gcc)"
        )
    with tempfile.TemporaryDirectory(prefix="ztauthz-callgrind-") as tmp:
        work = Path(tmp)
        helper = _build_helper(work)
        out = work / "callgrind.out"
        command = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "bench.profile",
            "--no-profile",
            "--requests",
            str(args.requests),
            *profile_args,
        ]
        child = subprocess.run(
            command, env={**os.environ, HELPER_ENV: str(helper)}, capture_output=True, text=True
        )
        timing = [line for line in child.stdout.splitlines() if "per request" in line]
        if child.returncode != 0 or not timing:
            sys.stderr.write(child.stdout + child.stderr)
            raise SystemExit(f"bench.callgrind: bench.profile exited {child.returncode}")
        total = _measured_total(Path(f"{out}.1"))
    print(
        f"{total / args.requests:,.0f} instructions per request "
        f"({total:,} for {args.requests:,}; under valgrind: {timing[-1]})"
    )


if __name__ == "__main__":
    main()
