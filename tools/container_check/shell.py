"""Commands, HTTP requests and timed steps for the container check, and its summary."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class CheckFailed(Exception):
    """A step did not behave as documented; the message says what was seen."""


def say(message: str) -> None:
    print(message, flush=True)


def run(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
    check: bool = True,
    quiet: bool = False,
    stream: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (printed first), capturing its output, or letting it through as it comes
    (``stream``: long builds); CheckFailed when it fails and ``check`` is set."""
    if not quiet:
        say(f"  $ {shlex.join(argv)}")
    try:
        result = subprocess.run(
            list(argv),
            cwd=cwd,
            env=None if env is None else {**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=None if stream else subprocess.PIPE,
            stderr=None if stream else subprocess.PIPE,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"{shlex.join(argv)}: no answer after {timeout:g} s") from None
    except FileNotFoundError:
        raise CheckFailed(f"{argv[0]}: not installed") from None
    if check and result.returncode != 0:
        output = (result.stdout or "") + (result.stderr or "")
        tail = "\n".join(output.strip().splitlines()[-25:]) if output else "(output above)"
        raise CheckFailed(f"{shlex.join(argv)} exited {result.returncode}:\n{tail}")
    return result


def sudo() -> list[str]:
    """What to put before a command that needs root."""
    return [] if os.geteuid() == 0 else ["sudo"]


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: str

    def json(self) -> dict[str, object]:
        try:
            data = json.loads(self.body)
        except ValueError:
            raise CheckFailed(f"not JSON ({self.status}): {self.body[:200]!r}") from None
        if not isinstance(data, dict):
            raise CheckFailed(f"not a JSON object: {self.body[:200]!r}")
        return data


# Never through a proxy: every address the check asks is the host's loopback.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(method: str, url: str, headers: Mapping[str, str] | None = None) -> Answer:
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"the check asks the host's loopback only, not {url}")
    request = urllib.request.Request(url, method=method, headers=dict(headers or {}))  # noqa: S310
    try:
        with _OPENER.open(request, timeout=10) as response:
            return Answer(
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                response.read().decode("utf-8", "replace"),
            )
    except urllib.error.HTTPError as error:
        return Answer(
            error.code,
            {k.lower(): v for k, v in error.headers.items()},
            error.read().decode("utf-8", "replace"),
        )
    except (urllib.error.URLError, OSError) as error:
        raise CheckFailed(f"{method} {url}: {error}") from None


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, every: float = 0.5) -> T:
    """``probe()`` until it returns something other than None; CheckFailed after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = probe()
        except CheckFailed:
            found = None
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            raise CheckFailed(f"{what}: not seen within {timeout:g} s")
        time.sleep(every)


@dataclass(slots=True)
class Outcome:
    name: str
    seconds: float
    ok: bool | None  # None: not run
    detail: str


@dataclass(slots=True)
class Steps:
    """Steps run in order; the first failure stops the rest (they depend on it)."""

    planned: list[str] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    failed: bool = False

    @contextmanager
    def step(self, name: str) -> Iterator[list[str]]:
        """Time one step; what the body appends to the yielded list is its summary detail."""
        if self.failed:
            self.outcomes.append(Outcome(name, 0.0, None, "not run"))
            raise _Skip
        say(f"\n== {name}")
        notes: list[str] = []
        started = time.monotonic()
        try:
            yield notes
        except CheckFailed as failure:
            self.failed = True
            self.outcomes.append(Outcome(name, time.monotonic() - started, False, str(failure)))
            say(f"  FAILED: {failure}")
            raise _Skip from None
        took = time.monotonic() - started
        self.outcomes.append(Outcome(name, took, True, "; ".join(notes)))
        say(f"  ok ({took:.1f} s){': ' + '; '.join(notes) if notes else ''}")

    def summary(self, total: float) -> str:
        done = {o.name for o in self.outcomes}
        outcomes = self.outcomes + [
            Outcome(name, 0.0, None, "not run") for name in self.planned if name not in done
        ]
        width = max((len(o.name) for o in outcomes), default=10)
        lines = ["", "container-check summary", "-" * (width + 24)]
        for o in outcomes:
            mark = {True: "PASS", False: "FAIL", None: "SKIP"}[o.ok]
            lines.append(f"{mark}  {o.name.ljust(width)}  {o.seconds:6.1f} s  {o.detail}")
        verdict = "FAILED" if self.failed else "passed"
        lines.append("-" * (width + 24))
        lines.append(f"container-check {verdict} in {total:.0f} s")
        return "\n".join(lines)


class _Skip(Exception):
    """Raised out of a step that failed or did not run; ``guarded`` swallows it."""


def guarded() -> suppress:
    """Around a sequence of steps: a failed step ends the sequence, not the program."""
    return suppress(_Skip)


def fail(message: str) -> None:
    say(f"container-check: {message}")
    sys.exit(2)
