"""Hypothesis profiles for every property test (the fuzz suite in tests/fuzz/ and the property
tests beside the unit tests; see docs/security-hardening.md).

- ``ci`` (the default, what ``make test`` runs): derandomized, so every run tries the same
  examples and a failure is reproducible anywhere; hypothesis's usual 100 examples a property
  (the fuzz suite takes about half a minute on two cores); no example database written.
- ``long`` (``make fuzz``, or ``--hypothesis-profile=long``): random, 4,000 examples per
  property; failures are remembered in ``.hypothesis/`` and tried first next time.

The profile given with ``--hypothesis-profile`` wins; without it, ``ci``. Registered here, at
the root, so that it applies whichever tests are collected.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

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
