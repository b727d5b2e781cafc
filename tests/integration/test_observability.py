"""Observability through real Envoy: one trace across Envoy and ztauthz, a decision log that
validates line for line and holds no secret, and /metrics with exactly the expected counts.

A stack of its own: ``ztauthz serve`` exports spans (OTLP/HTTP) to an in-process OTLP
receiver, and Envoy runs deploy/envoy/envoy-tracing.yaml with its Collector cluster pointed at
the same receiver (OTLP/HTTP too). A second Envoy runs the plain envoy.yaml in front of the same
ztauthz, to show the caller's W3C and B3 context reaching ztauthz untouched.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from app import __version__
from app.dev.envoy import envoy_command, write_envoy_config
from app.dev.ports import free_port
from app.dev.procs import HttpReady, ManagedProcess, ProcessGroup
from app.dev.stack import Reply, Stack, http_request, start_stack
from app.dev.stack_config import Ports
from app.dev.tokens import mint, tamper_signature
from app.reasons import Reason
from app.telemetry.decision_log import SCHEMA_FILE
from tests.unit.telemetry.otlp_support import ExportRequest, OtlpReceiver, ReceivedSpan, decode
from tests.unit.telemetry.otlp_support import otlp_receiver as run_receiver

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ENVOY_TRACING = ROOT / "deploy" / "envoy" / "envoy-tracing.yaml"
VALIDATOR = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
SERVER_KIND = 2  # OTLP Span.SpanKind SPAN_KIND_SERVER
JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]+\.")


@dataclass(frozen=True, slots=True)
class Observed:
    stack: Stack
    plain_envoy: int  # listener of an Envoy without tracing, in front of the same ztauthz
    receiver: OtlpReceiver

    def token(self, **overrides: Any) -> str:
        claims: dict[str, Any] = {
            "issuer": self.stack.issuer_url,
            "audience": self.stack.audience,
            "subject": "alice",
            "groups": ["finance"],
            "scopes": ["invoices:read"],
        }
        claims.update(overrides)
        return mint(self.stack.keys, **claims)

    def get(self, path: str, headers: Mapping[str, str] | None = None, **more: str) -> Reply:
        """GET ``path`` through the tracing Envoy."""
        return http_request(self.stack.ports.envoy, "GET", path, {**(headers or {}), **more})


def tracing_bootstrap(destination: Path, collector_port: int) -> Path:
    """envoy-tracing.yaml with its Collector on ``collector_port`` and spans flushed at once."""
    config = yaml.safe_load(ENVOY_TRACING.read_text(encoding="utf-8"))
    (cluster,) = [
        c for c in config["static_resources"]["clusters"] if c["name"] == "otel_collector"
    ]
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    endpoint["address"]["socket_address"]["port_value"] = collector_port
    config["layered_runtime"] = {
        "layers": [
            {
                "name": "test",
                "static_layer": {
                    "tracing.opentelemetry.min_flush_spans": 1,
                    "tracing.opentelemetry.flush_interval_ms": 100,
                },
            }
        ]
    }
    destination.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return destination


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with run_receiver() as running:
        yield running


@pytest.fixture(scope="module")
def observed(
    tmp_path_factory: pytest.TempPathFactory, child_env: dict[str, str], receiver: OtlpReceiver
) -> Iterator[Observed]:
    work = tmp_path_factory.mktemp("observed")
    config = yaml.safe_load((HERE / "ztauthz.yaml").read_text(encoding="utf-8"))
    config["token"] = {**config.get("token", {}), "cookie": "session_token"}
    env = {
        **child_env,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.http_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_SERVICE_NAME": "ztauthz",
    }
    env.pop("OTEL_PROPAGATORS", None)
    env.pop("OTEL_TRACES_SAMPLER", None)
    with ProcessGroup() as group:
        stack = start_stack(
            group,
            workdir=work,
            ports=Ports.ephemeral(),
            policies=HERE / "policies",
            config=config,
            envoy_template=tracing_bootstrap(work / "envoy-tracing.yaml", receiver.http_port),
            env=env,
        )
        listen, admin = free_port(), free_port()
        plain = write_envoy_config(
            work / "envoy-plain.yaml",
            listen_port=listen,
            admin_port=admin,
            authz_port=stack.ports.check,
            upstream_port=stack.ports.upstream,
        )
        group.start(
            ManagedProcess(
                "envoy-plain",
                envoy_command(plain),
                log_path=work / "logs" / "envoy-plain.log",
                ready=HttpReady(f"http://127.0.0.1:{admin}/ready"),
            )
        )
        yield Observed(stack, listen, receiver)


ENVOY_SPANS_WITHIN = 30.0


def new_trace() -> tuple[str, str]:
    return secrets.token_hex(16), secrets.token_hex(8)


def in_trace(trace_id: str) -> Callable[[list[ReceivedSpan]], list[ReceivedSpan]]:
    return lambda spans: [s for s in spans if s.trace_id == trace_id]


def wait_for_check(receiver: OtlpReceiver, trace_id: str, envoy: bool) -> list[ReceivedSpan]:
    def done(spans: list[ReceivedSpan]) -> bool:
        mine = in_trace(trace_id)(spans)
        names = {(s.service, s.name) for s in mine}
        has_envoy = any(service == "envoy" for service, _ in names)
        return ("ztauthz", "ztauthz.check") in names and (has_envoy or not envoy)

    # Envoy's OpenTelemetry tracer sends its spans every 5 s (flush_interval) or at 5 spans: on
    # two cores shared with the rest of the suite, one flush can come late; allow three.
    return in_trace(trace_id)(receiver.wait_for(done, timeout=ENVOY_SPANS_WITHIN))


def decision_id_of(reply: Reply) -> str:
    if reply.status == 200:
        headers = reply.json()["headers"]
        return str(headers["x-auth-decision-id"])
    return reply.headers["x-auth-decision-id"]


# --- traces -------------------------------------------------------------------------------------


def test_envoy_and_ztauthz_spans_form_one_trace_from_the_clients_traceparent(
    observed: Observed,
) -> None:
    trace_id, parent = new_trace()
    reply = observed.get(
        "/invoices?page=2",
        Authorization=f"Bearer {observed.token()}",
        traceparent=f"00-{trace_id}-{parent}-01",
    )
    assert reply.status == 200
    spans = wait_for_check(observed.receiver, trace_id, envoy=True)
    by_id = {s.span_id: s for s in spans}
    (check,) = [s for s in spans if s.name == "ztauthz.check"]
    # ztauthz.check (ztauthz's server span) <- Envoy's ext_authz span <- ... <- the client
    assert (check.service, check.kind) == ("ztauthz", SERVER_KIND)
    caller = by_id[str(check.parent_span_id)]
    assert caller.service == "envoy"
    chain = [caller]
    while chain[-1].parent_span_id in by_id:
        chain.append(by_id[str(chain[-1].parent_span_id)])
    assert chain[-1].parent_span_id == parent  # Envoy's first span continues the client's
    children = {s.name for s in spans if s.parent_span_id == check.span_id}
    assert children == {"ztauthz.verify_token", "ztauthz.evaluate_policy"}
    assert check.attributes["ztauthz.decision"] == "allow"
    assert check.attributes["ztauthz.rule"] == "invoices-read"
    assert check.attributes["url.path"] == "/invoices"
    assert check.attributes["enduser.id"] == "alice"
    assert check.attributes["ztauthz.decision_id"] == decision_id_of(reply)
    assert "page=2" not in json.dumps(check.attributes)


@pytest.mark.parametrize("style", ["traceparent", "b3", "b3multi"])
def test_the_callers_context_reaches_ztauthz_through_plain_envoy(
    observed: Observed, style: str
) -> None:
    trace_id, parent = new_trace()
    headers = {
        "traceparent": {"traceparent": f"00-{trace_id}-{parent}-01"},
        "b3": {"b3": f"{trace_id}-{parent}-1"},
        "b3multi": {"X-B3-TraceId": trace_id, "X-B3-SpanId": parent, "X-B3-Sampled": "1"},
    }[style]
    reply = http_request(observed.plain_envoy, "GET", "/public/page", headers)
    assert reply.status == 200
    spans = wait_for_check(observed.receiver, trace_id, envoy=False)
    (check,) = [s for s in spans if s.name == "ztauthz.check"]
    assert check.kind == SERVER_KIND
    assert check.parent_span_id == parent  # the client's own span: Envoy did not trace here
    assert check.attributes["ztauthz.reason"] == Reason.ALLOWED_ANONYMOUS.value


# --- decision log -------------------------------------------------------------------------------


def read_log(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(decision lines, other lines) of a ztauthz log; every line must be a JSON object."""
    decisions: list[dict[str, Any]] = []
    others: list[dict[str, Any]] = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except ValueError:
            raise AssertionError(f"{path}:{number} is not JSON: {text[:200]}") from None
        assert isinstance(line, dict) and line.get("kind") in ("decision", "log"), text[:200]
        (decisions if line["kind"] == "decision" else others).append(line)
    return decisions, others


def validate_decision_log(path: Path) -> list[dict[str, Any]]:
    decisions, _ = read_log(path)
    for line in decisions:
        errors = sorted(VALIDATOR.iter_errors(line), key=str)
        assert not errors, f"{line['decision_id']}: {errors[0].message}"
    text = path.read_text(encoding="utf-8")
    assert not JWT_SHAPE.search(text), "a token reached the log"
    assert "[redacted" not in text, "something tried to log a credential"
    ids = [line["decision_id"] for line in decisions]
    assert len(ids) == len(set(ids)), "a check was logged twice"
    return decisions


def wait_for_lines(path: Path, ids: list[str], timeout: float = 5.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        decisions, _ = read_log(path)
        logged = {line["decision_id"] for line in decisions}
        if set(ids) <= logged or time.monotonic() > deadline:
            return decisions
        time.sleep(0.05)


SECRET_COOKIE = "cookie-secret-8e1f0a"
SECRET_QUERY = "query-secret-3b7c"
SECRET_HEADER = "header-secret-5d2e"
BASIC_SECRET = "YmFzaWMtc2VjcmV0LWE3Onh5eg=="


def test_decision_log_validates_line_for_line_and_holds_no_secret(observed: Observed) -> None:
    stack = observed.stack
    tokens = {
        "valid": observed.token(subject="mallory"),
        "expired": observed.token(subject="mallory", now=time.time() - 3600),
        "tampered": tamper_signature(observed.token(subject="mallory")),
        "wrong-aud": observed.token(audience="https://other.example.com"),
        "cookie": observed.token(subject="mallory", groups=["engineering"]),
        "garbage": "garbage-token-secret-9a8b",
    }
    base = {
        "Cookie": f"theme=dark; sid={SECRET_COOKIE}",
        "X-Api-Key": SECRET_HEADER,
        "X-Forwarded-For": "203.0.113.50",
    }
    query = f"?access_token={SECRET_QUERY}"
    trace_id, parent = new_trace()
    sent: list[tuple[Reply, str]] = []
    for name in ("valid", "expired", "tampered", "wrong-aud", "garbage"):
        reply = observed.get(f"/invoices{query}", base, Authorization=f"Bearer {tokens[name]}")
        sent.append((reply, name))
    cookie = f"{base['Cookie']}; session_token={tokens['cookie']}"
    sent.append((observed.get(f"/invoices{query}", {**base, "Cookie": cookie}), "cookie"))
    sent.append((observed.get(f"/invoices{query}", Authorization=f"Basic {BASIC_SECRET}"), "basic"))
    sent.append((observed.get(f"/public/%ff{query}", base), "path"))
    traced = observed.get(
        f"/internal/x{query}",
        Authorization=f"Bearer {tokens['valid']}",
        traceparent=f"00-{trace_id}-{parent}-01",
    )
    sent.append((traced, "internal"))
    statuses = [(name, reply.status) for reply, name in sent]
    assert statuses == [
        ("valid", 200),
        ("expired", 401),
        ("tampered", 401),
        ("wrong-aud", 401),
        ("garbage", 401),
        ("cookie", 403),
        ("basic", 401),
        ("path", 400),
        ("internal", 403),
    ]
    ids = [decision_id_of(reply) for reply, _ in sent]

    path = stack.log("ztauthz")
    decisions = wait_for_lines(path, ids)
    validate_decision_log(path)
    mine = {line["decision_id"]: line for line in decisions if line["decision_id"] in ids}
    assert len(mine) == len(ids)  # exactly one line per check
    assert [mine[i]["status"] for i in ids] == [status for _, status in statuses]
    assert mine[ids[0]]["client_ip"] == "127.0.0.1"  # the peer Envoy saw, not the claimed XFF
    assert mine[ids[0]]["path"] == "/invoices" and mine[ids[0]]["subject"] == "mallory"
    assert mine[ids[-1]]["trace_id"] == trace_id and mine[ids[-1]]["rule"] == "internal-never"

    # No secret in the log (decision lines and every other line) nor in ztauthz's spans: once
    # ztauthz's spans of the last check are in (Envoy's are not scanned here; that a trace runs
    # through Envoy is the test above).
    wait_for_check(observed.receiver, trace_id, envoy=False)
    ztauthz_payloads = [
        body
        for body in observed.receiver.payloads()
        if any(s.service == "ztauthz" for s in decode(ExportRequest.FromString(body)))
    ]
    secrets_sent = [
        *tokens.values(),
        SECRET_COOKIE,
        SECRET_QUERY,
        SECRET_HEADER,
        BASIC_SECRET,
        *(t.split(".")[2] for t in tokens.values() if t.count(".") == 2),
    ]
    log_text = path.read_bytes()
    for secret in secrets_sent:
        assert secret.encode() not in log_text, "a secret reached ztauthz's log"
        for body in ztauthz_payloads:
            assert secret.encode() not in body, "a secret reached ztauthz's spans"


# --- metrics ------------------------------------------------------------------------------------


Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(stack: Stack) -> Series:
    reply = http_request(stack.ports.admin, "GET", "/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(reply.body.decode())
        for sample in family.samples
    }


def deltas(before: Series, after: Series, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        labels: value - before.get((metric, labels), 0.0)
        for (metric, labels), value in after.items()
        if metric == name and value != before.get((metric, labels), 0.0)
    }


def labels(**values: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(values.items()))


def test_metrics_show_exactly_the_expected_counts(observed: Observed) -> None:
    stack = observed.stack
    good = observed.token()
    expired = observed.token(now=time.time() - 3600)
    sequence: list[tuple[Mapping[str, str], str, int]] = [
        ({"Authorization": f"Bearer {good}"}, "/invoices", 200),
        ({"Authorization": f"Bearer {good}"}, "/invoices/1", 200),
        ({"Authorization": f"Bearer {good}"}, "/invoices/2", 200),
        ({}, "/public/page", 200),
        ({}, "/invoices", 401),
        ({}, "/invoices", 401),
        ({"Authorization": f"Bearer {expired}"}, "/invoices", 401),
        ({"Authorization": f"Bearer {tamper_signature(good)}"}, "/invoices", 401),
        ({"Authorization": f"Bearer {good}"}, "/internal/metrics", 403),
        ({}, "/public/%ff", 400),
    ]
    before = scrape(stack)
    for headers, path, status in sequence:
        assert observed.get(path, headers).status == status, path
    after = scrape(stack)

    def decided(decision: str, reason: Reason) -> tuple[tuple[str, str], ...]:
        return labels(decision=decision, reason=reason.value, transport="http")

    assert deltas(before, after, "ztauthz_decisions_total") == {
        decided("allow", Reason.ALLOWED): 3,
        decided("allow", Reason.ALLOWED_ANONYMOUS): 1,
        decided("deny", Reason.TOKEN_MISSING): 2,
        decided("deny", Reason.TOKEN_EXPIRED): 1,
        decided("deny", Reason.TOKEN_SIGNATURE_INVALID): 1,
        decided("deny", Reason.DENIED_BY_RULE): 1,
        decided("deny", Reason.PATH_REJECTED): 1,
    }
    assert deltas(before, after, "ztauthz_token_failures_total") == {
        labels(reason="token_expired"): 1,
        labels(reason="token_signature_invalid"): 1,
    }
    assert deltas(before, after, "ztauthz_check_duration_seconds_count") == {
        labels(transport="http"): len(sequence)
    }
    assert after[("ztauthz_decision_log_dropped_total", ())] == 0
    ready = json.loads(http_request(stack.ports.admin, "GET", "/readyz").body)
    build = labels(policy_version=ready["policy_version"], version=__version__)
    assert after[("ztauthz_build_info", build)] == 1
    assert after[("ztauthz_policy_rules", ())] == ready["rules"]
    issuer = stack.issuer_url
    assert after[("ztauthz_jwks_refresh_total", labels(issuer=issuer, outcome="success"))] >= 1
    assert after[("ztauthz_jwks_refresh_total", labels(issuer=issuer, outcome="failure"))] == 0
    assert 0 <= after[("ztauthz_jwks_key_age_seconds", labels(issuer=issuer))] < 600
    assert after[("ztauthz_events_total", labels(event="config_loaded"))] == 1
    assert after[("ztauthz_policy_reloads_total", labels(outcome="failure"))] == 0
    # Label values come from closed sets only: no subject, no path.
    assert not any("alice" in str(key) or "/invoices" in str(key) for key in after)


# --- the shared stacks' logs, over the whole integration run ----------------------------------


@pytest.fixture(scope="session")
def shared_log(stack: Stack) -> Iterator[Path]:
    """The shared stack's ztauthz log; validated again when the session ends, so every check
    of the integration run is held to the schema."""
    path = stack.log("ztauthz")
    yield path
    validate_decision_log(path)


def test_the_shared_stack_decision_log_validates(shared_log: Path, stack: Stack) -> None:
    reply = http_request(stack.ports.envoy, "GET", "/invoices", {"Cookie": f"a={SECRET_COOKIE}"})
    assert reply.status == 401
    decisions = wait_for_lines(shared_log, [reply.headers["x-auth-decision-id"]])
    assert decisions, "the shared stack logged no decision"
    validate_decision_log(shared_log)
