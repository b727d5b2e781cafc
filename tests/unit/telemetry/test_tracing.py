"""Tracing configured from OTEL_* only: on/off, protocol, propagators, resource, real export."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpExporter,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app import __version__
from app.settings import ConfigError
from app.telemetry.tracing import (
    NO_STEPS,
    Steps,
    Tracing,
    propagator_from_env,
    scrub_server_span,
    service_resource,
    span_exporter,
    tracing_enabled,
)
from tests.unit.telemetry.otlp_support import otlp_receiver

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.mark.parametrize(
    ("environ", "enabled"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, False),
    ],
)
def test_tracing_is_on_only_when_configured(environ: dict[str, str], enabled: bool) -> None:
    assert tracing_enabled(environ) is enabled


@pytest.mark.parametrize(
    ("read", "environ"),
    [
        (tracing_enabled, {"OTEL_TRACES_EXPORTER": "console"}),
        (span_exporter, {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}),
        (propagator_from_env, {"OTEL_PROPAGATORS": "tracecontext,xray"}),
    ],
)
def test_unsupported_values_are_configuration_errors(
    read: Callable[[dict[str, str]], object], environ: dict[str, str]
) -> None:
    with pytest.raises(ConfigError, match=next(iter(environ))):
        read(environ)


@pytest.mark.parametrize(
    ("environ", "kind"),
    [
        ({}, HttpExporter),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, HttpExporter),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, GrpcExporter),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"},
         HttpExporter),
    ],
)  # fmt: skip
def test_exporter_follows_the_protocol(environ: dict[str, str], kind: type[Any]) -> None:
    exporter = span_exporter(environ)
    try:
        assert isinstance(exporter, kind)
    finally:
        exporter.shutdown()


def trace_of(propagator_env: dict[str, str], headers: dict[str, str]) -> str | None:
    extracted = propagator_from_env(propagator_env).extract(headers)
    context = trace.get_current_span(extracted).get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else None


B3_TRACE = "80f198ee56343ba864fe8b2a57d3eff7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.mark.parametrize(
    ("environ", "headers", "expected"),
    [
        ({}, {"traceparent": TRACEPARENT}, TRACE_ID),
        ({}, {"b3": f"{B3_TRACE}-e457b5a2e4d86bd1-1"}, B3_TRACE),
        ({}, {"x-b3-traceid": B3_TRACE, "x-b3-spanid": "e457b5a2e4d86bd1"}, B3_TRACE),
        ({}, {"traceparent": TRACEPARENT, "b3": f"{B3_TRACE}-e457b5a2e4d86bd1"}, TRACE_ID),
        ({}, {"traceparent": "garbage"}, None),
        ({"OTEL_PROPAGATORS": "tracecontext"}, {"b3": f"{B3_TRACE}-e457b5a2e4d86bd1"}, None),
        ({"OTEL_PROPAGATORS": "b3multi"}, {"traceparent": TRACEPARENT}, None),
        ({"OTEL_PROPAGATORS": "none"}, {"traceparent": TRACEPARENT}, None),
    ],
    ids=["w3c", "b3-single", "b3-multi", "w3c-wins", "bad", "w3c-only", "b3-only", "none"],
)
def test_propagators(
    environ: dict[str, str], headers: dict[str, str], expected: str | None
) -> None:
    assert trace_of(environ, headers) == expected


def test_resource_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    attributes = service_resource().attributes
    assert (attributes["service.name"], attributes["service.version"]) == ("ztauthz", __version__)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,service.name=a")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "authz-edge")
    attributes = service_resource().attributes
    assert attributes["service.name"] == "authz-edge"
    assert attributes["deployment.environment"] == "prod"


def test_unconfigured_tracing_records_nothing() -> None:
    tracing = Tracing.from_env({})
    assert not tracing.enabled and tracing.tracer is None
    with tracing.steps.span("ztauthz.verify_token") as span:
        assert not span.is_recording()
    assert NO_STEPS.span("x") is tracing.steps.span("y")  # one shared no-op, no allocation


def test_steps_record_only_under_a_recording_span() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    steps = Steps(tracer)
    with steps.span("orphan"):
        pass
    with tracer.start_as_current_span("check"), steps.span("ztauthz.verify_token") as step:
        step.set_attribute("ztauthz.reason", "token_expired")
    names = [s.name for s in exporter.get_finished_spans()]
    assert names == ["ztauthz.verify_token", "check"]
    assert exporter.get_finished_spans()[0].attributes == {"ztauthz.reason": "token_expired"}


def test_server_span_hook_removes_the_query_string() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    attributes = {
        "http.url": "http://ztauthz/check/a?access_token=s3cr3t",
        "http.target": "/check/a?access_token=s3cr3t",
        "url.query": "access_token=s3cr3t",
        "url.path": "/check/a",
    }
    with provider.get_tracer("t").start_as_current_span("GET", attributes=attributes) as span:
        scrub_server_span(span, {"query_string": b"access_token=s3cr3t"})
    (finished,) = exporter.get_finished_spans()
    assert "s3cr3t" not in repr(dict(finished.attributes or {}))
    assert finished.attributes is not None
    assert finished.attributes["http.url"] == "http://ztauthz/check/a"


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_spans_reach_an_otlp_receiver(monkeypatch: pytest.MonkeyPatch, protocol: str) -> None:
    with otlp_receiver(grpc=protocol == "grpc") as receiver:
        port = receiver.http_port if protocol == "http/protobuf" else receiver.grpc_port
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "ztauthz-test")
        tracing = Tracing.from_env()
        assert tracing.enabled and tracing.tracer is not None
        with tracing.tracer.start_as_current_span("ztauthz.check"):
            pass
        tracing.shutdown()  # flushes the batch processor
        (span,) = receiver.wait_for(lambda spans: len(spans) == 1, timeout=5)
    assert (span.service, span.name) == ("ztauthz-test", "ztauthz.check")
