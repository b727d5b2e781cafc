"""The decision log: exactly one JSON line per check, on stdout, never blocking the check.

``record`` turns the decision into its JSON line (orjson, the fastest of the encoders
measured in bench/README.md) and appends it, with its newline, to one bounded buffer (allow
lines may be sampled out first; denials never are). A background thread takes the whole buffer
at once and writes it to the file descriptor: it only ever does I/O, which releases the GIL, so it never holds the event loop up
for long (formatting lines there instead made the loop wait for the GIL in bursts, which showed
as a ten-fold p99), and no line object outlives its check or is freed by another thread. It
wakes every ``_WAKE_INTERVAL``, or at once when half the queue is full: every wake-up hands the
GIL back and forth with the event loop, so few large batches cost the checks least.

What can happen to a line, and what says so:
- the buffer holds ``queue_size`` lines (the writer cannot keep up, or stdout blocks), a line
  cannot be formatted, or writing fails: the line is dropped, counted in
  ``ztauthz_decision_log_dropped_total``, and the first drop of an episode is logged (once,
  until a batch is written again); the check never waits;
- SIGTERM/SIGINT: ``serve`` stops and ``close`` writes everything queued before the process
  exits; SIGKILL or a crash of the interpreter loses what is queued: at most
  ``_WAKE_INTERVAL`` of lines (and never more than ``queue_size``).
Before ``start`` and after ``close`` there is no writer thread, and ``record`` writes at once
(tests, and the last checks of a shutdown, lose nothing).

Schema 2: every line validates against ``decision_log.schema.json`` (beside this module;
``SCHEMA`` below is its version, written into each line). A field whose value is null, and an
empty ``grants``, is left out of the line (``read_line`` reads a line back with every field);
schema 1 (``decision_log.v1.schema.json``) wrote them as null and ``[]``. ``decision_line``
builds the complete object, every field present. Only fixed fields are written: never a header
value, token, cookie or query string.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, Protocol, TextIO

import orjson

from app.decision import Decision
from app.identity.principal import Principal
from app.reasons import Reason, status_of
from app.request import RequestContext
from app.telemetry.fields import client_ip, path_only
from app.telemetry.logging import iso_time, span_hex, trace_hex
from app.telemetry.subject import SubjectView, subject_view

SCHEMA: Final = 2
SCHEMA_FILE: Final = Path(__file__).with_name("decision_log.schema.json")
SCHEMA_V1_FILE: Final = Path(__file__).with_name("decision_log.v1.schema.json")
# The writer wakes every _WAKE_INTERVAL seconds, or at once when half the queue waits: few,
# large batches keep thread switches (and the GIL hand-overs they cost the event loop) rare.
_WAKE_INTERVAL = 0.1
# Left out of a line when null (schema 2); "grants" when empty. Every other field always has a
# value.
OPTIONAL: Final = frozenset(
    {"trace_id", "span_id", "rule", "policy", "policy_version", "issuer", "subject"}
    | {"device_id", "client_ip", "country", "workload_id", "grants", "dry_run"}
)
# The fields of a line that vary from check to check, whatever the decision.
PER_CHECK: Final = frozenset(
    {"kind", "schema", "time", "decision_id", "trace_id", "span_id", "client_ip"}
    | {"method", "host", "path", "latency_us", "transport"}
)
_START: Final = b'{"kind":"decision","schema":%d,' % SCHEMA
_MAX_FIXED = 4096

log = logging.getLogger("ztauthz.decision_log")

# (epoch time, request, decision or None when the check raised, decision id, latency in µs,
#  trace id, span id)
Entry = tuple[float, RequestContext, Decision | None, str, int, int | None, int | None]


class DropCounter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


CallerTrace = Callable[[Mapping[str, str]], int | None]


def compact(line: Mapping[str, Any]) -> dict[str, Any]:
    """``line`` as schema 2 writes it: without null fields and without an empty ``grants``."""
    return {k: v for k, v in line.items() if v is not None and (v != [] or k != "grants")}


def read_line(text: str | bytes) -> dict[str, Any]:
    """A decision-log line read back with every field of the schema present: what schema 2
    leaves out is null (``grants``: ``[]``), as schema 1 wrote it. Lines of other kinds are
    returned as they are."""
    line: dict[str, Any] = orjson.loads(text)
    if line.get("kind") != "decision":
        return line
    for name in OPTIONAL:
        line.setdefault(name, [] if name == "grants" else None)
    return line


def decision_line(
    entry: Entry, subject: SubjectView, caller_trace: CallerTrace | None = None
) -> dict[str, Any]:
    """The complete JSON object of one decision-log line, every field present (null where
    unknown); ``compact`` of it is what the log writes (see decision_log.schema.json).

    Without a trace id of its own (tracing off), the line carries the caller's, read from the
    request headers with ``caller_trace``.
    """
    when, ctx, decision, decision_id, latency_us, trace_id, span_id = entry
    if trace_id is None and caller_trace is not None:
        trace_id = caller_trace(ctx.headers)
    # Reasons are str enums: orjson writes their values, and they compare equal to them.
    line: dict[str, Any] = {
        "kind": "decision",
        "schema": SCHEMA,
        "time": iso_time(when),
        "decision_id": decision_id,
        "trace_id": trace_hex(trace_id),
        "span_id": span_hex(span_id),
    }
    if decision is None:  # the check itself failed
        reason = Reason.INTERNAL_ERROR
        line.update(
            decision="deny",
            status=status_of(reason),
            reason=reason,
            reasons=[reason],
            rule=None,
            policy=None,
            policy_version=None,
            issuer=None,
            subject=None,
            device_id=None,
            client_ip=client_ip(ctx),
            country=None,
            workload_id=None,
        )
    else:
        reason = decision.reason
        principal = decision.principal
        evidence = decision.evidence
        line["decision"] = "allow" if decision.allow else "deny"
        line["status"] = status_of(reason)
        line["reason"] = reason
        line["reasons"] = [reason]
        line["rule"] = decision.rule_id
        line["policy"] = decision.policy
        line["policy_version"] = decision.policy_version
        if principal is None:
            line["issuer"] = line["subject"] = None
        else:
            line["issuer"] = principal.issuer
            line["subject"] = subject(principal.subject)
        if evidence is None:
            line["device_id"] = None
            line["client_ip"] = client_ip(ctx)
            line["country"] = line["workload_id"] = None
        else:
            device, location, workload = evidence.device, evidence.location, evidence.workload
            line["device_id"] = None if device is None else device.id
            line["client_ip"] = (
                location.client_ip if location.client_ip is not None else client_ip(ctx)
            )
            line["country"] = location.country
            line["workload_id"] = None if workload is None else workload.id
    line["method"] = ctx.method
    line["host"] = ctx.host
    line["path"] = path_only(ctx.path)
    line["latency_us"] = latency_us
    line["grants"] = list(decision.grants) if decision is not None else []
    dry_run = decision.dry_run if decision is not None else None
    line["dry_run"] = (
        None
        if dry_run is None
        else {
            "decision": "allow" if dry_run.allow else "deny",
            "reason": dry_run.reason,
            "rule": dry_run.rule_id,
            "policy": dry_run.policy,
        }
    )
    line["transport"] = ctx.transport
    return line


# Characters that JSON lets stand raw inside a string but that line readers other than a plain
# "\n" split (Python's str.splitlines, JavaScript's line terminators): NEL, LINE SEPARATOR and
# PARAGRAPH SEPARATOR, as UTF-8. orjson escapes every C0 control; these it writes raw.
_LINE_BREAKS = (
    (b"\xc2\x85", b"\\u0085"),
    (b"\xe2\x80\xa8", b"\\u2028"),
    (b"\xe2\x80\xa9", b"\\u2029"),
)


def _escape_line_breaks(data: bytearray) -> bytearray:
    """``data`` with the raw line breaks above written as JSON escapes: every line stays one
    line for any reader, and parses to the same object. One scan per batch, not per line."""
    for raw, escaped in _LINE_BREAKS:
        if raw in data:
            data = data.replace(raw, escaped)
    return data


def _file_descriptor(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return None


class DecisionLog:
    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        subject: SubjectView | None = None,
        caller_trace: CallerTrace | None = None,
        dropped: DropCounter | None = None,
        queue_size: int = 10_000,
        allow_sample_rate: float = 1.0,
        sample: Callable[[], float] = random.random,
    ) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self._subject = subject if subject is not None else subject_view(None)
        self._caller_trace = caller_trace
        self._dropped = dropped
        self._max = queue_size
        self._rate = allow_sample_rate
        self._sample = sample
        # Queued lines, each with its newline, in one buffer: the writer takes it whole, so
        # no line object outlives its check or is freed by another thread.
        self._buffer = bytearray()
        self._lines = 0
        self._buffer_lock = threading.Lock()  # appends (event loop) against takes (writer)
        self._fd = _file_descriptor(self._stream)
        self._fixed: dict[tuple[int, str | None, str, Reason], tuple[Principal, bytes | None]] = {}
        self._wake = threading.Event()
        self._lock = threading.Lock()  # one writer at a time: the thread or flush()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._early = max(1, queue_size // 2)  # wake the writer at once from this many lines
        self._dropping = False  # an episode of drops is under way (logged at its start)

    def record(
        self,
        when: float,
        ctx: RequestContext,
        decision: Decision | None,
        decision_id: str,
        latency_us: int,
        trace_id: int | None = None,
        span_id: int | None = None,
    ) -> None:
        """Queue one line; returns at once. Allow lines may be sampled out, denials never."""
        if (
            self._rate < 1.0
            and decision is not None
            and decision.allow
            and self._sample() >= self._rate
        ):
            return
        if self._lines >= self._max:
            self._drop(1)
            return
        entry = (when, ctx, decision, decision_id, latency_us, trace_id, span_id)
        try:
            line = self.format(entry)
        except Exception:
            self._drop(1, "a line could not be formatted")
            log.exception("could not format a decision log line (decision_id=%s)", decision_id)
            return
        with self._buffer_lock:
            buffer = self._buffer
            buffer += line
            buffer.append(0x0A)  # the line's newline
            self._lines = lines = self._lines + 1
        if self._thread is None:
            self.flush()
        elif lines >= self._early and not self._wake.is_set():
            self._wake.set()

    def record_line(self, line: Mapping[str, Any]) -> None:
        """Queue one line that is not a decision (``kind`` says what: e.g. ``revocation``, an
        operator's kill switch), so that the decision log tells the whole story in order.
        Never sampled out."""
        try:
            encoded = orjson.dumps(dict(line))
        except TypeError:
            self._drop(1, "a line could not be formatted")
            log.exception("could not format a %s line", line.get("kind"))
            return
        with self._buffer_lock:
            self._buffer += encoded
            self._buffer.append(0x0A)
            self._lines += 1
        if self._thread is None:
            self.flush()
        else:
            self._wake.set()

    def format(self, entry: Entry) -> bytes:
        """``decision_line(entry)`` as JSON, the same object whichever way it is made.

        Total: a line orjson cannot write (a string with a lone surrogate, which no verified
        claim holds but a request field might) is written by Python's encoder with ``\\u``
        escapes instead, so no decision loses its line.
        """
        try:
            return self._format(entry)
        except (orjson.JSONEncodeError, TypeError, UnicodeError):
            line = compact(decision_line(entry, self._subject, self._caller_trace))
            return json.dumps(line, separators=(",", ":"), ensure_ascii=True).encode("ascii")

    def _format(self, entry: Entry) -> bytes:
        """``format``'s fast way.

        The fields that only depend on the decision's principal, rule, policy version and
        reason (decision, status, issuer, subject, ...) are the same for every check a
        verified token makes on the same rule: from the second such check on, they are kept,
        encoded, per (principal, rule, policy version, reason), and only the per-check fields
        are encoded each time.
        Decisions with evidence, grants or a dry run are encoded whole.
        """
        when, ctx, decision, decision_id, latency_us, trace_id, span_id = entry
        fixed = None if decision is None else self._fixed_part(entry, decision)
        if fixed is None:
            return orjson.dumps(compact(decision_line(entry, self._subject, self._caller_trace)))
        if trace_id is None and self._caller_trace is not None:
            trace_id = self._caller_trace(ctx.headers)
        per: dict[str, Any] = {"time": iso_time(when), "decision_id": decision_id}
        if trace_id:
            per["trace_id"] = trace_hex(trace_id)
        if span_id:
            per["span_id"] = span_hex(span_id)
        address = client_ip(ctx)  # no evidence: the address Envoy saw
        if address is not None:
            per["client_ip"] = address
        per["method"] = ctx.method
        per["host"] = ctx.host
        per["path"] = path_only(ctx.path)
        per["latency_us"] = latency_us
        per["transport"] = ctx.transport
        return b"".join((_START, orjson.dumps(per)[1:-1], b",", fixed, b"}"))

    def _fixed_part(self, entry: Entry, decision: Decision) -> bytes | None:
        """The encoded fixed fields of ``decision``'s line, kept from the second sight of its
        principal on; None when the line is encoded whole (first sight, no principal,
        evidence, grants or a dry run)."""
        principal = decision.principal
        if (
            principal is None
            or decision.evidence is not None
            or decision.dry_run is not None
            or decision.grants
        ):
            return None
        key = (id(principal), decision.rule_id, decision.policy_version, decision.reason)
        known = self._fixed.get(key)
        if known is None or known[0] is not principal:
            # First sight: most tokens are seen once (a new token per request costs nothing
            # more than the whole line); the fixed part is kept from the second sight on.
            if len(self._fixed) >= _MAX_FIXED:
                self._fixed.clear()
            self._fixed[key] = (principal, None)
            return None
        fixed = known[1]
        if fixed is None:
            line = compact(decision_line(entry, self._subject))
            fixed = orjson.dumps({k: v for k, v in line.items() if k not in PER_CHECK})[1:-1]
            self._fixed[key] = (principal, fixed)
        return fixed

    def start(self) -> None:
        if self._thread is None:
            self._closing = False
            self._thread = threading.Thread(
                target=self._run, name="ztauthz-decision-log", daemon=True
            )
            self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the writer after it has written everything queued so far."""
        self._closing = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.flush()

    def flush(self) -> None:
        """Write everything queued, now, in the calling thread (the writer thread does this
        continuously; tests and shutdown call it to be sure)."""
        with self._lock:
            with self._buffer_lock:
                data, self._buffer = self._buffer, bytearray()
                count, self._lines = self._lines, 0
            if not count:
                return
            try:
                self._write(_escape_line_breaks(data))
            except (OSError, ValueError) as exc:
                self._drop(count, f"writing failed: {exc}")
            else:
                self._dropping = False  # a batch went out: the next drop starts an episode

    def _write(self, data: bytearray) -> None:
        """Straight to the file descriptor when there is one (no text layer: the lines are
        UTF-8 JSON already), else through the stream (tests)."""
        fd = self._fd
        if fd is None:
            self._stream.write(data.decode())
            self._stream.flush()
            return
        self._stream.flush()  # anything written through the text layer goes first
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    def _drop(self, count: int, why: str = "queue full") -> None:
        """Count ``count`` lost lines; the first of an episode is logged (to the same stream:
        a line that says lines are missing, without flooding it)."""
        if self._dropped is not None:
            self._dropped.inc(count)
        if not self._dropping:
            self._dropping = True
            log.warning(
                "decision log: dropping lines (%s, %d queued); counted in "
                "ztauthz_decision_log_dropped_total, logged once until a batch is written",
                why,
                self._lines,
            )

    def _run(self) -> None:
        while not self._closing:
            self._wake.wait(_WAKE_INTERVAL)
            self._wake.clear()
            self.flush()
