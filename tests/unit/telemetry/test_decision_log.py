"""The decision log: line contents against the JSON Schema, sampling, the bounded queue."""

from __future__ import annotations

import io
import json
import threading
import time
from typing import Any

import jsonschema
import pytest
from prometheus_client import CollectorRegistry, Counter

from app.decision import Decision, DryRun
from app.identity.principal import Principal
from app.reasons import Reason, status_of
from app.request import RequestContext, make_context
from app.telemetry.decision_log import (
    SCHEMA,
    SCHEMA_FILE,
    SCHEMA_V1_FILE,
    DecisionLog,
    compact,
    decision_line,
    read_line,
)
from app.telemetry.subject import subject_view

VALIDATOR = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
NOW = 1_700_000_000.25
VERSION = "sha256:0123456789abcdef"
DECISION_ID = "0123456789abcdef0123456789abcdef"


def principal(subject: str = "alice") -> Principal:
    return Principal(
        issuer="https://idp.example.com",
        subject=subject,
        groups=frozenset({"finance"}),
        scopes=frozenset({"invoices:read"}),
        audience=("https://api.example.com",),
        expires_at=int(NOW) + 300,
        issued_at=int(NOW),
        claims={},
    )


def ctx(path: str = "/invoices?access_token=s3cr3t", **headers: str) -> RequestContext:
    return make_context("GET", "api.example.com", path, headers)


ALLOW = Decision(True, Reason.ALLOWED, DECISION_ID, VERSION, "invoices-read", "p", principal())
DENY_TOKEN = Decision(False, Reason.TOKEN_EXPIRED, DECISION_ID, VERSION)
DENY_RULE = Decision(False, Reason.DENIED_BY_RULE, DECISION_ID, VERSION, "never", "p", principal())
WITH_GRANT_AND_DRY_RUN = Decision(
    True,
    Reason.ALLOWED,
    DECISION_ID,
    VERSION,
    "oncall",
    "p",
    principal("bob"),
    grants=("incident-42",),
    dry_run=DryRun(False, Reason.NO_MATCHING_RULE),
)


def line(decision: Decision | None, request: RequestContext | None = None, **kw: Any) -> Any:
    entry = (NOW, request or ctx(), decision, DECISION_ID, 1234, kw.get("trace"), kw.get("span"))
    return decision_line(entry, kw.get("subject", subject_view(None)))


@pytest.mark.parametrize(
    "decision",
    [ALLOW, DENY_TOKEN, DENY_RULE, WITH_GRANT_AND_DRY_RUN, None],
    ids=["allow", "deny-token", "deny-rule", "grant-dry-run", "exception"],
)
def test_every_kind_of_line_validates_against_the_schema(decision: Decision | None) -> None:
    out = line(decision, trace=0xABC, span=0x12)
    VALIDATOR.validate(out)
    # Every line is one JSON line, whatever it holds.
    assert "\n" not in json.dumps(out)
    assert out["schema"] == SCHEMA and out["kind"] == "decision"


def test_allow_line_fields() -> None:
    request = ctx(**{"x-forwarded-for": "203.0.113.9", "x-ztauthz-client-address": "198.51.100.4"})
    out = line(ALLOW, request, trace=1, span=2)
    assert out["time"] == "2023-11-14T22:13:20.250000Z"
    assert out["trace_id"] == "0" * 31 + "1" and out["span_id"] == "0" * 15 + "2"
    assert (out["decision"], out["status"], out["reason"], out["reasons"]) == (
        "allow",
        200,
        "allowed",
        ["allowed"],
    )
    assert (out["rule"], out["policy"], out["policy_version"]) == ("invoices-read", "p", VERSION)
    assert (out["issuer"], out["subject"]) == ("https://idp.example.com", "alice")
    assert out["path"] == "/invoices"  # the query (and its access_token) is gone
    assert out["client_ip"] == "198.51.100.4"  # what Envoy saw, not what the client claims
    assert out["latency_us"] == 1234 and out["transport"] == "http"
    assert (out["grants"], out["dry_run"]) == ([], None)
    assert (out["device_id"], out["country"], out["workload_id"]) == (None, None, None)


def test_exception_line_is_an_internal_error_deny() -> None:
    out = line(None)
    assert (out["decision"], out["status"], out["reason"]) == ("deny", 503, "internal_error")
    assert out["decision_id"] == DECISION_ID and out["trace_id"] is None


def test_grant_and_dry_run_outcomes() -> None:
    out = line(WITH_GRANT_AND_DRY_RUN)
    assert out["grants"] == ["incident-42"]
    assert out["dry_run"] == {
        "decision": "deny",
        "reason": "no_matching_rule",
        "rule": None,
        "policy": None,
    }


def test_subject_is_hashed_when_a_key_is_set() -> None:
    out = line(ALLOW, subject=subject_view(b"k" * 32))
    assert out["subject"] != "alice" and len(out["subject"]) == 32
    VALIDATOR.validate(out)


@pytest.mark.parametrize(
    ("headers", "source", "expected"),
    [
        ({}, None, None),
        ({"x-forwarded-for": "203.0.113.9"}, None, None),  # the client's claim: never used
        ({"x-ztauthz-client-address": "not-an-ip"}, None, None),
        ({"x-ztauthz-client-address": "2001:db8::1"}, None, "2001:db8::1"),
        ({"x-ztauthz-client-address": "203.0.113.9"}, "192.0.2.7", "192.0.2.7"),
    ],
)
def test_client_ip(headers: dict[str, str], source: str | None, expected: str | None) -> None:
    request = make_context("GET", "h", "/", headers, source_address=source)
    assert line(ALLOW, request)["client_ip"] == expected


@pytest.mark.parametrize(
    ("raw", "path"), [("/a?b#c", "/a"), ("/a#c?d", "/a"), ("/a/b", "/a/b"), ("", "")]
)
def test_path_loses_query_and_fragment(raw: str, path: str) -> None:
    assert line(ALLOW, ctx(raw))["path"] == path


def lines_of(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(text) for text in stream.getvalue().splitlines()]


def test_unstarted_log_writes_at_once() -> None:
    out = io.StringIO()
    log = DecisionLog(out)
    log.record(NOW, ctx(), ALLOW, DECISION_ID, 5)
    assert [entry["decision_id"] for entry in lines_of(out)] == [DECISION_ID]


def test_writer_thread_writes_everything_queued_before_close() -> None:
    out = io.StringIO()
    log = DecisionLog(out)
    log.start()
    try:
        for i in range(500):
            log.record(NOW, ctx(), ALLOW if i % 2 else DENY_TOKEN, f"{i:032x}", i)
    finally:
        log.close()
    written = lines_of(out)
    assert [entry["decision_id"] for entry in written] == [f"{i:032x}" for i in range(500)]
    for entry in written:
        VALIDATOR.validate(entry)


@pytest.mark.parametrize(("rate", "draw", "kept"), [(0.0, 0.0, False), (0.5, 0.49, True)])
def test_allow_lines_are_sampled_denials_never(rate: float, draw: float, kept: bool) -> None:
    out = io.StringIO()
    log = DecisionLog(out, allow_sample_rate=rate, sample=lambda: draw)
    log.record(NOW, ctx(), ALLOW, "a" * 32, 1)
    for decision in (DENY_TOKEN, DENY_RULE, None):
        log.record(NOW, ctx(), decision, "d" * 32, 1)
    reasons = [entry["reason"] for entry in lines_of(out)]
    assert reasons == (["allowed"] if kept else []) + [
        "token_expired",
        "denied_by_rule",
        "internal_error",
    ]


class BlockedStream(io.StringIO):
    """A stream whose writes wait until released, like a stdout nobody reads."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def write(self, text: str) -> int:
        self.entered.set()
        self.release.wait(10)
        return super().write(text)


class Dropped:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.counter = Counter("dropped", "test", registry=self.registry)

    @property
    def count(self) -> float | None:
        return self.registry.get_sample_value("dropped_total")


def test_a_full_queue_drops_and_counts_without_blocking() -> None:
    stream = BlockedStream()
    dropped = Dropped()
    log = DecisionLog(stream, dropped=dropped.counter, queue_size=16)
    log.start()
    try:
        log.record(NOW, ctx(), DENY_TOKEN, "0" * 32, 1)
        assert stream.entered.wait(5)  # the writer holds that line and is stuck writing it
        started = time.perf_counter()
        for i in range(100):
            log.record(NOW, ctx(), DENY_TOKEN, f"{i + 1:032x}", 1)
        assert time.perf_counter() - started < 0.5  # never waited for the stuck writer
        assert dropped.count == 100 - 16
    finally:
        stream.release.set()
        log.close()
    assert len(lines_of(stream)) == 1 + 16


class BrokenStream(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError("stdout is gone")


def test_write_failures_are_counted_as_dropped() -> None:
    dropped = Dropped()
    log = DecisionLog(BrokenStream(), dropped=dropped.counter)
    for _ in range(3):
        log.record(NOW, ctx(), ALLOW, DECISION_ID, 1)
    assert dropped.count == 3


# -- the encoded line: its kept (per principal, rule, version, reason) part and the rest ----

HASHED = subject_view(b"k" * 32)


def formatted(
    log: DecisionLog, decision: Decision | None, request: RequestContext, **kw: Any
) -> Any:
    entry = (
        kw.get("now", NOW),
        request,
        decision,
        kw.get("decision_id", DECISION_ID),
        kw.get("latency", 1234),
        kw.get("trace"),
        kw.get("span"),
    )
    return entry, read_line(log.format(entry))  # the line as written, every field present


@pytest.mark.parametrize("subject", [subject_view(None), HASHED], ids=["plain", "hashed"])
@pytest.mark.parametrize(
    "decision",
    [ALLOW, DENY_TOKEN, DENY_RULE, WITH_GRANT_AND_DRY_RUN, None],
    ids=["allow", "deny-token", "deny-rule", "grant-dry-run", "exception"],
)
def test_format_writes_exactly_decision_line_every_time(
    decision: Decision | None, subject: Any
) -> None:
    """The same line whether its decision's fixed part is encoded afresh or reused: checked
    for repeated checks that differ in every per-check field."""
    log = DecisionLog(io.StringIO(), subject=subject)
    requests = [
        ctx(),
        make_context("POST", "other.example.com:8443", '/a"b\\c?x=1', {}),
        ctx("/x", **{"x-ztauthz-client-address": "2001:db8::1"}),
    ]
    for index, request in enumerate(requests * 2):
        entry, out = formatted(
            log,
            decision,
            request,
            now=NOW + index * 1.5,
            decision_id=f"{index:032x}",
            latency=index,
            trace=index or None,
            span=index * 7 or None,
        )
        assert out == decision_line(entry, subject)
        VALIDATOR.validate(out)


def test_format_keeps_nothing_across_principals_rules_or_versions() -> None:
    log = DecisionLog(io.StringIO())
    request = ctx()
    first = Decision(True, Reason.ALLOWED, DECISION_ID, VERSION, "r1", "p", principal("alice"))
    variants = [
        first,
        Decision(True, Reason.ALLOWED, DECISION_ID, VERSION, "r1", "p", principal("alice")),
        Decision(True, Reason.ALLOWED, DECISION_ID, VERSION, "r1", "p", principal("bob")),
        Decision(True, Reason.ALLOWED, DECISION_ID, VERSION, "r2", "q", first.principal),
        Decision(True, Reason.ALLOWED, DECISION_ID, "sha256:ffff", "r1", "p", first.principal),
        Decision(False, Reason.DENIED_BY_RULE, DECISION_ID, VERSION, "r1", "p", first.principal),
    ]
    for decision in variants * 2:
        entry, out = formatted(log, decision, request)
        assert out == decision_line(entry, subject_view(None))
    assert {out["subject"] for _, out in (formatted(log, d, request) for d in variants)} == {
        "alice",
        "bob",
    }


V1_VALIDATOR = jsonschema.Draft202012Validator(json.loads(SCHEMA_V1_FILE.read_text()))


@pytest.mark.parametrize(
    "decision",
    [ALLOW, DENY_TOKEN, DENY_RULE, WITH_GRANT_AND_DRY_RUN, None],
    ids=["allow", "deny-token", "deny-rule", "grant-dry-run", "exception"],
)
@pytest.mark.parametrize("trace", [None, 0xABC])
def test_schema_2_lines_leave_out_what_is_null_and_read_back_complete(
    decision: Decision | None, trace: int | None
) -> None:
    """Written lines (first sight and reused fixed part alike) carry no null and no empty
    grants, validate against schema 2, and read back (read_line) to the complete line, which
    has schema 1's shape."""
    log = DecisionLog(io.StringIO())
    for _ in range(3):
        entry = (NOW, ctx(), decision, DECISION_ID, 1234, trace, None)
        raw = json.loads(log.format(entry))
        VALIDATOR.validate(raw)
        assert None not in raw.values() and raw.get("grants") != []
        assert raw == compact(decision_line(entry, subject_view(None)))
        complete = read_line(log.format(entry))
        assert complete == decision_line(entry, subject_view(None))
        V1_VALIDATOR.validate({**complete, "schema": 1})


def test_read_line_leaves_other_kinds_alone() -> None:
    assert read_line(b'{"kind":"log","message":"m"}') == {"kind": "log", "message": "m"}


def test_drops_are_logged_once_per_episode(caplog: pytest.LogCaptureFixture) -> None:
    """The first dropped line of an episode is logged, the others only counted."""
    stream = BlockedStream()
    dropped = Dropped()
    log = DecisionLog(stream, dropped=dropped.counter, queue_size=16)
    log.start()
    try:
        with caplog.at_level("WARNING", logger="ztauthz.decision_log"):
            log.record(NOW, ctx(), DENY_TOKEN, "0" * 32, 1)
            assert stream.entered.wait(5)  # the writer is stuck writing that line
            for i in range(16 + 5):
                log.record(NOW, ctx(), DENY_TOKEN, f"{i + 1:032x}", 1)
            assert dropped.count == 5
            assert len([r for r in caplog.records if "dropping lines" in r.getMessage()]) == 1
    finally:
        stream.release.set()
        log.close()


def test_the_schema_admits_every_status_a_reason_has() -> None:
    """One definition: the statuses a decision can have are app/reasons.py's; schema 2 lists
    them all (a new status would otherwise fail validation only where a live stack meets it)."""
    statuses = {status_of(reason) for reason in Reason}
    schema = json.loads(SCHEMA_FILE.read_text())
    assert set(schema["properties"]["status"]["enum"]) == statuses


@pytest.mark.parametrize("breaker", ["\u0085", "\u2028", "\u2029"], ids=["nel", "ls", "ps"])
def test_a_line_break_other_than_newline_stays_inside_its_line(breaker: str) -> None:
    """A claim or a request field holding NEL, LINE SEPARATOR or PARAGRAPH SEPARATOR (JSON lets
    them stand raw, and str.splitlines or a JavaScript reader splits there) is written escaped:
    every reader sees one line per decision, and it parses back to the same values."""
    stream = io.StringIO()
    log = DecisionLog(stream)
    odd = Decision(True, Reason.ALLOWED, DECISION_ID, VERSION, f"r{breaker}", "p", principal())
    for _ in range(2):  # first sight, then the kept fixed part
        log.record(NOW, ctx(f"/x{breaker}y"), odd, DECISION_ID, 1)
    log.record_line({"kind": "revocation", "reason": f"a{breaker}b"})
    text = stream.getvalue()
    assert breaker not in text
    lines = text.splitlines()
    assert len(lines) == 3
    assert [json.loads(written)["rule"] for written in lines[:2]] == [f"r{breaker}"] * 2
    assert json.loads(lines[0])["path"] == f"/x{breaker}y"
    assert json.loads(lines[2])["reason"] == f"a{breaker}b"


@pytest.mark.parametrize("subject", [subject_view(None), HASHED], ids=["plain", "hashed"])
def test_a_line_orjson_cannot_write_is_still_written(subject: Any) -> None:
    """A string orjson refuses (a lone surrogate) never costs the decision its line."""
    stream = io.StringIO()
    log = DecisionLog(stream, subject=subject)
    odd = Decision(True, Reason.ALLOWED, DECISION_ID, VERSION, "r\ud800", "p", principal("\udc00"))
    for _ in range(3):  # first sight, then the kept fixed part
        log.record(NOW, ctx("/x\ud800"), odd, DECISION_ID, 1)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    for written in lines:
        out = json.loads(written)
        assert out["decision_id"] == DECISION_ID and out["reason"] == "allowed"
        assert out["rule"] == "r\ud800"
