"""Every log line that is not a decision: one JSON object per line, with trace correlation.

``configure_logging`` is the one place that sets logging up (``ztauthz serve`` calls it). Each
line carries ``kind: "log"`` (decision lines carry ``kind: "decision"``), the time, level, logger
and message, the ``extra`` fields the caller passed, and the correlation of the check it was
written in: ``decision_id``, ``trace_id`` and ``span_id``. Messages never carry tokens by
design; as a last line of defence anything shaped like a JWT or a bearer credential is redacted.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
import time
from collections.abc import Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TextIO

from opentelemetry import trace


@dataclass(frozen=True, slots=True)
class Correlation:
    """What ties a log line to one check: its decision id and, when known, its trace."""

    decision_id: str
    trace_id: int | None = None  # 128-bit W3C trace id, None when no trace is known
    span_id: int | None = None  # the check span; None when ztauthz does not trace


_CORRELATION: ContextVar[Correlation | None] = ContextVar("ztauthz_correlation", default=None)


def bind(correlation: Correlation) -> Token[Correlation | None]:
    """Make ``correlation`` current for the running task (until ``unbind``)."""
    return _CORRELATION.set(correlation)


def unbind(token: Token[Correlation | None]) -> None:
    _CORRELATION.reset(token)


def current() -> Correlation | None:
    return _CORRELATION.get()


def safe_extra(fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` usable as ``extra=``: names a LogRecord already has get a ``field_`` prefix."""
    return {(f"field_{k}" if k in RECORD_ATTRIBUTES else k): v for k, v in fields.items()}


def trace_hex(trace_id: int | None) -> str | None:
    return None if not trace_id else format(trace_id, "032x")


def span_hex(span_id: int | None) -> str | None:
    return None if not span_id else format(span_id, "016x")


@lru_cache(maxsize=8)
def _second(epoch_second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_second))


def iso_time(epoch: float) -> str:
    """RFC 3339 UTC with microseconds, e.g. ``2025-01-31T12:00:00.123456Z``."""
    second = math.floor(epoch)
    return f"{_second(second)}.{int((epoch - second) * 1_000_000):06d}Z"


# The attributes every LogRecord has; anything else on a record came from ``extra=``.
RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's ANSI-coloured duplicate of the message
}
# Keys this formatter writes itself; an ``extra`` field of the same name is written with a
# ``field_`` prefix instead of overwriting it.
_FIXED = frozenset(
    {"kind", "time", "level", "logger", "message", "decision_id", "trace_id", "span_id"}
    | {"exception", "event"}
)
# A JWS/JWT in compact form starts with a base64url JSON header: '{"' encodes to "eyJ".
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
_CREDENTIAL = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")


def redact(text: str) -> str:
    """Remove anything shaped like a token or an Authorization credential."""
    if "eyJ" in text:
        text = _JWT.sub("[redacted-jwt]", text)
    return _CREDENTIAL.sub(r"\1 [redacted]", text)


def _correlate(out: dict[str, Any]) -> None:
    context = trace.get_current_span().get_span_context()
    found = _CORRELATION.get()
    if found is not None:
        out["decision_id"] = found.decision_id
    if context.is_valid:
        out["trace_id"] = trace_hex(context.trace_id)
        out["span_id"] = span_hex(context.span_id)
    elif found is not None and found.trace_id:
        out["trace_id"] = trace_hex(found.trace_id)
        if found.span_id:
            out["span_id"] = span_hex(found.span_id)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per record; see the module docstring for the fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "kind": "log",
            "time": iso_time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        _correlate(out)
        for key, value in record.__dict__.items():
            if key in RECORD_ATTRIBUTES:
                continue
            out[f"field_{key}" if key in _FIXED and key != "event" else key] = _jsonable(value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            out["exception"] = self.formatStack(record.stack_info)
        return redact(json.dumps(out, separators=(",", ":"), default=str))


def configure_logging(level: str, stream: TextIO | None = None) -> logging.Handler:
    """Send every logger (uvicorn's included) to ``stream`` (stderr) as JSON lines."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.captureWarnings(True)
    return handler
