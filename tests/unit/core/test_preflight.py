"""app/preflight.py checks OTEL_PROPAGATORS before OpenTelemetry is imported, so it cannot use
the tracing module's table of propagators: the two lists of names must stay one list."""

from __future__ import annotations

from app import preflight
from app.telemetry import tracing


def test_preflight_accepts_exactly_the_propagators_tracing_builds() -> None:
    assert set(preflight.PROPAGATORS) == set(tracing._PROPAGATORS)
