"""The fuzz suite's hypothesis profiles (tests/fuzz/, see docs/security-hardening.md).

- ``ci`` (the default, what ``make test`` runs): derandomized, so every run tries the same
  examples and a failure is reproducible anywhere; few examples per property, the whole
  suite in about a minute on two cores; no example database written.
- ``long`` (``make fuzz``, or ``--hypothesis-profile=long``): random, many examples per
  property; failures are remembered in ``.hypothesis/`` and tried first next time.

The profile given with ``--hypothesis-profile`` wins; without it, ``ci``.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=300,
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
