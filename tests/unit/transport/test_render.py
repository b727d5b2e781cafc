"""Rendering decisions into Envoy's HTTP ext_authz answers."""

from __future__ import annotations

import json
from types import MappingProxyType

import pytest

from app.decision import Decision
from app.evidence.model import Device, Evidence, Location, Workload
from app.identity.principal import Principal
from app.reasons import Reason
from app.settings import Response
from app.transport.render import IDENTITY_HEADERS, header_value, render

SETTINGS = Response()


def principal(**overrides: object) -> Principal:
    values: dict[str, object] = {
        "issuer": "https://idp.example.com",
        "subject": "alice",
        "groups": frozenset({"finance", "auditors"}),
        "scopes": frozenset({"invoices:read"}),
        "audience": ("https://api.example.com",),
        "expires_at": 2_000_000_000,
        "issued_at": 1_999_999_000,
        "claims": MappingProxyType({}),
        "client_id": "web",
    }
    values.update(overrides)
    return Principal(**values)  # type: ignore[arg-type]


def test_allow_sets_identity_headers_and_removes_none_it_sets() -> None:
    evidence = Evidence(
        device=Device("dev-1", "device_token"),
        location=Location(client_ip="203.0.113.9", country="DE"),
        workload=Workload("spiffe://example.org/ns/a/sa/b", "example.org", "peer"),
    )
    decision = Decision(
        True, Reason.ALLOWED, "d1", "sha256:v", "read", "p", principal(), evidence=evidence
    )
    out = render(decision, SETTINGS)
    assert out.status == 200
    assert out.headers["x-auth-subject"] == "alice"
    assert out.headers["x-auth-issuer"] == "https://idp.example.com"
    assert out.headers["x-auth-groups"] == "auditors,finance"
    assert out.headers["x-auth-scopes"] == "invoices:read"
    assert out.headers["x-auth-decision-id"] == "d1"
    assert out.headers["x-auth-device-id"] == "dev-1"
    assert out.headers["x-auth-country"] == "DE"
    assert out.headers["x-auth-workload"] == "spiffe://example.org/ns/a/sa/b"
    # Every identity header is set; the signed assertion is off here, so Envoy drops a
    # client's header of that name.
    assert out.headers_to_remove == ("x-auth-assertion",)


def test_anonymous_allow_asks_envoy_to_remove_every_identity_header_it_does_not_set() -> None:
    decision = Decision(True, Reason.ALLOWED_ANONYMOUS, "d2", "sha256:v", "public", "p")
    out = render(decision, SETTINGS)
    removed = set(out.headers_to_remove)
    assert "x-auth-subject" in removed and "x-auth-groups" in removed
    assert removed | set(out.headers) >= set(IDENTITY_HEADERS)
    assert not removed & set(out.headers)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("alice", "alice"),
        ("evil\r\nx-auth-subject: root", "evil%0D%0Ax-auth-subject: root"),
        ("a,b", "a%2Cb"),
        ("100%", "100%25"),
        ("jürgen", "j%C3%BCrgen"),
        ("\ud800", "%ED%A0%80"),  # a lone surrogate: encoded, never an exception
        ("a\udfffb", "a%ED%BF%BFb"),
    ],
)
def test_header_values_cannot_inject_or_split(value: str, expected: str) -> None:
    assert header_value(value) == expected


def test_missing_token_challenge_has_no_error_code() -> None:
    out = render(Decision(False, Reason.TOKEN_MISSING, "d3", "v"), SETTINGS)
    assert out.status == 401
    assert out.headers["www-authenticate"] == 'Bearer realm="ztauthz"'
    assert json.loads(out.body) == {
        "decision": "deny",
        "reason": "token_missing",
        "decision_id": "d3",
    }


@pytest.mark.parametrize(
    "reason",
    [
        r
        for r in Reason
        if r.value.startswith("token_")
        and r is not Reason.TOKEN_MISSING
        and r is not Reason.TOKEN_BOUND_AS_BEARER  # a DPoP challenge: test_render_dpop.py
    ],
)
def test_invalid_token_challenge_follows_rfc6750(reason: Reason) -> None:
    out = render(Decision(False, reason, "d4", "v"), SETTINGS)
    assert out.status == 401
    challenge = out.headers["www-authenticate"]
    assert challenge.startswith(
        'Bearer realm="ztauthz", error="invalid_token", error_description="'
    )
    assert '"' not in challenge.split('error_description="', 1)[1][:-1]


def test_policy_denial_is_403_json_without_internal_detail_by_default() -> None:
    out = render(Decision(False, Reason.DENIED_BY_RULE, "d5", "v", "no-delete", "p"), SETTINGS)
    assert out.status == 403
    assert json.loads(out.body) == {
        "decision": "deny",
        "reason": "denied_by_rule",
        "decision_id": "d5",
    }
    assert "www-authenticate" not in out.headers


def test_rule_is_disclosed_only_when_configured() -> None:
    out = render(
        Decision(False, Reason.DENIED_BY_RULE, "d6", "v", "no-delete", "p"),
        Response(include_rule=True),
    )
    assert json.loads(out.body)["rule"] == "no-delete"


@pytest.mark.parametrize(
    ("reason", "status"),
    [(Reason.PATH_REJECTED, 400), (Reason.KEYS_UNAVAILABLE, 503), (Reason.INTERNAL_ERROR, 503)],
)
def test_non_policy_denials_have_their_status(reason: Reason, status: int) -> None:
    assert render(Decision(False, reason, "d", "v"), SETTINGS).status == status
