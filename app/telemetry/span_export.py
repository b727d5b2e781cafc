"""Spans on their way to the collector: every span accounted for, and a shutdown bounded in time.

The SDK's ``BatchSpanProcessor`` queues finished spans and exports them from a background thread
through the OTLP exporter, which retries a collector that refuses or does not answer for up to
``OTEL_EXPORTER_OTLP_TIMEOUT`` (10 s) per batch; its ``shutdown()`` waits for the whole queue
(up to 30 s). A sidecar must exit within ``server.shutdown_grace`` whatever the collector does
(Kubernetes and ``docker compose down`` kill it after their own grace period), so
:class:`BoundedSpanProcessor` wraps it:

- ``close(timeout)`` lets the batch processor flush for at most ``timeout`` seconds, then shuts
  the exporter down (which aborts its retries) and gives up on what is left;
- every sampled span is counted in, and each one leaves as exported, failed (the exporter gave
  up on its batch: ``export_failed``) or, at close, unsent (still queued when the time ran out,
  or pushed out of a full queue earlier: ``unsent``). Failed and unsent spans are reported to a
  sink (the ``ztauthz_spans_dropped_total`` counter), each span at most once.

Only public SDK interfaces are used (``SpanProcessor``, ``SpanExporter``, the batch processor's
``on_end``/``shutdown``); the flush runs in a daemon thread, so an export stuck in a connect to a
black-holed collector never holds the process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Final

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from app.settings import Server

EXPORT_FAILED: Final = "export_failed"
UNSENT: Final = "unsent"
DROP_REASONS: Final = (EXPORT_FAILED, UNSENT)
# The bound when nothing names one (the provider's exit hook, a test): the default grace.
DEFAULT_CLOSE_TIMEOUT: Final = Server().shutdown_grace.total_seconds()

DropSink = Callable[[str, int], None]


def _ignore(_reason: str, _count: int) -> None:
    pass


class SpanAccounts:
    """Counts of spans in and out (thread-safe: checks end spans on the event loop, the batch
    processor exports from its own thread)."""

    __slots__ = ("_closed", "_exported", "_failed", "_lock", "_received", "sink")

    def __init__(self, sink: DropSink = _ignore) -> None:
        self.sink = sink
        self._lock = threading.Lock()
        self._received = self._exported = self._failed = 0
        self._closed = False

    def received(self) -> None:
        with self._lock:
            self._received += 1

    def settled(self, count: int, ok: bool) -> None:
        """``count`` spans left through the exporter, sent or not."""
        with self._lock:
            if self._closed:  # already counted as unsent
                return
            if ok:
                self._exported += count
                return
            self._failed += count
        self.sink(EXPORT_FAILED, count)

    def close(self) -> int:
        """Stop counting; the spans received but never settled are unsent (returned, reported)."""
        with self._lock:
            if self._closed:
                return 0
            self._closed = True
            unsent = self._received - self._exported - self._failed
        if unsent > 0:
            self.sink(UNSENT, unsent)
        return max(unsent, 0)

    @property
    def pending(self) -> int:
        with self._lock:
            return self._received - self._exported - self._failed


class CountingExporter(SpanExporter):
    """The real exporter, with the outcome of every batch counted; shut down once."""

    def __init__(self, inner: SpanExporter, accounts: SpanAccounts) -> None:
        self._inner = inner
        self._accounts = accounts
        self._shutdown_once = threading.Lock()
        self._shut = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._inner.export(spans)
        except Exception:
            self._accounts.settled(len(spans), ok=False)
            raise
        self._accounts.settled(len(spans), ok=result is SpanExportResult.SUCCESS)
        return result

    def shutdown(self) -> None:
        with self._shutdown_once:
            if self._shut:
                return
            self._shut = True
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


class BoundedSpanProcessor(SpanProcessor):
    """A ``BatchSpanProcessor`` (configured by ``OTEL_BSP_*``) whose spans are accounted for and
    whose shutdown takes at most the time it is given."""

    def __init__(self, exporter: SpanExporter, accounts: SpanAccounts | None = None) -> None:
        self.accounts = accounts if accounts is not None else SpanAccounts()
        self._exporter = CountingExporter(exporter, self.accounts)
        self._batch = BatchSpanProcessor(self._exporter)
        self._closed = False

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._batch.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if self._closed or not (span.context and span.context.trace_flags.sampled):
            return  # what the batch processor ignores too
        self.accounts.received()
        self._batch.on_end(span)

    def close(self, timeout: float) -> int:
        """Flush for at most ``timeout`` seconds, then stop; returns the spans not sent
        (idempotent: 0 the second time)."""
        if self._closed:
            return 0
        self._closed = True
        flush = threading.Thread(
            target=self._batch.shutdown, name="ztauthz-span-flush", daemon=True
        )
        flush.start()
        flush.join(max(timeout, 0.0))
        if flush.is_alive():
            # The collector did not take the queue in time: abort the exporter's retries (the
            # batch processor's remaining exports then fail at once) and give up on the rest.
            self._exporter.shutdown()
        return self.accounts.close()

    def shutdown(self) -> None:
        """The provider's shutdown (and its exit hook): a no-op once ``close`` ran."""
        self.close(DEFAULT_CLOSE_TIMEOUT)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._batch.force_flush(timeout_millis)
