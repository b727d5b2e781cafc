"""Telemetry of real checks: the real pipeline (Runtime with keys from an in-process dev issuer,
the integration policies) behind ``Checker``, with spans kept by the SDK's in-memory exporter,
the decision log and the JSON logs captured, and secrets pushed through every path."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import jwt
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from app.check import Checker
from app.decision import Decision
from app.dev.issuer import create_issuer_app
from app.dev.tokens import tamper_signature
from app.identity.verify import TokenVerifier
from app.request import RequestContext, make_context
from app.settings import Settings
from app.state import Runtime
from app.telemetry.decision_log import SCHEMA_FILE, read_line
from app.telemetry.hub import Telemetry
from app.telemetry.logging import JsonFormatter
from app.telemetry.subject import subject_view
from app.telemetry.tracing import Tracing
from tests.unit.dev.dev_helpers import reader_token, serving, shared_keys
from tests.unit.identity.identity_support import eventually

POLICIES = Path(__file__).resolve().parents[2] / "integration" / "policies"
AUDIENCE = "https://api.example.com"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
HASH_KEY = "telemetry-test-hash-key-0123456789"
VALIDATOR = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))


@pytest.fixture(scope="module")
def issuer() -> Iterator[str]:
    with serving(lambda url: create_issuer_app(shared_keys(), url)) as url:
        yield url


@dataclass
class Harness:
    runtime: Runtime
    checker: Checker
    exporter: InMemorySpanExporter | None
    decision_stream: io.StringIO
    log_stream: io.StringIO
    issuer: str

    def token(self, **overrides: Any) -> str:
        return reader_token(self.issuer, **overrides)

    async def check(
        self, path: str = "/invoices", method: str = "GET", **headers: str
    ) -> tuple[RequestContext, Decision]:
        ctx = make_context(method, "api.example.com:8443", path, headers)
        return ctx, await self.checker.check(ctx)

    def spans(self) -> list[ReadableSpan]:
        assert self.exporter is not None
        return list(self.exporter.get_finished_spans())

    def decisions(self) -> list[dict[str, Any]]:
        self.runtime.telemetry.decision_log.flush()
        lines = self.decision_stream.getvalue().splitlines()
        return [read_line(line) for line in lines]  # every field present, as written or not

    def logs(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_stream.getvalue().splitlines()]


@asynccontextmanager
async def harness(
    issuer: str, *, tracing: bool = True, hash_subjects: bool = False, **settings: Any
) -> AsyncIterator[Harness]:
    telemetry_settings: dict[str, Any] = {}
    if hash_subjects:
        telemetry_settings["subject_hash_key_env"] = "SUBJECT_HASH_KEY"
    config = Settings.model_validate(
        {
            "issuers": [
                {"issuer": issuer, "audiences": [AUDIENCE], "jwks": {"fetch_timeout": "1s"}}
            ],
            "policies": POLICIES,
            "telemetry": telemetry_settings,
            **settings,
        }
    )
    exporter = InMemorySpanExporter() if tracing else None
    provider = None
    if exporter is not None:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    decisions = io.StringIO()
    telemetry = Telemetry.create(
        config,
        tracing=Tracing(provider),
        stream=decisions,
        environ={"SUBJECT_HASH_KEY": HASH_KEY},
    )
    logs = io.StringIO()
    handler = logging.StreamHandler(logs)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("ztauthz")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        async with Runtime(config, telemetry=telemetry) as runtime:
            await eventually(runtime.is_ready)
            yield Harness(runtime, Checker(runtime), exporter, decisions, logs, issuer)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def by_name(spans: list[ReadableSpan]) -> dict[str, ReadableSpan]:
    found = {span.name: span for span in spans}
    assert len(found) == len(spans), [s.name for s in spans]
    return found


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    context = span.get_span_context()
    assert context is not None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


async def test_the_check_span_continues_the_callers_trace(issuer: str) -> None:
    async with harness(issuer) as h:
        _, decision = await h.check(
            "/invoices?access_token=nope",
            authorization=f"Bearer {h.token()}",
            traceparent=TRACEPARENT,
            **{"x-ztauthz-client-address": "203.0.113.7"},
        )
        spans = by_name(h.spans())
        (line,) = h.decisions()
    assert decision.allow
    check = spans["ztauthz.check"]
    assert set(spans) == {"ztauthz.check", "ztauthz.verify_token", "ztauthz.evaluate_policy"}
    trace_id, check_id = hex_ids(check)
    assert trace_id == TRACE_ID
    assert check.parent is not None and f"{check.parent.span_id:016x}" == PARENT_ID
    assert check.kind is SpanKind.SERVER  # no transport span around it: it is the server side
    for step in ("ztauthz.verify_token", "ztauthz.evaluate_policy"):
        parent = spans[step].parent
        assert parent is not None and f"{parent.span_id:016x}" == check_id
        assert hex_ids(spans[step])[0] == TRACE_ID
    assert dict(check.attributes or {}) == {
        "http.request.method": "GET",
        "url.path": "/invoices",
        "server.address": "api.example.com",
        "server.port": 8443,
        "client.address": "203.0.113.7",
        "ztauthz.transport": "http",
        "ztauthz.decision": "allow",
        "ztauthz.reason": "allowed",
        "ztauthz.decision_id": decision.decision_id,
        "ztauthz.policy_version": decision.policy_version,
        "ztauthz.rule": "invoices-read",
        "ztauthz.policy": "integration",
        "enduser.id": "alice",
        "ztauthz.issuer": issuer,
        "http.response.status_code": 200,
    }
    assert check.status.status_code is StatusCode.UNSET
    assert (line["trace_id"], line["span_id"]) == (TRACE_ID, check_id)
    assert line["decision_id"] == decision.decision_id


async def test_token_failures_mark_the_verify_span_and_correlate_the_log_line(
    issuer: str,
) -> None:
    async with harness(issuer) as h:
        expired = h.token(now=time.time() - 3600)
        _, decision = await h.check(authorization=f"Bearer {expired}", traceparent=TRACEPARENT)
        spans = by_name(h.spans())
        refused = [entry for entry in h.logs() if entry["message"].startswith("token refused")]
    assert decision.reason.value == "token_expired"
    assert "ztauthz.evaluate_policy" not in spans
    verify = spans["ztauthz.verify_token"]
    assert dict(verify.attributes or {}) == {"ztauthz.reason": "token_expired"}
    (entry,) = refused
    assert entry["decision_id"] == decision.decision_id
    assert (entry["trace_id"], entry["span_id"]) == hex_ids(verify)
    assert spans["ztauthz.check"].attributes is not None
    assert spans["ztauthz.check"].attributes["http.response.status_code"] == 401


async def test_subjects_are_hashed_in_spans_and_logs_when_configured(issuer: str) -> None:
    async with harness(issuer, hash_subjects=True) as h:
        await h.check(authorization=f"Bearer {h.token(subject='alice-secret-name')}")
        spans = by_name(h.spans())
        (line,) = h.decisions()
    expected = subject_view(HASH_KEY.encode())("alice-secret-name")
    assert line["subject"] == expected
    assert spans["ztauthz.check"].attributes is not None
    assert spans["ztauthz.check"].attributes["enduser.id"] == expected
    assert "alice-secret-name" not in json.dumps(line)


@pytest.mark.parametrize(
    ("headers", "trace_id"),
    [
        ({"traceparent": TRACEPARENT}, TRACE_ID),
        ({"b3": f"{TRACE_ID}-{PARENT_ID}-1"}, TRACE_ID),
        ({}, None),
    ],
    ids=["w3c", "b3", "none"],
)
async def test_without_tracing_the_log_keeps_the_callers_trace_id(
    issuer: str, headers: dict[str, str], trace_id: str | None
) -> None:
    async with harness(issuer, tracing=False) as h:
        await h.check("/public/page", **headers)
        (line,) = h.decisions()
    assert (line["trace_id"], line["span_id"]) == (trace_id, None)


class ExplodingKeys:
    """A key source that fails the way a bug would: with an unexpected exception."""

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def is_ready(self, now: float) -> bool:
        return True

    async def get_key(self, kid: str | None, alg: str, now: float) -> jwt.PyJWK:
        raise RuntimeError("the key store exploded")


SECRET_COOKIE = "session=cookie-secret-7f3a9b"
SECRET_QUERY = "access_token=query-secret-c41d"
SECRET_HEADER = "x-api-key-secret-d0e1"
BASIC = "Basic YmFzaWMtc2VjcmV0LTk5Om5vcGU="


async def test_no_token_cookie_or_secret_reaches_any_log_line_or_span(issuer: str) -> None:
    async with harness(issuer, token={"cookie": "session_token"}) as h:
        good = h.token(subject="mallory")
        tokens = {
            "valid": good,
            "expired": h.token(subject="mallory", now=time.time() - 3600),
            "tampered": tamper_signature(h.token(subject="mallory")),
            "garbage": "garbage-token-secret-5e6f",
            "cookie": h.token(subject="mallory", groups=["engineering"]),
        }
        base = {"cookie": SECRET_COOKIE, "x-api-key": SECRET_HEADER, "traceparent": TRACEPARENT}
        path = f"/invoices?{SECRET_QUERY}"
        checks = [
            await h.check(path, authorization=f"Bearer {tokens['valid']}", **base),
            await h.check(path, authorization=f"Bearer {tokens['expired']}", **base),
            await h.check(path, authorization=f"Bearer {tokens['tampered']}", **base),
            await h.check(path, authorization=f"Bearer {tokens['garbage']}", **base),
            await h.check(path, authorization=BASIC, **base),
            await h.check(
                path,
                **{**base, "cookie": f"{SECRET_COOKIE}; session_token={tokens['cookie']}"},
            ),
            await h.check(f"/public/%ff?{SECRET_QUERY}", **base),  # path rejected
            await h.check(path, **base),  # no token
        ]
        # The exceptions path: a bug deep in verification becomes internal_error.
        state = h.runtime.state
        broken = TokenVerifier(state.settings.issuers, {issuer: ExplodingKeys()}, 8192)
        h.runtime.state = dataclasses.replace(state, verifier=broken)
        checks.append(await h.check(path, authorization=f"Bearer {good}", **base))
        h.runtime.state = state
        decisions, logs, spans = h.decisions(), h.logs(), h.spans()

    reasons = [decision.reason.value for _, decision in checks]
    assert reasons == [
        "allowed",
        "token_expired",
        "token_signature_invalid",
        "token_malformed",
        "token_malformed",
        "no_matching_rule",
        "path_rejected",
        "token_missing",
        "internal_error",
    ]
    # Exactly one line per check, each valid, in order.
    assert [line["decision_id"] for line in decisions] == [d.decision_id for _, d in checks]
    for line in decisions:
        VALIDATOR.validate(line)
    failed = [span for span in spans if span.name == "ztauthz.check" and span.status.is_ok is False]
    assert len(failed) == 1 and failed[0].status.description == "internal_error"
    assert any(entry["message"].startswith("check failed") for entry in logs)

    secrets = [*tokens.values(), "cookie-secret-7f3a9b", "query-secret-c41d", SECRET_HEADER]
    secrets += [BASIC.split()[1], *(t.split(".")[2] for t in tokens.values() if "." in t)]
    exported = json.dumps(
        [
            {
                "name": span.name,
                "attributes": dict(span.attributes or {}),
                "events": [(e.name, dict(e.attributes or {})) for e in span.events],
                "status": span.status.description,
            }
            for span in spans
        ],
        default=str,
    )
    everything = {
        "decision log": json.dumps(decisions),
        "logs": json.dumps(logs),
        "spans": exported,
    }
    for where, text in everything.items():
        for secret in secrets:
            assert secret not in text, f"a secret reached the {where}"


def _signed_with_dev_key(payload: bytes) -> str:
    """A token signed with the dev issuer's key over exactly ``payload`` (any bytes)."""
    keys = shared_keys()
    header = json.dumps({"alg": "RS256", "kid": keys.rsa_kid, "typ": "JWT"}).encode()
    signing_input = f"{_b64(header)}.{_b64(payload)}"
    signature = jwt.get_algorithm_by_name("RS256").sign(signing_input.encode(), keys.rsa_key)
    return f"{signing_input}.{_b64(signature)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


async def test_every_decision_has_one_line_and_one_sample_that_agree(issuer: str) -> None:
    """The issue's lone-surrogate token crashed rendering after the metrics had counted an
    allow, and lost its line. Now it is refused, and every check, refused ones included,
    gives exactly one line and one metric sample, both saying what the response says."""
    async with harness(issuer, tracing=True, hash_subjects=True) as h:
        now = int(time.time())
        claims = {
            "iss": issuer,
            "aud": AUDIENCE,
            "sub": "PLACEHOLDER",
            "iat": now,
            "exp": now + 300,
            "groups": ["finance"],
            "scope": "invoices:read",
        }
        payload = json.dumps(claims).encode()
        surrogate = _signed_with_dev_key(payload.replace(b"PLACEHOLDER", b"\\ud800"))
        nested = _signed_with_dev_key(payload[:-1] + b', "x": ' + b"[" * 1000 + b"]" * 1000 + b"}")
        tab_scope = _signed_with_dev_key(
            payload.replace(b"invoices:read", b"openid\\tinvoices:read")
        )
        good = _signed_with_dev_key(payload.replace(b"PLACEHOLDER", b"alice"))
        checks = [
            await h.check(authorization=f"Bearer {token}")
            for token in (surrogate, nested, tab_scope, good)
        ]
        lines = h.decisions()
        counts = h.runtime.telemetry.metrics.checks.decisions
    reasons = [decision.reason.value for _, decision in checks]
    assert reasons == ["token_malformed", "token_malformed", "token_claims_invalid", "allowed"]
    assert [line["decision_id"] for line in lines] == [d.decision_id for _, d in checks]
    for line, (_, decision) in zip(lines, checks, strict=True):
        VALIDATOR.validate(line)
        assert line["reason"] == decision.reason.value
        assert line["status"] == decision.status
        assert line["decision"] == ("allow" if decision.allow else "deny")
    sampled = {reason.value: n for (reason, transport), n in counts.items() if n}
    assert sampled == {"token_malformed": 2, "token_claims_invalid": 1, "allowed": 1}
