"""Spans on their way out (app/telemetry/span_export.py): every span is exported, failed or
unsent, counted once; shutdown gives up when its time is over, whatever the exporter does."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from prometheus_client import generate_latest

from app.telemetry.metrics import Metrics
from app.telemetry.span_export import (
    EXPORT_FAILED,
    UNSENT,
    BoundedSpanProcessor,
    SpanAccounts,
)
from app.telemetry.tracing import Tracing


class Exporter(SpanExporter):
    """An exporter whose answer the test picks; ``stuck`` holds every export until released
    (a connect to a black-holed collector that shutdown cannot abort)."""

    def __init__(self, result: SpanExportResult = SpanExportResult.SUCCESS) -> None:
        self.result = result
        self.raises = False
        self.stuck = threading.Event()
        self.release = threading.Event()
        self.entered = threading.Event()
        self.exported: list[str] = []
        self.shutdowns = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        if self.stuck.is_set():
            self.release.wait(30)
            return SpanExportResult.FAILURE
        if self.raises:
            raise ConnectionError("collector unreachable")
        if self.result is SpanExportResult.SUCCESS:
            self.exported.extend(s.name for s in spans)
        return self.result

    def shutdown(self) -> None:
        self.shutdowns += 1


class Sink:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def __call__(self, reason: str, count: int) -> None:
        self.calls.append((reason, count))

    def total(self, reason: str) -> int:
        return sum(n for r, n in self.calls if r == reason)


@pytest.fixture
def sink() -> Sink:
    return Sink()


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    exporter = Exporter()
    yield exporter
    exporter.release.set()  # never leave a worker thread waiting


def provider_with(processor: BoundedSpanProcessor, sampled: bool = True) -> TracerProvider:
    provider = (
        TracerProvider(shutdown_on_exit=False)
        if sampled
        else TracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False)
    )
    provider.add_span_processor(processor)
    return provider


def end_spans(provider: TracerProvider, count: int) -> None:
    tracer = provider.get_tracer("test")
    for i in range(count):
        tracer.start_span(f"span-{i}").end()


def test_a_reachable_collector_gets_every_span(exporter: Exporter, sink: Sink) -> None:
    processor = BoundedSpanProcessor(exporter, SpanAccounts(sink))
    end_spans(provider_with(processor), 3)
    assert processor.close(timeout=30) == 0
    assert sorted(exporter.exported) == ["span-0", "span-1", "span-2"]
    assert sink.calls == []
    assert exporter.shutdowns == 1


@pytest.mark.parametrize("how", ["refused", "raises"])
def test_batches_the_exporter_gives_up_on_are_counted_as_failed(
    exporter: Exporter, sink: Sink, how: str
) -> None:
    exporter.result = SpanExportResult.FAILURE
    exporter.raises = how == "raises"
    processor = BoundedSpanProcessor(exporter, SpanAccounts(sink))
    end_spans(provider_with(processor), 4)
    assert processor.close(timeout=30) == 0  # each span settled: none left unsent
    assert sink.total(EXPORT_FAILED) == 4
    assert sink.total(UNSENT) == 0


def test_close_gives_up_when_the_collector_holds_the_export(exporter: Exporter, sink: Sink) -> None:
    exporter.stuck.set()
    processor = BoundedSpanProcessor(exporter, SpanAccounts(sink))
    end_spans(provider_with(processor), 5)
    unsent = processor.close(timeout=0.2)
    # close returned although the export has not: it never waits on the collector.
    assert exporter.entered.wait(5) and not exporter.release.is_set()
    assert unsent == 5
    assert sink.calls == [(UNSENT, 5)]
    assert exporter.shutdowns == 1  # retries aborted
    # When the stuck export finally fails, its spans are not counted a second time.
    exporter.release.set()
    processor.accounts.settled(5, ok=False)
    assert sink.calls == [(UNSENT, 5)]
    assert processor.close(timeout=0.2) == 0  # idempotent


def test_spans_ended_after_close_or_unsampled_are_not_counted(
    exporter: Exporter, sink: Sink
) -> None:
    unsampled = BoundedSpanProcessor(exporter, SpanAccounts(sink))
    end_spans(provider_with(unsampled, sampled=False), 3)
    assert unsampled.accounts.pending == 0
    closed = BoundedSpanProcessor(exporter, SpanAccounts(sink))
    provider = provider_with(closed)
    closed.close(timeout=5)
    end_spans(provider, 2)
    assert closed.accounts.pending == 0 and sink.calls == []


def test_the_providers_own_shutdown_goes_through_close(exporter: Exporter, sink: Sink) -> None:
    """The SDK's own shutdown path (the provider's exit hook) goes through ``close``."""
    processor = BoundedSpanProcessor(exporter, SpanAccounts(sink))
    provider = provider_with(processor)
    end_spans(provider, 1)
    provider.shutdown()
    assert exporter.exported == ["span-0"]
    provider.shutdown()  # and again: nothing left to do


def test_tracing_shutdown_counts_and_logs_what_was_dropped(
    exporter: Exporter, caplog: pytest.LogCaptureFixture
) -> None:
    exporter.stuck.set()
    processor = BoundedSpanProcessor(exporter)
    provider = provider_with(processor)
    tracing = Tracing(provider, processor=processor)
    metrics = Metrics()
    tracing.report_drops_to(metrics.spans_dropped)
    end_spans(provider, 2)
    with caplog.at_level(logging.WARNING, logger="ztauthz.tracing"):
        tracing.shutdown(timeout=0.1)
        tracing.shutdown(timeout=0.1)  # idempotent
    (record,) = caplog.records
    assert "2 spans were not sent" in record.getMessage()
    assert getattr(record, "spans_dropped", None) == 2
    exposition = generate_latest(metrics.registry).decode()
    assert 'ztauthz_spans_dropped_total{reason="unsent"} 2.0' in exposition
    assert 'ztauthz_spans_dropped_total{reason="export_failed"} 0.0' in exposition
