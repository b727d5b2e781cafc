"""Events: one log line with the event name, a span event where a span records, a counter."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app.telemetry.events import Event, Events
from app.telemetry.logging import JsonFormatter
from app.telemetry.metrics import Metrics
from app.telemetry.subject import subject_view


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("ztauthz.test.events")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield out
    finally:
        logger.removeHandler(handler)


def count(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def events(metrics: Metrics, key: bytes | None = None) -> Events:
    return Events(metrics, subject_view(key), logging.getLogger("ztauthz.test.events"))


def test_every_event_name_starts_at_zero() -> None:
    metrics = Metrics()
    events(metrics)
    for event in Event:
        assert count(metrics, "ztauthz_events_total", event=event.value) == 0


@pytest.mark.parametrize(
    ("event", "level", "reloads"),
    [
        (Event.CONFIG_LOADED, "info", None),
        (Event.POLICIES_RELOADED, "info", "success"),
        (Event.POLICIES_REJECTED, "warning", "failure"),
        (Event.KEYS_ROTATED, "info", None),
        (Event.KEY_REFRESH_FAILED, "warning", None),
        (Event.GRANT_ACTIVE, "info", None),
        (Event.GRANT_EXPIRED, "info", None),
    ],
)
def test_emit_logs_and_counts(
    stream: io.StringIO, event: Event, level: str, reloads: str | None
) -> None:
    metrics = Metrics()
    events(metrics).emit(event.value, policy_version="sha256:1", problems=("a.yaml:3: bad",))
    (line,) = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert (line["event"], line["level"]) == (event.value, level)
    assert line["policy_version"] == "sha256:1" and line["problems"] == ["a.yaml:3: bad"]
    assert count(metrics, "ztauthz_events_total", event=event.value) == 1
    for outcome in ("success", "failure"):
        expected = 1 if outcome == reloads else 0
        assert count(metrics, "ztauthz_policy_reloads_total", outcome=outcome) == expected


def test_unknown_event_names_are_refused() -> None:
    with pytest.raises(ValueError, match="not_an_event"):
        events(Metrics()).emit("not_an_event")


def test_fields_named_like_log_record_attributes_are_kept(stream: io.StringIO) -> None:
    events(Metrics()).emit(Event.GRANT_ACTIVE, name="incident-42", msg="m")
    (line,) = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert line["field_name"] == "incident-42" and line["field_msg"] == "m"


def test_subject_field_is_hashed_when_configured(stream: io.StringIO) -> None:
    events(Metrics(), key=b"x" * 32).emit(Event.GRANT_ACTIVE, grant="g", subject="alice")
    (line,) = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert line["subject"] == subject_view(b"x" * 32)("alice") != "alice"


def test_a_span_event_is_added_to_the_recording_span(stream: io.StringIO) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("t").start_as_current_span("check"):
        events(Metrics()).emit(Event.KEYS_ROTATED, issuer="https://i", added=("k2",))
    (span,) = exporter.get_finished_spans()
    (event,) = span.events
    assert event.name == "ztauthz.keys_rotated"
    assert dict(event.attributes or {}) == {"ztauthz.issuer": "https://i", "ztauthz.added": ("k2",)}
