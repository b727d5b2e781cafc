"""What every test shares: hypothesis profiles, and the state of child processes in failures.

Hypothesis profiles for every property test (the fuzz suite in tests/fuzz/ and the property
tests beside the unit tests; see docs/security-hardening.md).

- ``ci`` (the default, what ``make test`` runs): derandomized, so every run tries the same
  examples and a failure is reproducible anywhere; hypothesis's usual 100 examples a property
  (the fuzz suite takes about half a minute on two cores); no example database written.
- ``long`` (``make fuzz``, or ``--hypothesis-profile=long``): random, 4,000 examples per
  property; failures are remembered in ``.hypothesis/`` and tried first next time.

The profile given with ``--hypothesis-profile`` wins; without it, ``ci``. Registered here, at
the root, so that it applies whichever tests are collected.

A failing test's report carries the state and the log tail of every child process the test's
worker had running (``ManagedProcess.spawned``): a Connection refused names no culprit, the
replica's own log does (a port it could not bind, a crash).
"""

from __future__ import annotations

from collections.abc import Generator

import pytest
from hypothesis import HealthCheck, settings

from app.dev.procs import ManagedProcess

_TAIL_LINES = 12

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=100,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "long",
    max_examples=4000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def pytest_configure(config: pytest.Config) -> None:
    settings.load_profile(config.getoption("hypothesis_profile", None) or "ci")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and ManagedProcess.spawned:
        parts = []
        for process in sorted(ManagedProcess.spawned, key=lambda p: p.name):
            code = process.returncode
            state = "running" if code is None else f"exited with status {code}"
            parts.append(
                f"--- {process.name} (pid {process.pid}, {state}): {process.log_path}\n"
                + process.log_tail(_TAIL_LINES)
            )
        report.sections.append(("child processes", "\n".join(parts)))
    return report
