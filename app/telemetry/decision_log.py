"""The decision log: exactly one JSON line per check, on stdout, never blocking the check.

``record`` turns the decision into its JSON line (orjson: a few microseconds) and appends it
to a bounded queue (allow lines may be sampled out first; denials never are). A background
thread writes the queued lines in batches and flushes once per batch: it only ever does I/O,
which releases the GIL, so it never holds the event loop up for long (formatting lines there
instead made the loop wait for the GIL in bursts, which showed as a ten-fold p99). When the queue is full, or writing fails, lines are
dropped and counted in ``ztauthz_decision_log_dropped_total``: the check never waits.
Before ``start`` and after ``close`` there is no writer thread, and ``record`` writes at once
(tests, and the last checks of a shutdown, lose nothing).

Every line validates against ``decision_log.schema.json`` (beside this module); ``SCHEMA``
below is its version, written into each line. Only fixed fields are written: never a header
value, token, cookie or query string.
"""

from __future__ import annotations

import logging
import random
import sys
import threading
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, Protocol, TextIO

import orjson

from app.decision import Decision
from app.reasons import Reason, status_of
from app.request import RequestContext
from app.telemetry.fields import client_ip, path_only
from app.telemetry.logging import iso_time, span_hex, trace_hex
from app.telemetry.subject import SubjectView, subject_view

SCHEMA: Final = 1
SCHEMA_FILE: Final = Path(__file__).with_name("decision_log.schema.json")
# The writer wakes every _WAKE_INTERVAL seconds, or at once when _BATCH lines wait: few, large
# batches keep thread switches (and the GIL hand-overs they cost the event loop) rare.
_WAKE_INTERVAL = 0.05
_BATCH = 256

log = logging.getLogger("ztauthz.decision_log")

# (epoch time, request, decision or None when the check raised, decision id, latency in µs,
#  trace id, span id)
Entry = tuple[float, RequestContext, Decision | None, str, int, int | None, int | None]


class DropCounter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


CallerTrace = Callable[[Mapping[str, str]], int | None]


def decision_line(
    entry: Entry, subject: SubjectView, caller_trace: CallerTrace | None = None
) -> dict[str, Any]:
    """The JSON object of one decision-log line (see decision_log.schema.json).

    Without a trace id of its own (tracing off), the line carries the caller's, read from the
    request headers with ``caller_trace``.
    """
    when, ctx, decision, decision_id, latency_us, trace_id, span_id = entry
    if trace_id is None and caller_trace is not None:
        trace_id = caller_trace(ctx.headers)
    reason = decision.reason if decision is not None else Reason.INTERNAL_ERROR
    principal = decision.principal if decision is not None else None
    dry_run = decision.dry_run if decision is not None else None
    evidence = decision.evidence if decision is not None else None
    device = evidence.device if evidence is not None else None
    location = evidence.location if evidence is not None else None
    workload = evidence.workload if evidence is not None else None
    return {
        "kind": "decision",
        "schema": SCHEMA,
        "time": iso_time(when),
        "decision_id": decision_id,
        "trace_id": trace_hex(trace_id),
        "span_id": span_hex(span_id),
        "decision": "allow" if decision is not None and decision.allow else "deny",
        "status": status_of(reason),
        "reason": reason.value,
        "reasons": [reason.value],
        "rule": decision.rule_id if decision is not None else None,
        "policy": decision.policy if decision is not None else None,
        "policy_version": decision.policy_version if decision is not None else None,
        "issuer": principal.issuer if principal is not None else None,
        "subject": subject(principal.subject) if principal is not None else None,
        "device_id": device.id if device is not None else None,
        "client_ip": location.client_ip
        if location is not None and location.client_ip is not None
        else client_ip(ctx),
        "country": location.country if location is not None else None,
        "workload_id": workload.id if workload is not None else None,
        "method": ctx.method,
        "host": ctx.host,
        "path": path_only(ctx.path),
        "latency_us": latency_us,
        "grants": list(decision.grants) if decision is not None else [],
        "dry_run": None
        if dry_run is None
        else {
            "decision": "allow" if dry_run.allow else "deny",
            "reason": dry_run.reason.value,
            "rule": dry_run.rule_id,
            "policy": dry_run.policy,
        },
        "transport": ctx.transport,
    }


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
        self._queue: deque[str] = deque()  # formatted lines, without the newline
        self._wake = threading.Event()
        self._lock = threading.Lock()  # one writer at a time: the thread or flush()
        self._closing = False
        self._thread: threading.Thread | None = None

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
        queue = self._queue
        if len(queue) >= self._max:
            self._drop(1)
            return
        entry = (when, ctx, decision, decision_id, latency_us, trace_id, span_id)
        try:
            line = orjson.dumps(decision_line(entry, self._subject, self._caller_trace))
        except Exception:
            self._drop(1)
            log.exception("could not format a decision log line (decision_id=%s)", decision_id)
            return
        queue.append(line.decode())
        if self._thread is None:
            self.flush()
        elif len(queue) >= _BATCH and not self._wake.is_set():
            self._wake.set()

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
            queue = self._queue
            lines: list[str] = []
            while queue:
                try:
                    lines.append(queue.popleft())
                except IndexError:  # pragma: no cover - emptied concurrently
                    break
            if not lines:
                return
            count = len(lines)
            lines.append("")  # the last line's newline
            try:
                self._stream.write("\n".join(lines))
                self._stream.flush()
            except (OSError, ValueError):
                self._drop(count)

    def _drop(self, count: int) -> None:
        if self._dropped is not None:
            self._dropped.inc(count)

    def _run(self) -> None:
        while not self._closing:
            self._wake.wait(_WAKE_INTERVAL)
            self._wake.clear()
            self.flush()
