"""Traces: the OpenTelemetry SDK, configured only by the standard ``OTEL_*`` environment.

Tracing is on when an OTLP endpoint is configured (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) or ``OTEL_TRACES_EXPORTER=otlp``; it is off, and
nothing is exported, otherwise, with ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``.
The SDK itself reads the rest: ``OTEL_EXPORTER_OTLP_[TRACES_]{ENDPOINT,HEADERS,TIMEOUT,
COMPRESSION,CERTIFICATE}``, ``OTEL_TRACES_SAMPLER[_ARG]``, ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_SERVICE_NAME`` and ``OTEL_BSP_*``. ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` picks
``http/protobuf`` (the default) or ``grpc``.

Incoming context is read with W3C ``traceparent``/``tracestate`` and ``baggage`` and with B3
(single ``b3`` header or ``x-b3-*``), unless ``OTEL_PROPAGATORS`` names others.

Shutdown is bounded: ``shutdown(timeout)`` sends what is queued for at most ``timeout`` seconds
(``ztauthz serve`` gives it what is left of ``server.shutdown_grace``), whatever the collector
does; spans that cannot be sent are dropped, counted in ``ztauthz_spans_dropped_total`` by
reason and logged (app/telemetry/span_export.py).

Spans: ``ztauthz.check`` per check, over HTTP and gRPC alike: the server span (kind SERVER), a
child of the caller's context (Envoy's ext_authz span), with children ``ztauthz.verify_token``,
``ztauthz.gather_evidence`` (when evidence is gathered) and ``ztauthz.evaluate_policy``. The
admin listener's FastAPI app has the instrumentation's server spans (probes and scrapes
excepted).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Final

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagate import set_global_textmap
from opentelemetry.propagators.b3 import B3MultiFormat, B3SingleFormat
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.trace import Span, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from app import __version__
from app.settings import ConfigError
from app.telemetry.span_export import (
    DEFAULT_CLOSE_TIMEOUT,
    BoundedSpanProcessor,
    DropSink,
)

log = logging.getLogger("ztauthz.tracing")

CHECK_SPAN: Final = "ztauthz.check"
VERIFY_SPAN: Final = "ztauthz.verify_token"
EVIDENCE_SPAN: Final = "ztauthz.gather_evidence"
SIGNALS_SPAN: Final = "ztauthz.check_signals"
EVALUATE_SPAN: Final = "ztauthz.evaluate_policy"
INTROSPECT_SPAN: Final = "ztauthz.confirm_token"  # a high_risk rule's introspection

_PROPAGATORS: Mapping[str, type[TextMapPropagator]] = {
    "tracecontext": TraceContextTextMapPropagator,
    "baggage": W3CBaggagePropagator,
    "b3": B3SingleFormat,  # both B3 classes read the single and the multi-header form
    "b3multi": B3MultiFormat,
}
# Headers whose presence means "the caller sent trace context".
TRACE_HEADERS: Final = ("traceparent", "b3", "x-b3-traceid")


def default_propagator() -> TextMapPropagator:
    # Later propagators win: W3C traceparent over B3 when a caller sends both.
    return CompositePropagator(
        [B3MultiFormat(), TraceContextTextMapPropagator(), W3CBaggagePropagator()]
    )


def propagator_from_env(environ: Mapping[str, str]) -> TextMapPropagator:
    names = [n.strip().lower() for n in environ.get("OTEL_PROPAGATORS", "").split(",")]
    names = [n for n in names if n]
    if not names:
        return default_propagator()
    if names == ["none"]:
        return CompositePropagator([])
    unknown = sorted(set(names) - _PROPAGATORS.keys())
    if unknown:
        raise ConfigError(
            [f"OTEL_PROPAGATORS: unsupported {unknown}; use {sorted(_PROPAGATORS)} or none"]
        )
    return CompositePropagator([_PROPAGATORS[n]() for n in names])


def tracing_enabled(environ: Mapping[str, str]) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = [e.strip().lower() for e in environ.get("OTEL_TRACES_EXPORTER", "").split(",")]
    exporters = [e for e in exporters if e]
    if exporters:
        if exporters == ["none"]:
            return False
        if set(exporters) != {"otlp"}:
            raise ConfigError(
                [f"OTEL_TRACES_EXPORTER: only otlp or none are supported, not {exporters}"]
            )
        return True
    return any(
        environ.get(name, "").strip()
        for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def span_exporter(environ: Mapping[str, str]) -> SpanExporter:
    """The OTLP exporter for the configured protocol; it reads its own settings from OTEL_*."""
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )

        return GrpcSpanExporter()
    raise ConfigError(
        [f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is not supported (http/protobuf or grpc)"]
    )


def service_resource() -> Resource:
    """OTEL_RESOURCE_ATTRIBUTES / OTEL_SERVICE_NAME, with ztauthz's name and version as defaults."""
    resource = Resource.create({SERVICE_VERSION: __version__})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "ztauthz"}))
    return resource


_NO_SPAN: AbstractContextManager[Span] = nullcontext(trace.INVALID_SPAN)


class Steps:
    """Child spans of the check for the pipeline's steps; free when nothing records."""

    __slots__ = ("_tracer",)

    def __init__(self, tracer: Tracer | None) -> None:
        self._tracer = tracer

    def span(self, name: str) -> AbstractContextManager[Span]:
        tracer = self._tracer
        if tracer is None or not trace.get_current_span().is_recording():
            return _NO_SPAN
        # Exceptions are not recorded on spans: their messages are not ours to export.
        return tracer.start_as_current_span(
            name, record_exception=False, set_status_on_exception=False
        )


NO_STEPS: Final = Steps(None)

# Admin paths polled by orchestrators and scrapers: never traced.
UNTRACED_ADMIN_PATHS: Final = ("/healthz", "/readyz", "/metrics")

# Attributes of an instrumented request that would carry the original query string.
_URL_ATTRIBUTES: Final = ("http.url", "url.full", "http.target")


def scrub_server_span(span: Span, scope: dict[str, Any]) -> None:
    """FastAPI server-span hook: a query string may carry credentials; keep it out of the
    span."""
    if not scope.get("query_string") or not span.is_recording():
        return
    attributes: Mapping[str, Any] = getattr(span, "attributes", None) or {}
    for key in _URL_ATTRIBUTES:
        value = attributes.get(key)
        if isinstance(value, str) and "?" in value:
            span.set_attribute(key, value.split("?", 1)[0])
    if "url.query" in attributes:
        span.set_attribute("url.query", "REDACTED")


class Tracing:
    """The tracer of one process (or test), or nothing at all when tracing is off."""

    def __init__(
        self,
        provider: TracerProvider | None = None,
        propagator: TextMapPropagator | None = None,
        processor: BoundedSpanProcessor | None = None,
    ) -> None:
        self._provider = provider
        self._processor = processor
        self.propagator = propagator if propagator is not None else default_propagator()
        self.tracer: Tracer | None = (
            None if provider is None else provider.get_tracer("ztauthz", __version__)
        )
        self.steps = Steps(self.tracer)

    @property
    def enabled(self) -> bool:
        return self.tracer is not None

    def caller_trace_id(self, headers: Mapping[str, str]) -> int | None:
        """The trace id the caller sent (by this propagator's formats), or None."""
        if headers.keys().isdisjoint(TRACE_HEADERS):  # the common case, decided in C
            return None
        caller = trace.get_current_span(self.propagator.extract(headers))
        return caller.get_span_context().trace_id or None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Tracing:
        """Tracing as the OTEL_* environment says; raises ConfigError for unsupported values."""
        env = os.environ if environ is None else environ
        propagator = propagator_from_env(env)
        if not tracing_enabled(env):
            return cls(None, propagator)
        provider = TracerProvider(resource=service_resource())  # sampler: OTEL_TRACES_SAMPLER
        processor = BoundedSpanProcessor(span_exporter(env))  # batches, OTEL_BSP_*
        provider.add_span_processor(processor)
        return cls(provider, propagator, processor)

    def report_drops_to(self, sink: DropSink) -> None:
        """Spans that cannot be sent are counted by ``sink(reason, count)``."""
        if self._processor is not None:
            self._processor.accounts.sink = sink

    def install_propagator(self) -> None:
        """Make this propagator the process-wide one (read by the FastAPI instrumentation)."""
        set_global_textmap(self.propagator)

    def instrument(self, app: FastAPI) -> None:
        """Add the FastAPI server span to the admin ``app`` (only when tracing is on). Probes
        and scrapes are not traced: they would drown the rest. (Checks have their own server
        span, ``ztauthz.check``: app/telemetry/hub.py.)"""
        if self._provider is None:
            return
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(
            app,
            tracer_provider=self._provider,
            excluded_urls=",".join(UNTRACED_ADMIN_PATHS),
            server_request_hook=scrub_server_span,
            exclude_spans=["receive", "send"],
            # Should OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_* name a header, its value is
            # redacted whatever it is: authorization and cookie must never reach a span.
            http_capture_headers_sanitize_fields=[".*"],
        )

    def shutdown(self, timeout: float = DEFAULT_CLOSE_TIMEOUT) -> None:
        """Export what is buffered for at most ``timeout`` seconds, whatever the collector does,
        and stop; what is not sent by then is dropped, counted and logged (idempotent)."""
        provider, processor = self._provider, self._processor
        self._provider = self._processor = None
        if processor is not None:
            unsent = processor.close(timeout)
            if unsent:
                log.warning(
                    "%d spans were not sent: the collector did not take them within %.1f s",
                    unsent,
                    timeout,
                    extra={"spans_dropped": unsent},
                )
        if provider is not None:
            provider.shutdown()  # the processor is closed: returns at once
