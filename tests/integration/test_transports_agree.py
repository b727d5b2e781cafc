"""HTTP and gRPC ext_authz side by side: the same request through both Envoys gets the same answer.

The parametrized suite already holds both transports to the same expectations; this compares
them directly, case by case: status, reason, challenge, what reached the upstream (path and
x-auth-* identity headers), and the decision-log line. Only what is per check or per stack may
differ: decision ids, times, trace ids, the dev issuer's URL (each stack has its own issuer) and
the transport label.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from app.dev.stack import Reply, Stack, http_request
from app.dev.tokens import forge_alg_none, mint, standard_claims, tamper_signature

pytestmark = pytest.mark.integration

ISSUER = "<issuer>"
FORGED = {"x-auth-subject": "admin", "x-auth-groups": "admins", "x-auth-rule": "forged"}


@dataclass(frozen=True, slots=True)
class Case:
    id: str
    method: str
    path: str
    token: Callable[[Stack], str] | None = None
    headers: tuple[tuple[str, str], ...] = ()


def _token(**changes: Any) -> Callable[[Stack], str]:
    def build(stack: Stack) -> str:
        claims: dict[str, Any] = {
            "issuer": stack.issuer_url,
            "audience": stack.audience,
            "subject": "alice",
            "groups": ["finance"],
            "scopes": ["invoices:read"],
        }
        claims.update(changes)
        return mint(stack.keys, **claims)

    return build


CASES = [
    Case("allowed-rs256", "GET", "/invoices", _token()),
    Case("allowed-es256-query", "GET", "/invoices/7?page=2", _token(alg="ES256")),
    Case("allowed-delete", "DELETE", "/invoices/42", _token(scopes=[])),
    Case("anonymous-forged-headers", "GET", "/public/page", None, tuple(FORGED.items())),
    Case("authenticated-forged-headers", "GET", "/invoices", _token(), tuple(FORGED.items())),
    Case("missing-token", "GET", "/invoices"),
    Case("expired", "GET", "/invoices", _token(now=time.time() - 3600)),
    Case("wrong-audience", "GET", "/invoices", _token(audience="https://other.example")),
    Case(
        "alg-none",
        "GET",
        "/public/page",
        lambda s: forge_alg_none(
            standard_claims(issuer=s.issuer_url, audience=s.audience, subject="mallory")
        ),
    ),
    Case("bad-signature", "GET", "/invoices", lambda s: tamper_signature(_token()(s))),
    Case("denied-by-rule", "DELETE", "/invoices/42", _token(groups=["finance", "contractors"])),
    Case("internal-never", "GET", "/internal/metrics", _token()),
    Case("no-matching-rule", "GET", "/invoices", _token(groups=["engineering"])),
    Case("normalized-dotdot", "GET", "/public/../invoices", _token()),
    Case("path-rejected", "GET", "/public/%ff"),
    Case("method-not-allowed", "PROPFIND", "/invoices", _token()),  # decided and logged: 405
    Case("envoy-rejects-encoded-slash", "GET", "/public/..%2Finvoices"),
    Case("non-bearer", "GET", "/invoices", None, (("Authorization", "Basic YWxpY2U6eA=="),)),
]


def _send(stack: Stack, case: Case) -> Reply:
    headers = {"Host": "api.example.com", **dict(case.headers)}  # the same on both stacks
    if case.token is not None:
        headers["Authorization"] = f"Bearer {case.token(stack)}"
    return http_request(stack.ports.envoy, case.method, case.path, headers)


def _decision_line(stack: Stack, decision_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5.0
    while True:
        for line in stack.log("ztauthz").read_text(encoding="utf-8").splitlines():
            if decision_id in line and line.startswith("{"):
                entry: dict[str, Any] = json.loads(line)
                if entry.get("decision_id") == decision_id and entry.get("kind") == "decision":
                    return entry
        assert time.monotonic() < deadline, f"decision {decision_id} not logged"
        time.sleep(0.05)


PER_CHECK = {"decision_id", "time", "latency_us", "trace_id", "span_id", "transport"}


def _observed(stack: Stack, reply: Reply) -> dict[str, Any]:
    """Everything about the answer that must not depend on the transport."""
    body = reply.json()
    upstream = body if isinstance(body, dict) and "header_list" in body else None
    out: dict[str, Any] = {
        "status": reply.status,
        "www-authenticate": reply.headers.get("www-authenticate"),
        "content-type": reply.headers.get("content-type") if upstream is None else None,
        "reached_upstream": upstream is not None,
    }
    decision_id: str | None = None
    if upstream is None:
        out["body"] = (
            {k: v for k, v in body.items() if k != "decision_id"}
            if isinstance(body, dict)
            else reply.body
        )
        if isinstance(body, dict):
            decision_id = body["decision_id"]
            assert reply.headers["x-auth-decision-id"] == decision_id
    else:
        out["upstream_path"] = upstream["raw_path"] + (
            f"?{upstream['query']}" if upstream["query"] else ""
        )
        identity = [[n, v] for n, v in upstream["header_list"] if n.startswith("x-auth-")]
        decision_id = next(v for n, v in identity if n == "x-auth-decision-id")
        out["identity"] = sorted(
            [n, ISSUER if n == "x-auth-issuer" else v]
            for n, v in identity
            if n != "x-auth-decision-id"
        )
    if decision_id is not None:
        line = _decision_line(stack, decision_id)
        if line.get("issuer") is not None:
            line["issuer"] = ISSUER
        out["log"] = {k: v for k, v in line.items() if k not in PER_CHECK}
        out["log_transport"] = line["transport"]
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_http_and_grpc_answer_alike(http_stack: Stack, grpc_stack: Stack, case: Case) -> None:
    over_http = _observed(http_stack, _send(http_stack, case))
    over_grpc = _observed(grpc_stack, _send(grpc_stack, case))
    if "log" in over_http:
        assert (over_http.pop("log_transport"), over_grpc.pop("log_transport")) == (
            "http",
            "grpc",
        )
    assert over_grpc == over_http


def test_a_method_no_policy_names_is_a_logged_405_on_both(
    http_stack: Stack, grpc_stack: Stack
) -> None:
    """PROPFIND passes Envoy; ztauthz denies it as a decision (405, Allow, a decision-log line)
    whichever transport asks, instead of an HTTP-only 405 that no log or metric saw."""
    case = next(c for c in CASES if c.id == "method-not-allowed")
    for stack in (http_stack, grpc_stack):
        observed = _observed(stack, _send(stack, case))
        assert observed["status"] == 405
        assert observed["body"]["reason"] == "method_not_allowed"
        assert (observed["log"]["reason"], observed["log"]["status"]) == ("method_not_allowed", 405)
