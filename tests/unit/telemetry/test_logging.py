"""JSON logs: fields, trace correlation, extra fields, redaction of anything token-shaped."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from app.telemetry.logging import Correlation, JsonFormatter, bind, redact, unbind

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz"


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("ztauthz.test.logging")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(text) for text in stream.getvalue().splitlines()]


def test_a_plain_line(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.warning("keys for %s failed", "https://idp.example.com")
    (line,) = lines(stream)
    assert line["kind"] == "log" and line["level"] == "warning"
    assert line["logger"] == "ztauthz.test.logging"
    assert line["message"] == "keys for https://idp.example.com failed"
    assert line["time"].endswith("Z") and "trace_id" not in line and "decision_id" not in line


def test_extra_fields_are_top_level_without_clobbering(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.info("x", extra={"event": "keys_rotated", "rules": 3, "kids": ("a", "b")})
    logger.info("y", extra={"time": "not mine", "level": "nope"})
    first, second = lines(stream)
    assert (first["event"], first["rules"], first["kids"]) == ("keys_rotated", 3, ["a", "b"])
    assert second["field_time"] == "not mine" and second["field_level"] == "nope"
    assert second["level"] == "info"


def test_correlation_of_a_check_without_tracing(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    token = bind(Correlation("d" * 32, trace_id=0xABC, span_id=None))
    try:
        logger.info("inside the check")
    finally:
        unbind(token)
    logger.info("after it")
    inside, after = lines(stream)
    assert inside["decision_id"] == "d" * 32
    assert inside["trace_id"] == f"{0xABC:032x}" and "span_id" not in inside
    assert "decision_id" not in after and "trace_id" not in after


def test_correlation_with_a_current_span(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    tracer = TracerProvider().get_tracer("test")
    token = bind(Correlation("e" * 32, trace_id=1, span_id=2))
    try:
        with tracer.start_as_current_span("step") as span:
            logger.info("in a step")
    finally:
        unbind(token)
    (line,) = lines(stream)
    context = span.get_span_context()
    assert line["trace_id"] == f"{context.trace_id:032x}"
    assert line["span_id"] == f"{context.span_id:016x}"
    assert line["decision_id"] == "e" * 32


def test_exceptions_are_logged_and_tokens_in_them_redacted(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    try:
        raise RuntimeError(f"bad token {JWT} and Authorization: Bearer abcdefgh12345678")
    except RuntimeError:
        logger.exception("check failed")
    text = stream.getvalue()
    (line,) = lines(stream)
    assert "RuntimeError" in line["exception"]
    assert JWT not in text and "abcdefgh12345678" not in text
    assert "[redacted-jwt]" in text and "Bearer [redacted]" in text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"token={JWT}", "token=[redacted-jwt]"),
        ("Basic dXNlcjpwYXNzd29yZA==", "Basic [redacted]"),
        ("bearer short", "bearer short"),  # too short to be a credential: left alone
        ("no secrets here: eyJ", "no secrets here: eyJ"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected
