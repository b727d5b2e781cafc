"""Path handling through Envoy: the upstream only ever receives a path the policy allowed.

Who does what (observed with the shipped bootstrap):

* Envoy (``normalize_path``, ``merge_slashes``) resolves ``.``/``..`` segments, including
  percent-encoded ones (``%2e%2e``), merges ``//``, turns ``\\`` into ``/``, decodes
  percent-encoded unreserved characters (``%70`` -> ``p``) and drops ``..;`` segments, *before*
  ext_authz: ztauthz is asked about the normalized path and the upstream gets the same one.
* Envoy (``path_with_escaped_slashes_action: REJECT_REQUEST``) answers 400 itself for ``%2F``
  and ``%5C``, and for ``%00``: ztauthz is never asked.
* ztauthz refuses what Envoy passes but cannot be matched safely (``%ff`` not UTF-8, ``%01``
  control characters, malformed ``%zz``, double encoding ``%252e``): 400 ``path_rejected``.
* ztauthz ignores one trailing slash when matching; the upstream still sees it.

For every allowed case the test also reads ztauthz's decision log and checks that the path
ztauthz authorized is byte-for-byte the path the upstream received (the query is passed on as sent,
and is not part of the decision).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from app.dev.stack import Reply, Stack, http_request

pytestmark = pytest.mark.integration

Mint = Callable[..., str]


@dataclass(frozen=True, slots=True)
class Case:
    id: str
    path: str
    authenticated: bool
    status: int
    upstream_path: str | None = None  # the raw path (query included) the upstream receives
    reason: str | None = None  # ztauthz's reason, when ztauthz answered
    by_envoy: bool = False  # Envoy refused the request itself (ztauthz never asked)


CASES = [
    # dot segments: resolved by Envoy before anyone decides
    Case("dotdot-anonymous", "/public/../invoices", False, 401, reason="token_missing"),
    Case("dotdot-authenticated", "/public/../invoices", True, 200, "/invoices"),
    Case("encoded-dotdot", "/public/%2e%2e/invoices", False, 401, reason="token_missing"),
    Case("encoded-dotdot-upper", "/public/%2E%2E/internal/x", False, 403, reason="denied_by_rule"),
    Case("half-encoded-dotdot", "/public/.%2e/invoices", True, 200, "/invoices"),
    Case("dotdot-semicolon", "/public/..;/invoices", False, 401, reason="token_missing"),
    Case("dot", "/./invoices", True, 200, "/invoices"),
    Case("dotdot-out-of-internal", "/internal/../public/x", False, 200, "/public/x"),
    Case("backslash-dotdot", "/public\\..\\invoices", False, 401, reason="token_missing"),
    # slashes
    Case("double-slash-anonymous", "//invoices", False, 401, reason="token_missing"),
    Case("double-slash-authenticated", "//invoices", True, 200, "/invoices"),
    Case("inner-double-slash", "/public//x", False, 200, "/public/x"),
    Case("trailing-slash", "/invoices/", True, 200, "/invoices/"),
    Case("trailing-slash-anonymous", "/invoices/", False, 401, reason="token_missing"),
    # escaped separators: Envoy refuses them itself
    Case("encoded-slash", "/public/..%2Finvoices", False, 400, by_envoy=True),
    Case("encoded-slash-lower", "/public%2f..%2finvoices", True, 400, by_envoy=True),
    Case("encoded-backslash", "/public/%5C..%5Cinvoices", False, 400, by_envoy=True),
    Case("encoded-nul", "/public/x%00", False, 400, by_envoy=True),
    # what Envoy passes and ztauthz refuses
    Case("not-utf8", "/public/%ff", False, 400, reason="path_rejected"),
    Case("encoded-control", "/public/%01", False, 400, reason="path_rejected"),
    Case("malformed-escape", "/public/%zz", False, 400, reason="path_rejected"),
    Case(
        "double-encoded-dotdot", "/public/%252e%252e/invoices", False, 400, reason="path_rejected"
    ),
    Case("double-encoded-slash", "/public/..%252Finvoices", False, 400, reason="path_rejected"),
    # encodings that are not separators
    Case("encoded-unreserved", "/%70ublic/x", False, 200, "/public/x"),
    Case(
        "query-not-normalized",
        "/public/x?next=/../invoices",
        False,
        200,
        "/public/x?next=/../invoices",
    ),
    Case("case-sensitive", "/PUBLIC/x", False, 401, reason="token_missing"),
]


def _authorized_path(stack: Stack, decision_id: str) -> str:
    """The path ztauthz decided on, from its decision log (written as each check ends)."""
    deadline = time.monotonic() + 5.0
    while True:
        for line in stack.log("ztauthz").read_text(encoding="utf-8").splitlines():
            if decision_id in line and line.startswith("{"):
                entry = json.loads(line)
                if entry.get("decision_id") == decision_id and "path" in entry:
                    return str(entry["path"])
        if time.monotonic() > deadline:
            raise AssertionError(f"decision {decision_id} is not in the decision log")
        time.sleep(0.05)


def _upstream_raw_path(reply: Reply) -> str | None:
    body = reply.json()
    if not (isinstance(body, dict) and "header_list" in body):
        return None
    query = body["query"]
    return str(body["raw_path"]) + (f"?{query}" if query else "")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_upstream_only_receives_what_the_policy_allowed(
    stack: Stack, token: Mint, case: Case
) -> None:
    headers = {"Authorization": f"Bearer {token()}"} if case.authenticated else {}
    reply = http_request(stack.ports.envoy, "GET", case.path, headers)
    assert reply.status == case.status, reply.body
    received = _upstream_raw_path(reply)
    assert received == case.upstream_path
    body = reply.json()
    if case.by_envoy:
        # Envoy's own local reply: no ztauthz decision, no decision id.
        assert body is None
        assert "x-auth-decision-id" not in reply.headers
    elif case.reason is not None:
        assert body["reason"] == case.reason
    if received is not None:
        # The decision log records the path without its query (queries may carry secrets).
        decision_id = body["headers"]["x-auth-decision-id"]
        assert _authorized_path(stack, decision_id) == received.partition("?")[0]


@pytest.mark.parametrize(
    "path", ["//invoices/42", "/public/../invoices/42", "/invoices/./42", "/invoices/42/"]
)
def test_deny_rules_hold_on_unnormalized_paths(stack: Stack, token: Mint, path: str) -> None:
    bearer = token(groups=["finance", "contractors"])
    reply = http_request(stack.ports.envoy, "DELETE", path, {"Authorization": f"Bearer {bearer}"})
    assert reply.status == 403
    assert reply.json()["reason"] == "denied_by_rule"
